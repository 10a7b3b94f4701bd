"""``ambient logs --kubeconfig``: print what the pods' nodes serve (``kube.logclient``).

Printing follows the folder mode's (``cli.logs``): the last lines of each log in
turn (with ``-l`` 10 per pod unless ``--tail``), then with ``-f`` every log at once
until Ctrl-C, a log ending when its pod is gone from its node (the command ends when
every one has). A node's read is one request on its kubelet socket; ``-f`` asks again
from the offset it was given, at most every :data:`POLL` seconds while nothing comes.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

import click

from ambient.kube.api import ClusterTarget, KubeClient, KubeError, load_config
from ambient.kube.logclient import LogStream, read, resolve

__all__ = ["LogRequest", "cluster_logs"]

POLL = 0.25


@dataclass(frozen=True)
class LogRequest:
    """What ``ambient logs`` was asked (see ``cli.logs``)."""

    namespace: str
    kind: str = "Pod"
    name: str | None = None
    selector: str | None = None
    container: str | None = None
    all_containers: bool = False
    follow: bool = False
    tail: int | None = None
    since: datetime | None = None
    prefix: bool = False
    max_log_requests: int = 5


def _fail(message: str) -> NoReturn:
    if message.startswith("Error from server"):
        click.echo(message, err=True)  # kubectl's own words
    else:
        click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


def _echo(stream: LogStream, lines: list[str], prefix: bool) -> None:
    for line in lines:
        click.echo(stream.prefix + line if prefix else line)


async def _logs(client: KubeClient, ask: LogRequest) -> None:
    found = await resolve(
        client,
        ask.namespace,
        kind=ask.kind,
        name=ask.name,
        selector=ask.selector,
        container=ask.container,
        all_containers=ask.all_containers,
    )
    for note in found.notes:
        click.echo(note, err=True)
    streams = found.streams
    if ask.follow and len(streams) > ask.max_log_requests:
        raise KubeError(
            f"you are attempting to follow {len(streams)} log streams, but maximum allowed "
            f"concurrency is {ask.max_log_requests}, use --max-log-requests to increase the limit"
        )
    offsets: dict[LogStream, int] = {}
    for stream in streams:
        lines, offsets[stream] = await read(stream, tail=ask.tail, since=ask.since)
        _echo(stream, lines, ask.prefix)
    while ask.follow and offsets:
        idle = True
        for stream, offset in list(offsets.items()):
            try:
                lines, offsets[stream] = await read(stream, offset=offset)
            except KubeError as err:
                if err.code != 404:
                    raise
                del offsets[stream]  # its pod is gone
                continue
            if lines:
                idle = False
                _echo(stream, lines, ask.prefix)
        if idle:
            await asyncio.sleep(POLL)


def cluster_logs(target: ClusterTarget, ask: LogRequest) -> None:
    """Print the logs ``ask`` names from the cluster ``target`` (see the module docstring)."""
    try:
        config = load_config(target)
    except KubeError as err:
        _fail(str(err))

    async def main() -> None:
        client = KubeClient(config)
        try:
            await _logs(client, ask)
        finally:
            await client.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        return
    except KubeError as err:
        _fail(str(err))
