"""The ``onnxdc`` command line: a thin click layer over the library.

Commands parse options, build config dataclasses, call the library and print its reports. Errors the
library anticipates (:class:`~onnxdc.errors.OnnxdcError`) become one line on stderr: exit 1 for bad
data, exit 2 for bad usage or impossible settings. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from onnxdc import __version__
from onnxdc.errors import ConfigError, OnnxdcError


class _Group(click.Group):
    """A group that turns library errors into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OnnxdcError as exc:
            if ctx.params.get("debug"):
                raise
            click.echo(f"onnxdc: error: {exc}", err=True)
            ctx.exit(2 if isinstance(exc, ConfigError) else 1)
        except KeyboardInterrupt:
            click.echo("onnxdc: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="onnxdc")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
def main(debug: bool) -> None:
    """Deep Compression for ONNX models: prune, share weights, entropy-code."""


def _default_output(path: str, suffix: str) -> str:
    p = Path(path)
    return str(p.with_name(p.stem + suffix))


@contextmanager
def _progress(quiet: bool, label: str) -> Iterator[Any]:
    """Yield a library progress callback drawing click's bar on stderr (None when quiet)."""
    if quiet:
        yield None
        return
    bar_holder: dict[str, Any] = {}

    def callback(done: int, total: int, _name: str) -> None:
        if "bar" not in bar_holder:
            bar_holder["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            bar_holder["bar"].__enter__()
        bar = bar_holder["bar"]
        bar.update(done - bar.pos)

    try:
        yield callback
    finally:
        if "bar" in bar_holder:
            bar_holder["bar"].__exit__(None, None, None)


_output = click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file.")
_force = click.option("--force", is_flag=True, help="Overwrite an existing output file.")
_quiet = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
_json = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@_output
@click.option("--lossless", is_flag=True, help="Store every tensor exactly (no pruning or sharing).")
@click.option("--zstd-level", type=click.IntRange(1, 22), default=19, show_default=True,
              help="zstd level tried on lossless byte planes.")
@_force
@_quiet
@_json
def compress(model: str, output: str | None, lossless: bool, zstd_level: int, force: bool, quiet: bool,
             as_json: bool) -> None:
    """Compress MODEL (.onnx) into an .onnxdc container."""
    from onnxdc.files import check_output_path, write_atomic
    from onnxdc.graphio import load_model
    from onnxdc.pipeline import CompressConfig
    from onnxdc.pipeline import compress as run_compress
    from onnxdc.report import build_report

    out = check_output_path(output or _default_output(model, ".onnxdc"), force=force, inputs=[model])
    config = CompressConfig(lossless=lossless or True, zstd_level=zstd_level)
    loaded = load_model(model)
    with _progress(quiet or as_json, "compressing") as cb:
        result = run_compress(loaded, config=config, progress=cb)
    write_atomic(out, result.data)
    _print_report(build_report(result.container), quiet=quiet, as_json=as_json, extra={"output": str(out)})


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@_output
@_force
@_quiet
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run onnx.checker on the result and warn if it fails.")
def decompress(container: str, output: str | None, force: bool, quiet: bool, check: bool) -> None:
    """Rebuild an ONNX model from CONTAINER (.onnxdc)."""
    from onnxdc.files import check_output_path, write_atomic
    from onnxdc.pipeline import decompress as run_decompress
    from onnxdc.validate import check_model_quietly

    out = check_output_path(output or _default_output(container, ".decompressed.onnx"), force=force,
                            inputs=[container])
    data = _read_input(container)
    with _progress(quiet, "decompressing") as cb:
        model = run_decompress(data, progress=cb)
    write_atomic(out, model.SerializeToString(deterministic=True))
    if check:
        problem = check_model_quietly(out)
        if problem:
            click.echo(f"onnxdc: warning: onnx.checker rejects the output: {problem}", err=True)
    if not quiet:
        click.echo(f"wrote {out}")


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@_json
@click.option("--all", "show_all", is_flag=True, help="List every tensor (default: the 30 largest).")
def inspect(container: str, as_json: bool, show_all: bool) -> None:
    """Show the per-tensor table and totals of CONTAINER without decoding it."""
    from onnxdc.container import read_container
    from onnxdc.report import build_report

    report = build_report(read_container(_read_input(container)))
    _print_report(report, quiet=False, as_json=as_json, top=None if show_all else 30)


def _read_input(path: str) -> bytes:
    from onnxdc.errors import ContainerError

    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ContainerError(f"no such file: {path!r}") from None
    except OSError as exc:
        raise ContainerError(f"cannot read {path!r}: {exc.strerror}") from None


def _print_report(report: Any, *, quiet: bool, as_json: bool, top: int | None = 30,
                  extra: dict[str, Any] | None = None) -> None:
    from onnxdc.report import format_report

    if as_json:
        click.echo(json.dumps({**(extra or {}), **report.to_json()}, indent=2))
    elif not quiet:
        if extra and "output" in extra:
            click.echo(f"wrote {extra['output']}")
        click.echo(format_report(report, top=top))


if __name__ == "__main__":  # pragma: no cover
    main()
