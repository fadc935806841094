"""The ``report`` command: a container's stage-by-stage size report, from its header alone
(:func:`onnxdc.api.inspect_file`: nothing decoded, the payload neither read nor checksummed).
"""

from __future__ import annotations

import click

from onnxdc.cli.main import json_option, main, print_report


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@json_option
@click.option("--all", "show_all", is_flag=True, help="List every tensor (default: the 30 largest).")
def report(container: str, as_json: bool, show_all: bool) -> None:
    """Print the stage-by-stage size report of CONTAINER."""
    from onnxdc.api import build_report, inspect_file

    print_report(build_report(inspect_file(container)), quiet=False, as_json=as_json,
                 top=None if show_all else 30)
