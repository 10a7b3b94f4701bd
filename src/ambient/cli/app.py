"""The ``ambient`` command's app: the root group, its shared options and helpers.

Every command finds the running mesh through its state folder: ``--state-dir``
(anywhere among the options, before or after the command name) or
``$AMBIENT_STATE_DIR``, default ``./.ambient``.

The commands that read or change a mesh (``status``, ``get``, ``apply``, ``delete``,
``label``, ``zc``, ``waypoint``, ``analyze``; ``target_options``) work on a Kubernetes
cluster instead when one is named (``target``): ``--kubeconfig``/``--context``, or
``$KUBECONFIG`` when no state folder is named and ``./.ambient`` does not exist (so a
local mesh keeps working in a shell that has ``$KUBECONFIG`` set). Naming both a
state folder and a kubeconfig on the command line is an error.

Command modules (``mesh``, ``objects``, ``ztunnel_config``, ``waypoint``,
``analyze``, ``node``, ``distributed``) define their commands with the helpers
here and register nothing themselves; ``cli.main`` attaches them to ``cli``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ambient import __version__
from ambient.cli.client import ApiError, MeshClient
from ambient.cli.lazy import LazyGroup
from ambient.config import duration
from ambient.local.statedir import DEFAULT_STATE_DIR, ENV_VAR, MeshNotRunning, StateDir

if TYPE_CHECKING:
    from ambient.kube.api import ClusterTarget

__all__ = [
    "CONTEXT",
    "call",
    "cli",
    "cluster_options",
    "fail",
    "log_level_option",
    "mesh_client",
    "parse_duration",
    "path_option",
    "state",
    "state_dir_option",
    "target",
    "target_options",
]

_F = TypeVar("_F", bound=Callable[..., Any])

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


def _remember(key: str) -> Any:
    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is not None:
            ctx.find_root().meta[key] = value
        return value

    return callback


def target_options(f: Any) -> Any:
    """``--state-dir``, ``--kubeconfig`` and ``--context`` (see ``target``)."""
    f = click.option(
        "--context",
        expose_value=False,
        callback=_remember("kube_context"),
        help="Kubeconfig context of the cluster (with --kubeconfig or $KUBECONFIG).",
    )(f)
    f = click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False),
        expose_value=False,
        callback=_remember("kubeconfig"),
        help="Work on this Kubernetes cluster instead of a state folder "
        "($KUBECONFIG when no state folder is named and ./.ambient does not exist).",
    )(f)
    return state_dir_option(f)


def path_option(*decls: str, exists: bool = False, help: str) -> Callable[[_F], _F]:
    """An optional file (``FILE`` in the help), given to the command as a ``Path``."""
    path = click.Path(exists=exists, dir_okay=False, path_type=Path)
    return click.option(*decls, type=path, default=None, help=help)


def cluster_options(kubeconfig_help: str, *, exists: bool = False) -> Callable[[_F], _F]:
    """``--kubeconfig FILE`` and ``--context`` of a command that runs against a cluster
    itself (parameters ``kubeconfig`` and ``kube_context``); a command that works on a mesh
    or a cluster takes ``target_options`` instead."""

    def decorate(f: _F) -> _F:
        f = click.option("--context", "kube_context", default=None, help="Kubeconfig context.")(f)
        return path_option("--kubeconfig", exists=exists, help=kubeconfig_help)(f)

    return decorate


def target(ctx: click.Context) -> ClusterTarget | None:
    """The cluster the command line names, or None for a state folder (see the module
    docstring)."""
    from ambient.kube.api import ClusterTarget

    meta = ctx.find_root().meta
    kubeconfig, context = meta.get("kubeconfig"), meta.get("kube_context")
    named_state = meta.get("state_dir") or os.environ.get(ENV_VAR)
    if kubeconfig is not None or context is not None:
        if meta.get("state_dir"):
            raise click.UsageError("give --state-dir or --kubeconfig/--context, not both")
        return ClusterTarget(Path(kubeconfig) if kubeconfig else None, context)
    if named_state or not os.environ.get("KUBECONFIG") or Path(DEFAULT_STATE_DIR).exists():
        return None
    return ClusterTarget()


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
    """``90s``, ``30m``, ``1h``, ``2d`` (or a combination such as ``1h30m``): ``duration.CLI``."""
    try:
        return timedelta(seconds=duration.parse_duration(text, duration.CLI))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="ambient")
@target_options
def cli(state_dir: str | None) -> None:
    """ambient: a sidecar-less, zero-trust service mesh (Istio's ambient mode).

    Start a mesh from a folder of Kubernetes/Istio YAML with `ambient up DIR`,
    then inspect and change it with the other commands.
    """
