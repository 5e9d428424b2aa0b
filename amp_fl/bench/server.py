"""Benchmark: where an in-process speedup-preset round's wall time goes, and the server's share of it.

``python -m amp_fl.bench server [--rounds N] [--warmup W] [--dataset NAME] [--seed S]``

The run: ``experiment=speedup method=amp_fl_tuned`` (Fashion-MNIST, 100 PIUs, 10 RBs, the paper's
CNN, staleness-discounted compensation, evaluation on the preset's 0.25 s grid of the simulated
clock, checkpoints at the default interval: at most one per 5 s of wall-clock time; ``--set
checkpoint.every_s=0`` for one every round), ``num_rounds=N``, through the real ServerApp and ClientApp code
on the in-process grid (:func:`amp_fl.launch.inprocess.run_in_process`), one torch thread.
``--dataset mnist5k`` runs offline where Fashion-MNIST is not installed.

Each round's wall time (from the end of one round's central-evaluation hook to the end of the
next) is split by timing, in this process and without touching the code measured:

- ``client``: the ClientApp calls (decode, local training, encode: what a PIU does);
- ``evaluation``: the server's central evaluation (test and validation sets), when it runs;
- ``server``: the rest (scheduling, pruning, sending, aggregation, the global step, the metrics
  row, the checkpoint, Flower's round loop); ``flower``: 0 in process (no SuperLink, no Ray).

Output: one JSON line with the per-round means and medians over the rounds after ``--warmup``,
the server's parts (``configure_train``, ``aggregate_train``, checkpoint hook), the server
share ``server / (round - evaluation)`` against the goal of 5 %, and the round with evaluation
out of the way against the naive plain-torch loop doing the same client work on the full model
(:func:`amp_fl.bench.engine.naive_round`, timed ``--naive-repeats`` times before and as many
after the run, in this process): ``round_over_naive`` = mean (round - evaluation) / median
naive, against the goal of 0.5.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from amp_fl.bench import emit
from amp_fl.bench.engine import SAMPLES_PER_DEVICE, naive_round, speedup_round
from amp_fl.client import trainer
from amp_fl.config import load_config
from amp_fl.experiments.campaign import compose_values
from amp_fl.launch import inprocess
from amp_fl.server import checkpoint, recorder
from amp_fl.strategy import amp_fl

GOAL_MAX_SERVER_SHARE = 0.05
GOAL_MAX_ROUND_OVER_NAIVE = 0.5


class Timings:
    """Durations of the timed calls, each with the time it ended, and the end of every round."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[float, float]]] = {}  # name -> [(end, seconds)]
        self.round_ends: dict[int, float] = {}

    def wrap(self, owner: Any, attribute: str, name: str) -> Callable[[], None]:
        """Time every call of ``owner.attribute`` under ``name``; returns the undo."""
        original = getattr(owner, attribute)
        calls = self.calls.setdefault(name, [])

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                end = time.perf_counter()
                calls.append((end, end - started))

        setattr(owner, attribute, timed)
        return lambda: setattr(owner, attribute, original)

    def mark_rounds(self) -> Callable[[], None]:
        """Note when the recorder's hook (the last thing of a round) returns."""
        original = recorder.Recorder.__call__
        ends = self.round_ends

        def call(self_: recorder.Recorder, server_round: int, arrays: Any) -> Any:
            try:
                return original(self_, server_round, arrays)
            finally:
                ends[server_round] = time.perf_counter()

        recorder.Recorder.__call__ = call  # type: ignore[method-assign,assignment]
        return lambda: setattr(recorder.Recorder, "__call__", original)

    def in_round(self, name: str, server_round: int) -> float:
        start, end = self.round_ends[server_round - 1], self.round_ends[server_round]
        return sum(s for t, s in self.calls.get(name, []) if start < t <= end)


