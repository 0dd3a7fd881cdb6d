"""`abflow dashboard`: serve the live results dashboard (`streamlit run dashboard/app.py`).

The dashboard only reads the results store, so it takes the store's path, not Kafka settings. It binds to
127.0.0.1 unless told otherwise: results are internal, and exposing them is an explicit choice (`--host`).
Settings reach the Streamlit script through the environment (`ABFLOW_STORE`, `ABFLOW_DASHBOARD_*`), which
`dashboard/loader.py` reads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from experiment.core.errors import ConfigError

__all__ = ["build_command", "dashboard"]


def build_command(
    *,
    port: int,
    host: str,
    store: Path,
    refresh: float,
    export_dir: Path,
    alpha: float,
    base_env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The `streamlit run` command line and its environment (pure, so it can be tested without a server)."""
    import dashboard

    if not 0 < port < 65536:
        raise ConfigError(f"--port must lie in 1..65535; got {port}")
    if refresh < 0:
        raise ConfigError(f"--refresh must be >= 0 seconds (0 turns auto-refresh off); got {refresh}")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must lie strictly between 0 and 1; got {alpha}")
    app = Path(dashboard.__file__).resolve().parent / "app.py"
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.port",
        str(port),
        "--server.address",
        host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]
    env = dict(os.environ if base_env is None else base_env)
    env.update(
        {
            "ABFLOW_STORE": str(store.expanduser().resolve()),
            "ABFLOW_DASHBOARD_REFRESH": f"{refresh:g}",
            "ABFLOW_DASHBOARD_EXPORT_DIR": str(export_dir.expanduser().resolve()),
            "ABFLOW_DASHBOARD_ALPHA": f"{alpha:g}",
        }
    )
    return argv, env


def dashboard(
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    host: Annotated[
        str, typer.Option(help="Address to bind; 127.0.0.1 keeps it local, 0.0.0.0 exposes it.")
    ] = "127.0.0.1",
    store: Annotated[Path | None, typer.Option("--store", help="Results store file (default: settings).")] = None,
    refresh: Annotated[
        float, typer.Option(help="Seconds between refreshes while an experiment runs (0 = off).")
    ] = 10.0,
    export_dir: Annotated[
        Path, typer.Option("--export-dir", help="Where the Export button writes report files.")
    ] = Path("reports"),
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
) -> None:
    """Serve the live dashboard: experiment list, per-experiment results, SRM, funnel, scores, exports."""
    from experiment.runtime.config import load_settings

    path = store or load_settings().store_path
    argv, env = build_command(port=port, host=host, store=path, refresh=refresh, export_dir=export_dir, alpha=alpha)
    typer.echo(f"abflow dashboard: http://{host}:{port}  (store {env['ABFLOW_STORE']}; Ctrl-C to stop)")
    sys.stdout.flush()
    # Replace this process with the server, so signals (Ctrl-C, SIGTERM from a supervisor) reach it directly
    # and no orphaned server outlives the command.
    os.execve(argv[0], argv, env)
