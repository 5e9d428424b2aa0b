"""The AMP-FL ClientApp: Flower glue around :class:`SubModelTrainer` (NumPy in, NumPy out).

One process (a Ray actor in simulation, ``flwr-clientapp`` on a board) may serve many nodes, so
datasets, partitions and region maps are cached per process, keyed by what defines them.
Everything a client needs arrives in the server's messages (:mod:`amp_fl.protocol`); its identity
is the node config's ``partition-id``. A board can report measured hardware with the
``--node-config`` keys of :data:`amp_fl.protocol.PROFILE_KEYS`.

Durable per-device state lives in Flower's ``context.state`` (kept across rounds for the same
node, in simulation and deployment): the gradient cache G_k of memory-friendly AMP-FL
(Algorithm 3) and APFL's personal model v_k. The local objective (SGD, FedProx, APFL) is the
trainer's (:mod:`amp_fl.client.objectives`); the ``evaluate`` handler scores the device's
personalised model on its own label distribution (:mod:`amp_fl.client.personal`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from amp_fl import protocol as P
from amp_fl.client.batched import BATCHED_OBJECTIVES, ClientJob, fit_batched
from amp_fl.client.device import resolve_device
from amp_fl.client.failures import InjectedFailure, corrupted, injected_failure
from amp_fl.client.local import batch_rng, local_data, model_info, train_settings
from amp_fl.client.objectives import mix_arrays
from amp_fl.client.personal import evaluate_on_label_distribution, label_frequencies
from amp_fl.client.profile import resolve_profile_reply
from amp_fl.client.settings import MixingWeight, TrainSettings
from amp_fl.client.sparse_fedavg import train_masked
from amp_fl.client.trainer import FitResult, ModelEvaluator, ModelInfo, SubModelTrainer
from amp_fl.data.datasets import ArraySplit, load_dataset
from amp_fl.models import model_spec
from amp_fl.protocol.setup import TrainDevice
from amp_fl.protocol.sparse_fedavg import MASKED_ACTION
from amp_fl.pruning.maps import region_map
from amp_fl.pruning.regions import KeptIndices, RegionMap
from amp_fl.pruning.submodel import build_submodel, extract_arrays, scatter_arrays

app = ClientApp()
# Sparse FedAvg's handler (amp_fl.client.sparse_fedavg): Flower routes the strategy's ``train.masked`` messages to it.
app.train(MASKED_ACTION)(train_masked)


@app.query()
def report_profile(msg: Message, context: Context) -> Message:
    """Tell the server who this node is and what it can do: reported or measured on a board, else simulated.

    The node config may report the compute and radio parts, ask for a throughput benchmark on
    the run's model (``measure-compute=true``) and give an uplink rate; what it leaves out is
    simulated from the seed (:func:`amp_fl.client.profile.resolve_profile_reply`).
    """
    query = P.ProfileQuery.from_content(msg.content)
    return resolve_profile_reply(context.node_config, query).to_reply(msg)


@dataclass(frozen=True, eq=False)  # holds arrays
class _TrainJob:
    """One train message made ready to train: everything :meth:`SubModelTrainer.fit` needs, and the reply's context."""

    msg: Message
    context: Context
    instruction: P.TrainInstruction
    failure: str | None
    info: ModelInfo
    regions: RegionMap
    arrays: list[np.ndarray]
    kept: KeptIndices
    settings: TrainSettings
    personal: list[np.ndarray] | None
    rng: np.random.Generator
    data: ArraySplit


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Rebuild the sub-model, train it, return its cumulative gradient (or ``g - G_k``)."""
    torch.set_num_threads(1)  # one actor per core; more threads would oversubscribe and slow both
    return _fit_one(_prepare(msg, context))


def _fit_one(job: _TrainJob) -> Message:
    started = time.perf_counter()
    trainer = SubModelTrainer(job.data, job.info, job.regions)
    result = trainer.fit(job.arrays, job.kept, job.settings, job.rng, job.personal)
    return _reply(job, result, time.perf_counter() - started)


def train_batch(calls: Sequence[tuple[Message, Context]]) -> list[tuple[Message | Exception, float]]:
    """The in-process engine's ``train.batched_clients``: a round's train messages in one batched pass.

    Each message gets the reply :func:`train` would give (within float tolerance: see
    :mod:`amp_fl.client.batched`) or the exception its handling raised, with the seconds it took
    as if the clients had run side by side: its share of the pass plus its own reading and
    replying (an injected late reply sleeps there). APFL, or messages whose settings differ, train
    one by one. Each reply's ``fit_seconds`` is its share of the pass.
    """
    torch.set_num_threads(1)
    outcomes: dict[int, tuple[Message | Exception, float]] = {}
    jobs: list[tuple[int, _TrainJob, float]] = []
    for i, (msg, context) in enumerate(calls):
        started = time.perf_counter()
        try:
            jobs.append((i, _prepare(msg, context), time.perf_counter() - started))
        except Exception as exc:  # the grid turns it into an error reply, as for train()
            outcomes[i] = exc, time.perf_counter() - started
    first = jobs[0][1] if jobs else None
    if (
        first is not None
        and first.settings.objective in BATCHED_OBJECTIVES
        and all(job.settings == first.settings and job.info == first.info for _, job, _ in jobs)
    ):
        started = time.perf_counter()
        try:
            results: list[FitResult] | Exception = fit_batched(
                first.info,
                first.regions,
                [ClientJob(j.data, j.arrays, j.kept, j.rng) for _, j, _ in jobs],
                first.settings,
            )
        except Exception as exc:  # e.g. train.device names an accelerator this process lacks: every client fails
            results = exc
        share = (time.perf_counter() - started) / len(jobs)
        for k, (i, job, read_s) in enumerate(jobs):
            if isinstance(results, Exception):
                outcomes[i] = results, read_s + share
            else:
                reply, reply_s = _timed(partial(_reply, job, results[k], share))
                outcomes[i] = reply, read_s + share + reply_s
    else:
        for i, job, read_s in jobs:
            reply, fit_s = _timed(partial(_fit_one, job))
            outcomes[i] = reply, read_s + fit_s
    return [outcomes[i] for i in range(len(calls))]


def _timed(reply: Callable[[], Message]) -> tuple[Message | Exception, float]:
    """``reply()`` (or the exception it raised) and the seconds it took."""
    started = time.perf_counter()
    try:
        outcome: Message | Exception = reply()
    except Exception as exc:
        outcome = exc
    return outcome, time.perf_counter() - started


def _prepare(msg: Message, context: Context) -> _TrainJob:
    """Read and check a train message; raises for an injected ``raise`` failure."""
    instruction = P.TrainInstruction.from_content(msg.content)
    device = P.partition_id(context.node_config)
    if instruction.device != device:
        raise ValueError(f"train instruction for device {instruction.device} delivered to partition-id {device}")
    setup = instruction.setup
    failure = injected_failure(setup.failures, setup.seed, instruction.round, device)  # None in a normal run
    if failure == "raise":
        raise InjectedFailure(f"injected failure: device {device} raises in round {instruction.round}")
    info = model_info(setup)
    regions = region_map(info.name, info.input_shape, info.num_classes)
    arrays, kept = instruction.for_model(regions)
    settings = train_settings(setup)
    personal = None
    if settings.objective == "apfl":
        if any(k.size != g.size for k, g in zip(kept, regions.groups, strict=True)):
            raise ValueError("train instruction: the apfl objective trains the full model, got a pruned sub-model")
        stored = _personal_model(context, regions)
        personal = stored if stored is not None else [a.copy() for a in arrays]  # v_k starts at the first w
        if setup.apfl_alpha_lr > 0:  # Deng et al.'s adaptive alpha: this device's, from its state
            settings = replace(settings, alpha=MixingWeight(_personal_alpha(context, setup), setup.apfl_alpha_lr))
    rng = batch_rng(setup, device, instruction.round)
    return _TrainJob(
        msg,
        context,
        instruction,
        failure,
        info,
        regions,
        arrays,
        kept,
        settings,
        personal,
        rng,
        local_data(setup, device),
    )


def _reply(job: _TrainJob, result: FitResult, fit_s: float) -> Message:
    """Store the device's state (APFL's v_k, Algorithm 3's G_k), apply injected failures, build the reply."""
    context, regions, setup = job.context, job.regions, job.instruction.setup
    if result.personal is not None:
        context.state.array_records[P.STATE_PERSONAL] = P.arrays_to_record(regions.param_names, result.personal)
    if isinstance(job.settings.alpha, MixingWeight):  # the adapted alpha_k, beside v_k
        context.state.config_records[P.STATE_ALPHA] = ConfigRecord({"alpha": job.settings.alpha.value})
    gradient = result.gradient
    if setup.memory_friendly:
        gradient = _difference_to_own_cache(context, regions, job.kept, gradient)
    if job.failure == "corrupt":
        gradient = corrupted(list(gradient))
    elif job.failure == "late":
        time.sleep(setup.failures.late_delay_s)  # past the server's reply timeout: the reply misses the round
    reply = P.TrainReply(
        device=job.instruction.device,
        names=tuple(regions.param_names),
        gradient=tuple(gradient),
        num_examples=result.num_examples,
        train_loss=result.train_loss,
        fit_seconds=fit_s,
        round=job.instruction.round,
    )
    return reply.to_reply(job.msg)


