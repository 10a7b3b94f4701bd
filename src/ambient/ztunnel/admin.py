"""ztunnel's admin endpoints beyond ``/config_dump``: ``/logging`` and the ``/`` index.

As Istio's ztunnel (``src/admin.rs``): ``POST /logging`` lists the levels,
``POST /logging?level=SPEC`` changes them and ``&reset`` first returns to the
start level (``ambient.logconfig.LogLevels``); other methods are answered 405 and
a bad SPEC 400, each with the usage. Changing levels is refused (403) to a client
that is not on a loopback address: the admin port may listen on a node address
others can reach (``ambient ztunnel`` on a real network), and ztunnel's own admin
listens on localhost only. ``/`` lists the endpoints of the three ports.
"""

from __future__ import annotations

import ipaddress

from ambient.httpd import Request, Response
from ambient.logconfig import LevelError, levels

__all__ = ["USAGE", "index", "logging_endpoint"]

USAGE = (
    "usage: POST /logging\t\t\t\t(To list current level)\n"
    "usage: POST /logging?level=<level>\t\t(To change global levels)\n"
    "usage: POST /logging?level={mod1}={level1},{mod2}={level2}\t(To change specific mods' "
    "logging level)\n"
    "usage: POST /logging?reset[&level=...]\t(Back to the start level first)\n\n"
    "hint: loglevel:\terror|warn|info|debug|trace|off\n"
    "hint: mod_name:\taccess (the access log), or a module such as ztunnel::proxy\n"
)


def _loopback(peer: str) -> bool:
    try:
        return ipaddress.ip_address(peer.split("%", 1)[0]).is_loopback
    except ValueError:
        return peer == ""  # a Unix socket


def logging_endpoint(request: Request) -> Response:
    """``/logging`` (see the module docstring)."""
    if request.method != "POST":
        return Response(405, f"Invalid HTTP method\n{USAGE}".encode())
    current = levels()
    level = request.query.get("level", "")
    reset = "reset" in request.query
    if level or reset:
        if not _loopback(request.peer):
            return Response(403, b"log levels can be changed from localhost only\n")
        try:
            current.apply(level, reset=reset)
        except LevelError as exc:
            return Response(400, f"Invalid level provided: {level} ({exc})\n{USAGE}".encode())
    return Response(200, f"current log level is {current.describe()}\n".encode())


def index(endpoints: dict[str, list[tuple[str, str]]]) -> Response:
    """A plain-text list of ``{port name: [(path, what it does)]}``."""
    lines = ["ztunnel admin endpoints", ""]
    for port, paths in endpoints.items():
        lines.append(f"{port}:")
        lines += [f"  {path:<20} {what}" for path, what in paths]
    return Response(200, ("\n".join(lines) + "\n").encode())
