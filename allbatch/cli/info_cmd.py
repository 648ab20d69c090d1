"""``allbatch info``: versions, CPU, GPUs, which backends and decoders can run here, the default model."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from allbatch.cli.console import make_console


def info_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON (for scripts and bug reports).")] = False,
) -> None:
    """Show what this machine can run: library versions, GPUs, usable backends and decoders, model check."""
    from allbatch.cli.info_report import collect_info, render_info

    info = collect_info()
    if json_output:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
    else:
        make_console(stderr=False).print(render_info(info))
