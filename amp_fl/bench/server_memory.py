"""Benchmark: the server's memory over a long run (300 rounds, 100 PIUs), checkpoints included.

The ServerApp body (:func:`amp_fl.server.runner.run_server`: strategy, AoI table, gradient
cache of all 100 devices, recorder, metrics, a checkpoint every round) runs in this process with
the in-process grid. The devices answer with stand-in updates (their sub-model's own arrays,
scaled: the shapes and bytes of real replies, without the training), so the process's memory is
the server's, and 300 rounds take minutes instead of an hour of local training; the device
profiles and the central evaluation are the real ones. A sampler thread reads the process's
resident memory (VmRSS) as the rounds go.

One JSON line: RSS at a few rounds (from ``--settle`` on, by when every device's cache is
allocated: the cache fills as devices are first scheduled), at the end (after the summary and
figures) and at its peak; the growth from round ``--settle`` to the last round; the checkpoint's
size; and whether the growth and the peak stay within the documented bounds
(:data:`GROWTH_BOUND_MIB`, :data:`PEAK_BOUND_MIB`).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.bench import emit
from amp_fl.bench.simulation import bench_config
from amp_fl.client import app as client_app
from amp_fl.launch.inprocess import InProcessGrid
from amp_fl.launch.launcher import write_run_config
from amp_fl.launch.preflight import preflight
from amp_fl.run_folder import CHECKPOINT_FILE, METRICS_FILE
from amp_fl.server.runner import run_server

MIB = 1024 * 1024
# Documented bounds for 100 PIUs and the paper's CNN (docs/benchmarks.md, "Server memory over a long
# run"): the server's memory must not grow with the number of rounds (the cache holds one gradient
# per device, the metrics one row per round), and the whole process (torch, the data set, the
# strategy) stays small.
GROWTH_BOUND_MIB = 64
PEAK_BOUND_MIB = 1536


def stand_in_devices() -> ClientApp:
    """The real ClientApp's profile query and evaluation; training replaced by a scaled copy of the sub-model."""
    app = ClientApp()
    app.query()(client_app.report_profile)
    app.evaluate()(client_app.evaluate_personal)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        instruction = P.TrainInstruction.from_content(msg.content)
        gradient = tuple(np.asarray(a * np.float32(0.01), dtype=np.float32) for a in instruction.arrays)
        reply = P.TrainReply(
            device=instruction.device,
            names=instruction.names,
            gradient=gradient,
            num_examples=1,
            train_loss=1.0,
            fit_seconds=0.0,
            round=instruction.round,
        )
        return reply.to_reply(msg)

    return app


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """Samples this process's RSS every ``period_s``, with the number of metrics rows written so far."""

    def __init__(self, metrics: Path, period_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.metrics, self.period_s = metrics, period_s
        self.samples: list[tuple[int, int]] = []  # (rows written, RSS KiB)
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                rows = max(0, len(self.metrics.read_text().splitlines()) - 2)  # header, round 0
            except OSError:
                rows = 0
            self.samples.append((rows, _rss_kib()))
            self._done.wait(self.period_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench server_memory")
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--rbs", type=int, default=10)
    parser.add_argument("--settle", type=int, default=30, help="rounds before the growth is measured")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's per-round records would drown the JSON line
    # every round, whatever the default interval: the bound covers capturing and writing each one
    cfg = bench_config(args.rounds, args.devices, args.rbs, args.seed, checkpoint={"every": 1, "every_s": 0.0})
    with tempfile.TemporaryDirectory(prefix="amp_fl_server_memory_") as tmp:
        run_dir = Path(tmp)
        config_file = write_run_config(cfg, run_dir, preflight(cfg))
        sampler = RssSampler(run_dir / METRICS_FILE)
        started = time.perf_counter()
        sampler.start()
        try:
            run_server(InProcessGrid(stand_in_devices(), cfg.num_devices), {"config-file": str(config_file)})
        finally:
            sampler.stop()
        seconds = time.perf_counter() - started
        checkpoint_mib = (run_dir / CHECKPOINT_FILE).stat().st_size / MIB
    end = sampler.samples[-1][1] / 1024  # after the summary and figures
    peak = max(rss for _, rss in sampler.samples) / 1024
    marks = sorted({args.settle, *(round(args.rounds * f) for f in (0.25, 0.5, 0.75)), args.rounds})
    by_round = {m: next((rss / 1024 for rows, rss in sampler.samples if rows >= m), None) for m in marks}
    # Growth with the number of rounds: RSS when the last round's row is written minus RSS at --settle.
    at_settle, at_last = by_round[args.settle], by_round[args.rounds]
    growth = at_last - at_settle if at_settle is not None and at_last is not None else float("nan")
    emit(
        {
            "bench": "server_memory",
            "devices": args.devices,
            "rounds": args.rounds,
            "rbs": args.rbs,
            "clients": "stand-in (no training)",
            "checkpoint_every": cfg.checkpoint.every,
            "rss_mib_after_settle": None if at_settle is None else round(at_settle, 1),
            "settle_rounds": args.settle,
            "rss_mib_end": round(end, 1),
            "rss_mib_peak": round(peak, 1),
            "growth_mib_after_settle": round(growth, 1),
            "rss_mib_by_round": {str(m): None if v is None else round(v, 1) for m, v in by_round.items()},
            "growth_bound_mib": GROWTH_BOUND_MIB,
            "peak_bound_mib": PEAK_BOUND_MIB,
            "within_bounds": bool(growth <= GROWTH_BOUND_MIB and peak <= PEAK_BOUND_MIB),
            "checkpoint_mib": round(checkpoint_mib, 2),
            "seconds": round(seconds, 1),
            "seconds_per_round": round(seconds / args.rounds, 4),
        }
    )
