"""The ``decompress`` command: options to keyword arguments of :func:`onnxdc.api.decompress_file`
(the float form, streamed) or :func:`onnxdc.api.deploy_file` (``--as qdq|palettized``), one call, a
line naming the output (and onnx.checker's verdict on it), and for a deployable form which tensors
were rewritten and which stayed float, and why.
"""

from __future__ import annotations

import os

import click

from onnxdc.cli.main import default_output, force_option, main, output_option, progress_callback, quiet_option


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@output_option
@force_option
@quiet_option
@click.option("--as", "form", default="float", show_default=True, metavar="float|qdq|palettized",
              help="Output form: float tensors; qdq: weights on a uniform grid (the automatic mode's) as "
                   "int8 + DequantizeLinear; palettized: weights of at most 256 values as uint8 indices + "
                   "codebook + Gather. The rewritten weights equal the float ones.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run onnx.checker on the result and warn if it fails.")
@click.option("--external-data", is_flag=True,
              help="Write large tensors to a data file beside the model, OUT.<digest>.data (automatic above "
                   "1.8 GB of tensor data).")
@click.option("-j", "--jobs", type=click.IntRange(1), default=min(2, os.cpu_count() or 1), show_default="2",
              help="Tensors decoded in parallel threads while the main thread writes; the output is the same "
                   "for any value (Huffman-heavy containers gain little: the numpy decoder's small steps "
                   "contend for the GIL).")
@click.option("--max-output-bytes", type=click.IntRange(0), show_default="1 TiB",
              help="Refuse a container that decodes to more bytes than this.")
@click.option("--max-ratio", type=click.FloatRange(0.0, min_open=True), show_default="10000",
              help="Refuse a container that decodes to more than this many times its size (outputs up to "
                   "256 MiB always decode).")
def decompress(container: str, output: str | None, force: bool, quiet: bool, form: str, check: bool,
               external_data: bool, jobs: int, max_output_bytes: int | None, max_ratio: float | None) -> None:
    """Rebuild an ONNX model from CONTAINER (.onnxdc).

    A container that declares more output than --max-output-bytes, or more than --max-ratio times
    its own size, is refused before anything is written.
    """
    from onnxdc.api import check_form, check_model_quietly, check_output_path, decompress_file, deploy_file

    check_form(form)
    out = check_output_path(output or default_output(container, ".decompressed.onnx"), force=force,
                            inputs=[container])
    limits = {k: v for k, v in (("max_output_bytes", max_output_bytes), ("max_ratio", max_ratio)) if v is not None}
    report = None
    with progress_callback(quiet, "decompressing") as cb:
        if form == "float":
            decompress_file(container, out, external_data=True if external_data else None, progress=cb, jobs=jobs,
                            overwrite=force, **limits)
        else:
            report = deploy_file(container, out, form=form, progress=cb, jobs=jobs, overwrite=force,
                                 external_data=True if external_data else None, **limits)
    if check:
        problem = check_model_quietly(out)
        if problem and not quiet:
            click.echo(f"onnxdc: warning: onnx.checker rejects the output: {problem}", err=True)
    if not quiet:
        click.echo(f"wrote {out}")
        if report is not None:
            click.echo(_describe(report))


def _describe(report: object) -> str:
    """Which weights the deployable form rewrote, and the shared ones it left float, and why."""
    done = report.rewritten  # type: ignore[attr-defined]
    saved = sum(t.float_bytes - t.stored_bytes for t in done)
    lines = [f"{report.form}: {len(done)} weight tensor(s) rewritten, {saved:,} bytes fewer"]  # type: ignore[attr-defined]
    lines += [f"  {t.name}: {t.form} ({t.note})" for t in done]
    lines += [f"  {t.name}: kept float ({t.note})" for t in report.kept_float]  # type: ignore[attr-defined]
    return "\n".join(lines)