@app.evaluate()
def evaluate_personal(msg: Message, context: Context) -> Message:
    """Score this device's personalised model on test samples of its own labels, weighted as it holds them.

    APFL's personalised model is ``alpha v_k + (1 - alpha) w``; before the device first trains,
    and for the other objectives, it is the global model ``w`` itself.
    """
    torch.set_num_threads(1)
    instruction = P.EvaluateInstruction.from_content(msg.content)
    device = P.partition_id(context.node_config)
    if instruction.device != device:
        raise ValueError(f"evaluate instruction for device {instruction.device} delivered to partition-id {device}")
    setup = instruction.setup
    info = model_info(setup)
    regions = region_map(info.name, info.input_shape, info.num_classes)
    model_arrays = instruction.for_model(regions)
    personal = _personal_model(context, regions) if setup.local_objective == "apfl" else None
    if personal is not None:
        trainable = [rule.is_parameter for rule in regions.arrays]
        model_arrays = mix_arrays(personal, model_arrays, _personal_alpha(context, setup), trainable)
    weights = label_frequencies(local_data(setup, device).labels, setup.num_classes)
    test = load_dataset(setup.dataset, setup.data_root, download=False).test
    evaluator = _personal_evaluator(info, instruction.batch_size, setup.device)
    score = evaluate_on_label_distribution(evaluator, model_arrays, test, weights)
    reply = P.EvaluateReply(
        device=device,
        accuracy=score.accuracy,
        loss=score.loss,
        num_examples=score.num_samples,
        personalised=personal is not None,
    )
    return reply.to_reply(msg)


