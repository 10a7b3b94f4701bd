"""``ambient analyze``: istioctl analyze for files, folders, or the running mesh.

Decisions:

- With ``DIR``/``FILE`` arguments or ``-f`` the files are analyzed offline; with
  none, the running mesh's configuration (its objects as the control plane holds
  them, with live label changes) through the control API.
- Output as istioctl's: one line per message, ``Level [CODE] (Kind name.namespace
  file:line) text``; ``-o json``/``yaml`` give a list of messages.
- All namespaces are analyzed unless ``-n`` names one (``-A`` says so explicitly).
- With ``--kubeconfig``/``--context`` (or ``$KUBECONFIG``, see ``cli.app.target``) the
  cluster's objects, read from the API server and converted as the control plane
  converts them (``kube.analyze``); there, as istioctl, the default is the kubeconfig
  context's namespace and ``-A`` means all.
- Exit code 79 (istioctl's) when a message is at or above ``--failure-threshold``
  (default Error); 0 otherwise. A configuration that does not load reports each
  problem as IST0106 and fails: the analyzers need a loaded configuration.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import yaml

from ambient.analysis import Level, Message, analyze, in_namespace, problem_message
from ambient.cli.app import CONTEXT, call, target, target_options
from ambient.config import ConfigError, ConfigSet, Origin, load_documents, load_paths

__all__ = ["FAILURE_EXIT_CODE", "analyze_command"]

FAILURE_EXIT_CODE = 79
_LEVELS = {"Info": Level.INFO, "Warning": Level.WARNING, "Error": Level.ERROR}


def _running_mesh(ctx: click.Context) -> ConfigSet:
    items: list[dict[str, Any]] = call(ctx, "GET", "/manifests")
    documents = [
        (
            item["manifest"],
            Origin(item["file"], int(item["document"]), item.get("item"), line=item.get("line")),
        )
        for item in items
    ]
    return load_documents(documents)


def _print(messages: list[Message], output: str, scope: str) -> None:
    if output == "json":
        import json

        click.echo(json.dumps([m.to_dict() for m in messages], indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump([m.to_dict() for m in messages], sort_keys=False), nl=False)
    elif not messages:
        click.secho(
            f"\u2714 No validation issues found when analyzing {scope}.", fg="green", err=True
        )
    else:
        colours = {Level.ERROR: "red", Level.WARNING: "yellow", Level.INFO: None}
        for message in messages:
            click.secho(str(message), fg=colours[message.level])


@click.command("analyze", context_settings=CONTEXT)
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-f", "--filename", "files", multiple=True, type=click.Path(path_type=Path),
              help="A file or folder to analyze (repeatable); like PATHS.")  # fmt: skip
@click.option("-n", "--namespace", default=None, help="Only messages about this namespace.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace (the default).")
@click.option("-o", "--output", type=click.Choice(["log", "json", "yaml"]), default="log")
@click.option(
    "--failure-threshold",
    type=click.Choice(list(_LEVELS)),
    default="Error",
    show_default=True,
    help="The lowest level that makes the exit code 79.",
)
@click.option(
    "--output-threshold",
    type=click.Choice(list(_LEVELS)),
    default="Info",
    show_default=True,
    help="The lowest level printed.",
)
@target_options
@click.pass_context
def analyze_command(
    ctx: click.Context,
    paths: tuple[Path, ...],
    files: tuple[Path, ...],
    namespace: str | None,
    all_namespaces: bool,
    output: str,
    failure_threshold: str,
    output_threshold: str,
    state_dir: str | None,
) -> None:
    """Analyze configuration as istioctl analyze does: files and folders (PATHS, -f),
    or without them the running mesh. Exit code 79 when a message reaches
    --failure-threshold.

    Example: ambient analyze examples/shop examples/waypoint
    """
    if namespace and all_namespaces:
        raise click.UsageError("-n and -A exclude each other")
    sources = [*paths, *files]
    messages: list[Message]
    cluster_target = None if sources else target(ctx)
    if cluster_target is not None:
        from ambient.cli import cluster

        messages, scope = cluster.analyze_cluster(cluster_target, namespace, all_namespaces)
        shown = [m for m in messages if m.level >= _LEVELS[output_threshold]]
        _print(shown, output, scope)
        if any(m.level >= _LEVELS[failure_threshold] for m in messages):
            sys.exit(FAILURE_EXIT_CODE)
        return
    try:
        config = load_paths(sources) if sources else _running_mesh(ctx)
    except ConfigError as exc:
        messages = [problem_message(p, warning=False) for p in exc.problems]
        messages += [problem_message(p, warning=True) for p in exc.warnings]
    else:
        messages = analyze(config)
    if namespace:
        messages = [m for m in messages if in_namespace(m, namespace)]
    shown = [m for m in messages if m.level >= _LEVELS[output_threshold]]
    scope = f"namespace: {namespace}" if namespace else "all namespaces"
    _print(shown, output, scope)
    if any(m.level >= _LEVELS[failure_threshold] for m in messages):
        sys.exit(FAILURE_EXIT_CODE)
