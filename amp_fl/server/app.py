"""The AMP-FL ServerApp (Flower Message API). All the work happens in ``amp_fl.server.runner.run_server``."""

from __future__ import annotations

import logging

# First, before the heavy imports below: in a local simulation's process the engine builds its
# Ray actors while this module loads, and its message scan must be replaced before it starts.
from amp_fl.server import engine_wakeup

WAKEUP_INSTALLED = engine_wakeup.install()

from flwr.app import Context  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.superlink.grid import InMemoryGrid  # noqa: E402

from amp_fl.server.runner import run_server  # noqa: E402

app = ServerApp()
log = logging.getLogger("flwr")  # Flower's logger: its lines go to the run's flower.log

# Flower's in-memory grid (a local simulation's) looks for the round's replies every 0.1 s by
# default; a round here takes a few tenths of a second, so up to a third of it was that wait.
# A look costs microseconds (a dictionary scan under a lock), so looking every 5 ms is free.
REPLY_POLL_S = 0.005


@app.main()
def main(grid: Grid, context: Context) -> None:
    if isinstance(grid, InMemoryGrid):
        grid.pull_interval = REPLY_POLL_S
        if WAKEUP_INSTALLED:
            engine_wakeup.wake_on_push(grid)  # the round's messages reach the actors at once (engine_wakeup)
        log.info(engine_wakeup.ON if WAKEUP_INSTALLED else engine_wakeup.OFF)
    run_server(grid, dict(context.run_config))
