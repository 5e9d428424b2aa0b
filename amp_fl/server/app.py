"""The AMP-FL ServerApp (Flower Message API). All the work happens in ``amp_fl.server.runner.run_server``."""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from amp_fl.server.runner import run_server

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_server(grid, dict(context.run_config))
