"""A plain in-process loop: the same ServerApp and ClientApp code, no SuperLink, no Ray, no network.

:class:`InProcessGrid` implements Flower's ``Grid`` by calling the ClientApp directly, one node
after another, with one ``Context`` per node (so ``context.state`` persists across rounds as it
does on a SuperNode). It is the reference against which ``amp_fl.bench simulation`` measures
Flower's simulation overhead, and lets unit tests exercise the strategy quickly. Users run the
real engines (``python -m amp_fl``, ``flwr run``); this is not a replacement for them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from amp_fl import protocol as P
from amp_fl.config import RunConfig
from amp_fl.launch.launcher import write_run_config
from amp_fl.launch.preflight import preflight
from amp_fl.server.runner import run_server

# Train messages with their contexts in, each one's reply (or exception) and seconds out.
BatchedTrain = Callable[[Sequence[tuple[Message, Context]]], list[tuple[Message | Exception, float]]]

SERVER_NODE_ID = 1
FIRST_NODE_ID = 1_000


class InProcessGrid(Grid):
    """Delivers every message to the ClientApp in this process and returns the replies in order."""

    def __init__(
        self, client_app: ClientApp, num_nodes: int, run_id: int = 1, train_batch: BatchedTrain | None = None
    ) -> None:
        self.client_app = client_app
        # train.batched_clients: a round's train messages go to this handler together (amp_fl.client.app.train_batch).
        self.train_batch = train_batch
        self.contexts = {
            FIRST_NODE_ID + k: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + k,
                node_config=dict(P.simulation_node_config(k, num_nodes)),
                state=RecordDict(),
                run_config={},
            )
            for k in range(num_nodes)
        }
        self._run: Run | None = None
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count()
        self._durations: dict[str, float] = {}
        # Messages built outside a Flower process need a task identity.
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, run_id, SERVER_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run  # type: ignore[return-value]

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        batched = [m for m in messages if self.train_batch is not None and m.metadata.message_type == MessageType.TRAIN]
        ids = []
        outcomes = dict(zip(map(id, batched), self._call_batch(batched), strict=True)) if batched else {}
        for message in messages:
            msg_id = str(next(self._ids))
            if id(message) in outcomes:
                self._replies[msg_id], self._durations[msg_id] = outcomes[id(message)]
            else:
                started = time.perf_counter()
                self._replies[msg_id] = self._call(message)
                self._durations[msg_id] = time.perf_counter() - started
            ids.append(msg_id)
        return ids

    def _call_batch(self, messages: list[Message]) -> list[tuple[Message, float]]:
        """The batched handler's replies and each one's seconds; exceptions become error replies."""
        assert self.train_batch is not None
        calls = [(m, self.contexts[m.metadata.dst_node_id]) for m in messages]
        outcomes = self.train_batch(calls)
        return [
            (reply if isinstance(reply, Message) else _error_reply(reply, message), seconds)
            for message, (reply, seconds) in zip(messages, outcomes, strict=True)
        ]

    def _call(self, message: Message) -> Message:
        """The ClientApp's reply; an exception becomes an error reply, as Flower's engines make it."""
        try:
            return self.client_app(message, self.contexts[message.metadata.dst_node_id])
        except Exception as exc:
            return _error_reply(exc, message)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """The replies, less those whose ClientApp call took longer than ``timeout`` seconds.

        Nodes run one after another here; each call is timed on its own, as if the nodes had run
        in parallel, so one slow node does not make the others late.
        """
        ids = list(self.push_messages(messages))
        durations = {i: self._durations.pop(i) for i in ids}
        if timeout is not None:
            for i in ids:
                if durations[i] > timeout:
                    self._replies.pop(i, None)
        return self.pull_messages(ids)


def _error_reply(exc: Exception, message: Message) -> Message:
    reason = f"{type(exc)}:<'{exc}'>"  # Flower's format (simulation engine, vce_api)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


def run_in_process(cfg: RunConfig, run_dir: Path) -> Path:
    """Run ``cfg`` with the in-process grid; writes the same outputs as a Flower run."""
    from amp_fl.client.app import app as client_app
    from amp_fl.client.app import train_batch

    cfg.validate()
    config_file = write_run_config(cfg, run_dir.resolve(), preflight(cfg, batched=cfg.train.batched_clients))
    run_config: dict[str, Any] = {"config-file": str(config_file)}
    # train.batched_clients: equal to one-by-one within float tolerance only (amp_fl.client.batched).
    batch = train_batch if cfg.train.batched_clients else None
    return run_server(InProcessGrid(client_app, cfg.num_devices, train_batch=batch), run_config)
