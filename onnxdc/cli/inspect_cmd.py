"""The ``inspect`` command: a container's structure from its header alone
(:func:`onnxdc.api.inspect_file`: nothing decoded, the payload neither read nor checksummed, so it
is fast on any size): version, producer, settings, and each tensor's encoding, layout and streams
(role, coder, symbols, bytes). ``report`` is the analysis: it decodes the levels to measure bits per
weight against their entropy. Not named ``inspect.py``, which would shadow the standard library's
module.
"""

from __future__ import annotations

import json

import click

from onnxdc.cli.main import json_option, main


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@json_option
@click.option("--all", "show_all", is_flag=True, help="List every tensor (default: the 30 largest).")
def inspect(container: str, as_json: bool, show_all: bool) -> None:
    """Show CONTAINER's structure without decoding it: version, producer, settings, each tensor's
    encoding and its streams (coder, symbols, bytes).

    `report` analyzes it instead (bytes by stage and layer, bits per weight against entropy).

    \b
    Example:
      onnxdc inspect model.onnxdc --all
    """
    from onnxdc.api import format_structure, inspect_file, structure

    info = structure(inspect_file(container))
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(format_structure(info, top=None if show_all else 30))
