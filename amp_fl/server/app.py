"""The AMP-FL ServerApp (Flower Message API). All the work happens in ``amp_fl.server.runner.run_server``."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.superlink.grid import InMemoryGrid

from amp_fl.server.runner import run_server

app = ServerApp()

# Flower's in-memory grid (a local simulation's) looks for the round's replies every 0.1 s by
# default; a round here takes a few tenths of a second, so up to a third of it was that wait.
# A look costs microseconds (a dictionary scan under a lock), so looking every 5 ms is free.
REPLY_POLL_S = 0.005


@app.main()
def main(grid: Grid, context: Context) -> None:
    if isinstance(grid, InMemoryGrid):
        grid.pull_interval = REPLY_POLL_S
    run_server(grid, dict(context.run_config))
