"""The ``inspect`` command: a container's version, producer, settings and size report, from its
header alone (:func:`onnxdc.api.inspect_file`: nothing decoded, the payload neither read nor
checksummed; ``decompress`` or ``eval`` find corrupted streams). Not named ``inspect.py``, which
would shadow the standard library's module.
"""

from __future__ import annotations

import json

import click

from onnxdc.cli.main import json_option, main, print_report


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@json_option
@click.option("--all", "show_all", is_flag=True, help="List every tensor (default: the 30 largest).")
def inspect(container: str, as_json: bool, show_all: bool) -> None:
    """Show CONTAINER's version, settings, stage sizes and per-tensor table, without decoding it."""
    from onnxdc.api import build_report, inspect_file, printable

    c = inspect_file(container)
    info = {"format_version": f"{c.version[0]}.{c.version[1]}", "producer": c.header.producer,
            "streams": len(c.header.streams), "metadata": c.header.metadata}
    if not as_json:
        click.echo(f"onnxdc container {info['format_version']}, written by {printable(c.header.producer)}, "
                   f"{len(c.header.tensors)} tensors in {len(c.header.streams)} streams")
        click.echo(f"settings: {json.dumps(c.header.metadata.get('settings', {}), sort_keys=True)}")
        click.echo("")
    print_report(build_report(c), quiet=False, as_json=as_json, top=None if show_all else 30, extra=info)
