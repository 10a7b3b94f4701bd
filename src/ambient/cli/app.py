"""The ``ambient`` command's app: the root group, its shared options and helpers.

Every command finds the running mesh through its state folder: ``--state-dir``
(anywhere among the options, before or after the command name) or
``$AMBIENT_STATE_DIR``, default ``./.ambient``.

Command modules (``mesh``, ``objects``, ``ztunnel_config``, ``waypoint``,
``analyze``, ``node``, ``distributed``) define their commands with the helpers
here and register nothing themselves; ``cli.main`` attaches them to ``cli``.
"""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from typing import Any, NoReturn

import click

from ambient import __version__
from ambient.cli.client import ApiError, MeshClient
from ambient.local.statedir import ENV_VAR, MeshNotRunning, StateDir

__all__ = [
    "CONTEXT",
    "call",
    "cli",
    "fail",
    "log_level_option",
    "mesh_client",
    "parse_duration",
    "state",
    "state_dir_option",
]

_DURATION = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def state_dir_option(f: Any) -> Any:
    """``--state-dir`` on a command; remembered on the root context for ``state``."""
    return click.option(
        "--state-dir",
        envvar=ENV_VAR,
        type=click.Path(file_okay=False),
        help="State folder of the mesh (default ./.ambient, or $AMBIENT_STATE_DIR).",
        expose_value=True,
        is_eager=False,
        callback=_remember_state_dir,
    )(f)


def log_level_option(f: Any) -> Any:
    """``--log-level`` of the long-running commands."""
    return click.option(
        "--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"])
    )(f)


def _remember_state_dir(
    ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    root = ctx.find_root()
    if value is not None:
        root.meta["state_dir"] = value
    return value


def state(ctx: click.Context) -> StateDir:
    """The state folder the command line named (or the default)."""
    return StateDir.resolve(ctx.find_root().meta.get("state_dir"))


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` in red on stderr and exit with ``code``."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def mesh_client(ctx: click.Context) -> MeshClient:
    """A client of the running mesh's control API; exits with the reason if none runs."""
    try:
        return MeshClient(state(ctx))
    except MeshNotRunning as exc:
        fail(str(exc))


def call(ctx: click.Context, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One control API call (``GET`` or ``POST``); exits with the mesh's error."""
    client = mesh_client(ctx)
    try:
        return client.get(path) if method == "GET" else client.post(path, body or {})
    except (ApiError, MeshNotRunning) as exc:
        fail(str(exc))


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``1h``, ``2d`` (or a combination such as ``1h30m``)."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise click.BadParameter(f"{text!r}: expected a duration such as 30m, 1h or 2d")
    return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in parts))


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ambient")
@state_dir_option
def cli(state_dir: str | None) -> None:
    """ambient: a sidecar-less, zero-trust service mesh (Istio's ambient mode).

    Start a mesh from a folder of Kubernetes/Istio YAML with `ambient up DIR`,
    then inspect and change it with the other commands.
    """
