"""Entry point of the ``ambient`` command."""

from __future__ import annotations

import click

from ambient import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ambient")
def cli() -> None:
    """ambient: a sidecar-less, zero-trust service mesh (Istio ambient mode)."""


def main() -> None:
    """Run the ``ambient`` command line."""
    cli()
