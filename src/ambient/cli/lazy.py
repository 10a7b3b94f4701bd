"""A click group whose commands are imported when one is run, not all at start.

``ambient ztunnel`` (the node proxy of every node) and ``ambient node-agent`` are
long-running processes started with ``python -m ambient``: importing every
command's module for them (the Kubernetes client, the installer, the dashboard,
the config loader...) cost ~20 MB of resident memory each. Commands are
registered as ``"module:attribute"`` and imported on first lookup; listing them
(``ambient --help``) imports them all, as it must to show their help.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["LazyGroup"]


class LazyGroup(click.Group):
    """``click.Group`` with :meth:`add_lazy` (commands imported by name on first use)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._lazy: dict[str, str] = {}

    def add_lazy(self, name: str, target: str) -> None:
        """Register command ``name`` as ``target`` = ``"package.module:attribute"``."""
        self._lazy[name] = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is not None:
            return command
        target = self._lazy.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        self.commands[cmd_name] = command  # the alias keeps its own name as the key
        return command
