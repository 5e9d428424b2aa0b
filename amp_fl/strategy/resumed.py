"""Continue a strategy from round ``t + 1`` with Flower's own round loop.

Flower's ``Strategy.start`` always counts rounds from 1 and evaluates the initial model as round
0. A resumed run must instead run rounds ``t + 1 .. T`` and must not write round 0 again. Rather
than re-implementing the loop, :class:`ResumedRounds` wraps the strategy and shifts the round
numbers by ``t``: Flower runs its loop for ``T - t`` rounds, and every hook the wrapped strategy
sees (and the ``evaluate_fn`` it was given) receives the real round number. Flower's own log
counts the continued rounds from 1 (``[ROUND 1/T-t]``); the run's metrics use the real numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy


class ResumedRounds(Strategy):
    """``inner`` with round numbers shifted by ``completed`` (the rounds a checkpoint already holds)."""

    def __init__(self, inner: Strategy, completed: int) -> None:
        if completed < 0:
            raise ValueError(f"completed: must be >= 0, got {completed}")
        self.inner = inner
        self.completed = completed

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_train(server_round + self.completed, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        return self.inner.aggregate_train(server_round + self.completed, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round + self.completed, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round + self.completed, replies)

    def summary(self) -> None:
        self.inner.summary()

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run the rounds after ``completed`` up to ``num_rounds`` (the run's total), real numbers in every hook."""
        shifted = None
        if evaluate_fn is not None:
            evaluate = evaluate_fn

            def shifted(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
                # Flower's round 0 is the model the checkpoint holds, already evaluated and written.
                return None if server_round == 0 else evaluate(server_round + self.completed, arrays)

        return super().start(
            grid, initial_arrays, num_rounds - self.completed, timeout, train_config, evaluate_config, shifted
        )