def run(rounds: int, dataset: str, seed: int, extra: list[str]) -> Timings:
    overrides = ["experiment=speedup", "method=amp_fl_tuned", f"num_rounds={rounds}", f"seed={seed}", *extra]
    values = compose_values(overrides)
    values["dataset"]["name"] = dataset
    timings = Timings()
    undo = [
        timings.mark_rounds(),
        timings.wrap(inprocess.InProcessGrid, "_call", "client"),
        timings.wrap(inprocess.InProcessGrid, "_call_batch", "client"),  # train.batched_clients=true
        timings.wrap(trainer.ModelEvaluator, "__call__", "evaluation"),
        timings.wrap(amp_fl.AmpFlStrategy, "configure_train", "configure_train"),
        timings.wrap(amp_fl.AmpFlStrategy, "aggregate_train", "aggregate_train"),
        timings.wrap(checkpoint.Checkpointer, "__call__", "checkpoint"),
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="amp_fl_bench_server_") as tmp:
            values["output_dir"] = tmp
            inprocess.run_in_process(load_config(values), Path(tmp))
    finally:
        for step in reversed(undo):
            step()
    return timings


def naive_seconds(seed: int, repeats: int) -> list[float]:
    """Wall seconds of the naive full-model loop over the speedup preset's scheduled devices (after a warm-up)."""
    settings, _, global_arrays, devices = speedup_round(seed, SAMPLES_PER_DEVICE)
    naive_round(global_arrays, devices, settings, seed)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        naive_round(global_arrays, devices, settings, seed)
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m amp_fl.bench server", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=4, help="first rounds left out (allocations, caches)")
    parser.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (the preset's) or mnist5k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another Hydra override")
    parser.add_argument("--naive-repeats", type=int, default=3, help="naive-loop timings before and after the run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    naive = naive_seconds(args.seed, args.naive_repeats)
    timings = run(args.rounds, args.dataset, args.seed, args.set)
    naive += naive_seconds(args.seed, args.naive_repeats)
    measured = range(args.warmup + 1, args.rounds + 1)
    per_round: dict[str, list[float]] = {"round": [], "client": [], "evaluation": [], "server": []}
    parts = ("configure_train", "aggregate_train", "checkpoint")
    server_parts: dict[str, list[float]] = {name: [] for name in parts}
    for r in measured:
        wall = timings.round_ends[r] - timings.round_ends[r - 1]
        client, evaluation = timings.in_round("client", r), timings.in_round("evaluation", r)
        for name, value in (("round", wall), ("client", client), ("evaluation", evaluation)):
            per_round[name].append(value)
        per_round["server"].append(wall - client - evaluation)
        for name in parts:
            server_parts[name].append(timings.in_round(name, r))
    mean = {name: statistics.fmean(values) for name, values in per_round.items()}
    share = mean["server"] / (mean["round"] - mean["evaluation"])
    round_over_naive = (mean["round"] - mean["evaluation"]) / statistics.median(naive)
    columns = zip(per_round["server"], per_round["round"], per_round["evaluation"], strict=True)
    shares = [s / (w - e) for s, w, e in columns]
    emit(
        {
            "bench": "server",
            "preset": " ".join(["experiment=speedup method=amp_fl_tuned", *args.set]),
            "dataset": args.dataset,
            "engine": "in-process",
            "rounds_measured": len(measured),
            **{f"{name}_s_mean": value for name, value in mean.items()},
            "flower_s_mean": 0.0,
            **{f"{name}_s_median": statistics.median(values) for name, values in per_round.items()},
            "evaluated_rounds": sum(1 for e in per_round["evaluation"] if e > 0),
            **{f"server_{name}_s_mean": statistics.fmean(values) for name, values in server_parts.items()},
            "server_other_s_mean": mean["server"] - sum(statistics.fmean(v) for v in server_parts.values()),
            "server_share": share,
            "server_share_median": statistics.median(shares),
            "goal_server_share_le_0_05": share <= GOAL_MAX_SERVER_SHARE,
            "naive_s_median": statistics.median(naive),
            "round_over_naive": round_over_naive,
            "goal_round_over_naive_le_0_5": round_over_naive <= GOAL_MAX_ROUND_OVER_NAIVE,
            "cpu_count": os.cpu_count(),
            "loadavg_1m": os.getloadavg()[0],
        }
    )