@lru_cache(maxsize=4)
def _personal_evaluator(info: ModelInfo, batch_size: int, device: TrainDevice) -> ModelEvaluator:
    """One evaluator per process and model: its module is built once and loaded in place per device.

    A process scores every device it serves (APFL: 100 personalised models per evaluation round);
    the test set is laid out in the model's format once, as the central evaluation's is.
    """
    regions = region_map(info.name, info.input_shape, info.num_classes)
    model = build_submodel(info.name, info.input_shape, info.num_classes, regions, regions.full_kept())
    layout = model_spec(info.name).train_memory_format
    return ModelEvaluator(model, batch_size, resolve_device(device), layout)


def _personal_model(context: Context, regions: RegionMap) -> list[np.ndarray] | None:
    """APFL's personal model v_k from ``context.state`` (full-model shaped), or ``None`` before its first round."""
    if P.STATE_PERSONAL not in context.state.array_records:
        return None
    return P.record_to_arrays(context.state.array_records[P.STATE_PERSONAL], regions.param_names)


def _personal_alpha(context: Context, setup: P.TrainSetup) -> float:
    """APFL's alpha_k: the adapted one in ``context.state`` (adaptive, once trained), else the configured one."""
    record = context.state.config_records.get(P.STATE_ALPHA)
    return float(record["alpha"]) if record is not None else float(setup.apfl_alpha)  # type: ignore[arg-type]


def _difference_to_own_cache(
    context: Context, regions: RegionMap, kept: KeptIndices, gradient: list[np.ndarray]
) -> list[np.ndarray]:
    """Algorithm 3, device side: upload ``g - G_k`` on the held entries and set ``G_k <- g`` there.

    G_k lives in ``context.state`` (full-model shaped), so the server needs no per-device cache.
    Buffers are no gradients (:func:`~amp_fl.client.trainer.upload_of`): they go up as they are.
    """
    names = regions.param_names
    if P.STATE_CACHE in context.state.array_records:
        cache = P.record_to_arrays(context.state.array_records[P.STATE_CACHE], names)
    else:
        cache = [np.zeros(shape, dtype=np.float32) for shape in regions.shapes]
    cached_sub = extract_arrays(cache, regions, kept)
    trainable = [rule.is_parameter for rule in regions.arrays]
    difference = [
        (g - c).astype(np.float32) if is_parameter else g
        for g, c, is_parameter in zip(gradient, cached_sub, trainable, strict=True)
    ]
    full, held = scatter_arrays(gradient, regions, kept, regions.shapes)
    for c, f, h, is_parameter in zip(cache, full, held, trainable, strict=True):
        if is_parameter:
            c[h] = f[h]
    context.state.array_records[P.STATE_CACHE] = P.arrays_to_record(names, cache)
    return difference


__all__ = ["app", "train_batch"]
