"""The ``report`` command: the analysis of a container (:func:`onnxdc.api.analyze_file`): every
stream checked and every shared tensor's levels decoded, to say where the bytes go, by stage and
by layer, and how many bits per weight the coders spend against the levels' entropy. ``--html``
writes the same as one self-contained page with plots. ``inspect`` is the fast look at the
structure (the header alone).
"""

from __future__ import annotations

import json

import click

from onnxdc.cli.main import force_option, json_option, main, quiet_option


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@json_option
@click.option("--all", "show_all", is_flag=True, help="List every tensor (default: the 30 largest).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML page with plots (needs: pip install 'onnxdc[report]').")
@click.option("--model", type=click.Path(dir_okay=False),
              help="The original ONNX model: the page's histograms show its weights (default: the decoded ones).")
@force_option
@quiet_option
def report(container: str, as_json: bool, show_all: bool, html_out: str | None, model: str | None,
           force: bool, quiet: bool) -> None:
    """Analyze CONTAINER: bytes by stage and by layer (codebook, positions, levels), bits per weight
    coded against the levels' order-0 and context entropy, each tensor's settings.

    Decodes every stream (a corrupted one is an error); `inspect` shows the structure without
    decoding.

    \b
    Example:
      onnxdc report model.onnxdc --html model.html --model model.onnx
    """
    from onnxdc.api import (
        ConfigError,
        analyze_file,
        check_output_path,
        format_analysis,
        format_stages,
        html_report_file,
    )

    if model is not None and html_out is None:
        raise ConfigError("--model is used by the html page only: give --html OUT.html too")
    if html_out is not None:
        check_output_path(html_out, force=force, inputs=[container] + ([model] if model else []))
        result = html_report_file(container, html_out, model=model, overwrite=force)
    else:
        result = analyze_file(container)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    if quiet:
        return
    top = None if show_all else 30
    click.echo(format_stages(result.report))
    click.echo("")
    click.echo(format_analysis(result, top=top))
    if html_out is not None:
        click.echo(f"wrote {html_out}")
