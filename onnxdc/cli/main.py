"""The ``onnxdc`` command line: a thin click layer over the library.

Commands parse options, build config dataclasses, call the library and print its reports. Errors the
library anticipates (:class:`~onnxdc.errors.OnnxdcError`) become one line on stderr: exit 1 for bad
data, exit 2 for bad usage or impossible settings. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from onnxdc._version import __version__
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
def progress_callback(quiet: bool, label: str) -> Iterator[Any]:
    """Yield a library progress callback drawing click's bar on stderr (None when quiet)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    bar_holder: dict[str, Any] = {}

    def callback(done: int, total: int, _name: str) -> None:
        if "bar" in bar_holder and (bar_holder["total"] != total or done < bar_holder["bar"].pos):
            bar_holder.pop("bar").__exit__(None, None, None)  # a new phase with its own count
        if "bar" not in bar_holder:
            bar_holder["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            bar_holder["bar"].__enter__()
            bar_holder["total"] = total
        bar = bar_holder["bar"]
        bar.update(done - bar.pos)

    try:
        yield callback
    finally:
        if "bar" in bar_holder:
            bar_holder["bar"].__exit__(None, None, None)


def notice_callback(quiet: bool) -> Any:
    """A library notice callback printing ``onnxdc: warning: ...`` on stderr (None when quiet)."""
    if quiet:
        return None
    return lambda message: click.echo(f"onnxdc: warning: {message}", err=True)


output_option = click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file.")
force_option = click.option("--force", is_flag=True, help="Overwrite an existing output file.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")


def sharing_options(func: Any) -> Any:
    """The Deep Compression options shared by ``compress`` and ``compare-coders``."""
    options = [
        click.option("--sparsity", type=click.FloatRange(0.0, 1.0, max_open=True),
                     help="Prune this fraction of each tensor's weights (smallest magnitudes)."),
        click.option("--std-threshold", type=click.FloatRange(0.0), help="Han's rule: prune |w| < Q * std(w)."),
        click.option("--global", "global_prune", is_flag=True,
                     help="One magnitude threshold across all tensors (with --sparsity)."),
        click.option("--bits", type=click.IntRange(1, 8),
                     help="Index bits for every tensor [default: conv 8, fully connected 5]."),
        click.option("--init", type=click.Choice(["linear", "density", "forgy"]), default="linear",
                     show_default=True, help="k-means centroid initialization."),
        click.option("--codebook-dtype", type=click.Choice(["float32", "float16"]), default="float32",
                     show_default=True),
        click.option("--coder", default="auto", show_default=True,
                     help="Index coder: auto (smallest per tensor), huffman, zstd, zstd-literals, raw, or a chain like huffman+zstd."),
        click.option("--positions", type=click.Choice(["auto", "relative", "mask", "dense"]), default="auto",
                     show_default=True, help="Coding of surviving weights' positions."),
        click.option("--min-elements", type=click.IntRange(0), default=None,
                     help="Smaller tensors are stored losslessly.  [default: 1024; automatic mode, which "
                          "measures every tensor, 256]"),
        click.option("--include-bias", is_flag=True, help="Weight-share biases too."),
        click.option("--recipe", type=click.Path(dir_okay=False), help="TOML file of per-tensor rules."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed for random choices."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def _manual(kw: dict[str, Any]) -> Any:
    """The manual-mode SharingConfig, or None when no pruning/bits/recipe option was given."""
    if kw.get("sparsity") is None and kw.get("std_threshold") is None and kw.get("bits") is None \
            and not kw.get("recipe"):
        return None
    return sharing_config(kw)


def sharing_config(kw: dict[str, Any]) -> Any:
    """Build a SharingConfig from the options (validating every one of them)."""
    from onnxdc.api import SharingConfig, load_recipe

    rules = load_recipe(kw["recipe"]) if kw.get("recipe") else ()
    return SharingConfig(sparsity=kw["sparsity"], std_threshold=kw["std_threshold"],
                         global_prune=kw["global_prune"], bits=kw["bits"], init=kw["init"],
                         codebook_dtype=kw["codebook_dtype"], coder=kw["coder"], positions=kw["positions"],
                         min_elements=1024 if kw["min_elements"] is None else kw["min_elements"],
                         include_bias=kw["include_bias"], rules=rules,
                         seed=kw["seed"])


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@output_option
@click.option("--lossless", is_flag=True, help="Store every tensor exactly (no pruning or sharing).")
@sharing_options
@click.option("--calib", type=click.Path(dir_okay=False),
              help=".npz of calibration inputs: prune and share so each layer keeps its outputs.")
@click.option("--max-drop", type=click.FloatRange(0.0),
              help="Automatic mode: top-1 drop allowed on the calibration set, in points.")
@click.option("--min-cosine", type=click.FloatRange(-1.0, 1.0), default=0.999, show_default=True,
              help="Automatic mode: mean output cosine similarity to keep.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
              help="Value of a symbolic input dimension for synthetic calibration inputs.")
@click.option("--calib-samples", type=click.IntRange(1), default=512, show_default=True,
              help="Calibration samples used at most.")
@click.option("--zstd-level", type=click.IntRange(1, 22), default=19, show_default=True,
              help="zstd level tried on lossless byte planes.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=os.cpu_count() or 1, show_default="number of cores",
              help="Tensors coded in parallel; the output is the same for any value.")
@force_option
@quiet_option
@json_option
def compress(model: str, output: str | None, lossless: bool, calib: str | None, calib_samples: int,
             max_drop: float | None, min_cosine: float, dims: tuple[str, ...], zstd_level: int, jobs: int,
             force: bool, quiet: bool, as_json: bool, **kw: Any) -> None:
    """Compress MODEL (.onnx) into an .onnxdc container.

    Manual mode (--sparsity / --std-threshold / --bits / --recipe): the selected weights are
    pruned, weight-shared and entropy-coded as told, fitted to --calib data when given.
    Automatic mode (no such option): per-tensor sparsity and bits are chosen from measured
    sensitivity on --calib data (or synthetic inputs) so the calibration-set budget holds, and
    written as a recipe beside the output. --lossless stores every tensor exactly.
    """
    if _manual(kw) is None and not lossless:
        _compress_auto(model, output, calib, calib_samples, max_drop, min_cosine, dims, zstd_level, jobs, force,
                       quiet, as_json, kw)
        return
    from onnxdc.api import (
        CompressConfig,
        build_report,
        check_output_path,
        compress_file,
        load_model,
        model_input_files,
        report_for,
        write_atomic,
    )
    from onnxdc.api import compress as run_compress

    sharing = _manual(kw)
    if lossless and (sharing is not None or calib or max_drop is not None):
        raise click.UsageError("--lossless cannot be combined with --sparsity, --std-threshold, --bits, --recipe, "
                               "--calib or --max-drop")
    if sharing is not None and max_drop is not None:
        raise click.UsageError("--max-drop chooses settings automatically; drop --sparsity/--std-threshold/--bits/--recipe")
    sharing_config(kw)  # validate every option, also the ones lossless mode does not use
    out = check_output_path(output or _default_output(model, ".onnxdc"), force=force,
                            inputs=model_input_files(model, calib, kw.get("recipe")))
    calibration = loaded = None
    notice = notice_callback(quiet)
    if calib is not None:
        from onnxdc.api import load_data

        loaded = load_model(model)
        calibration = load_data(calib, model=loaded, max_samples=calib_samples, notice=notice)
    config = CompressConfig(sharing=sharing, calibration=calibration, calib_samples=calib_samples,
                            zstd_level=zstd_level, jobs=jobs)
    with progress_callback(quiet or as_json, "compressing") as cb:
        if loaded is None:  # tensor by tensor, straight to the output file
            report = report_for(*compress_file(model, out, config=config, progress=cb, notice=notice,
                                               overwrite=force))
        else:
            result = run_compress(loaded, config=config, progress=cb, notice=notice)
            write_atomic(out, result.data, overwrite=force)
            report = build_report(result.container)
    _print_report(report, quiet=quiet, as_json=as_json, extra={"output": str(out)})


def _compress_auto(model: str, output: str | None, calib: str | None, calib_samples: int, max_drop: float | None,
                   min_cosine: float, dims: tuple[str, ...], zstd_level: int, jobs: int, force: bool, quiet: bool,
                   as_json: bool, kw: dict[str, Any]) -> None:
    """Automatic mode: measure sensitivity, choose settings within the budget, compress, verify."""
    from onnxdc.api import (
        AUTO_MIN_ELEMENTS,
        DEFAULT_DIM,
        Budget,
        build_report,
        check_output_path,
        compress_auto,
        defaulted_dims,
        load_data,
        load_model,
        model_input_files,
        parse_dims,
        recipe_toml,
        synthetic_inputs,
        write_atomic,
    )
    from onnxdc.errors import ModelError

    base = sharing_config({**kw, "min_elements": AUTO_MIN_ELEMENTS if kw["min_elements"] is None
                           else kw["min_elements"]})
    budget = Budget(max_drop=max_drop, min_agreement=None if max_drop is not None else 0.995, min_cosine=min_cosine)
    inputs = model_input_files(model, calib, kw.get("recipe"))
    out = check_output_path(output or _default_output(model, ".onnxdc"), force=force, inputs=inputs)
    recipe_out = check_output_path(str(out) + ".recipe.toml", force=force, inputs=inputs)
    loaded = load_model(model)
    notice = notice_callback(quiet)
    if calib is not None:
        data = load_data(calib, model=loaded, max_samples=calib_samples, notice=notice)
        source = f"calibration data {calib!r}"
    else:
        data = synthetic_inputs(loaded, samples=min(calib_samples, 128), dims=parse_dims(dims), seed=base.seed)
        source = "synthetic inputs"
        click.echo("onnxdc: warning: no --calib data: choosing settings on synthetic inputs built from the model's "
                   "input specs; real data measures accuracy far better", err=True)
    if not quiet and not as_json:
        click.echo("onnxdc: automatic mode: measuring every weight tensor's sensitivity; this takes seconds on "
                   "small models but can take long on large ones (--sparsity/--bits or --lossless skip it)",
                   err=True)
    try:
        with progress_callback(quiet or as_json, "measuring sensitivity") as cb:
            auto = compress_auto(loaded, base=base, data=data, budget=budget, max_samples=calib_samples,
                                 metadata={"calibration_source": source}, zstd_level=zstd_level, jobs=jobs,
                                 progress=cb, notice=notice)
    except ModelError as exc:
        guessed = defaulted_dims(loaded, parse_dims(dims)) if calib is None else []
        if not guessed:
            raise
        raise ModelError(f"{exc} (synthetic inputs set {', '.join(guessed)} to {DEFAULT_DIM}; give the "
                         f"model's sizes with --dim NAME=VALUE, or real inputs with --calib)") from None
    write_atomic(out, auto.result.data, overwrite=force)
    if auto.choice.rules:
        header = (f"onnxdc automatic settings for {Path(model).name} on {source}\n"
                  f"budget: {json.dumps(budget.to_json())}; reuse with: onnxdc compress MODEL --recipe FILE")
        write_atomic(recipe_out, recipe_toml(auto.choice.rules, header=header).encode(), overwrite=force)
    extra: dict[str, Any] = {"output": str(out), "mode": "auto", "budget_met": auto.budget_met,
                             "recipe": str(recipe_out) if auto.choice.rules else None}
    if auto.verified is not None:
        extra["calibration_eval"] = auto.verified.to_json()
    if not quiet and not as_json:
        if not auto.budget_met:
            click.echo("onnxdc: warning: no setting met the budget on the calibration set; every tensor was "
                       "stored losslessly", err=True)
        elif auto.choice.rules:
            click.echo("automatic settings (sparsity, bits) per tensor, written to " + str(recipe_out) + ":")
            for r in auto.choice.rules:
                click.echo(f"  {r.match}: sparsity {r.settings['sparsity']}, bits {r.settings['bits']}")
            if auto.verified is not None:
                click.echo("on held-out calibration samples: " + format_eval(auto.verified).replace("\n", "; "))
    _print_report(build_report(auto.result.container), quiet=quiet,
                  as_json=as_json, extra=extra)


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@output_option
@force_option
@quiet_option
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
def decompress(container: str, output: str | None, force: bool, quiet: bool, check: bool,
               external_data: bool, jobs: int, max_output_bytes: int | None, max_ratio: float | None) -> None:
    """Rebuild an ONNX model from CONTAINER (.onnxdc).

    A container that declares more output than --max-output-bytes, or more than --max-ratio times
    its own size, is refused before anything is written.
    """
    from onnxdc.api import check_model_quietly, check_output_path, decompress_file

    out = check_output_path(output or _default_output(container, ".decompressed.onnx"), force=force,
                            inputs=[container])
    limits = {k: v for k, v in (("max_output_bytes", max_output_bytes), ("max_ratio", max_ratio)) if v is not None}
    with progress_callback(quiet, "decompressing") as cb:
        decompress_file(container, out, external_data=True if external_data else None, progress=cb, jobs=jobs,
                        overwrite=force, **limits)
    if check:
        problem = check_model_quietly(out)
        if problem:
            click.echo(f"onnxdc: warning: onnx.checker rejects the output: {problem}", err=True)
    if not quiet:
        click.echo(f"wrote {out}")


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@json_option
@click.option("--all", "show_all", is_flag=True, help="List every tensor (default: the 30 largest).")
def inspect(container: str, as_json: bool, show_all: bool) -> None:
    """Show CONTAINER's version, settings, stage sizes and per-tensor table, without decoding it."""
    from onnxdc.api import build_report, printable, read_container

    c = read_container(read_input(container))
    info = {"format_version": f"{c.version[0]}.{c.version[1]}", "producer": c.header.producer,
            "streams": len(c.header.streams), "metadata": c.header.metadata}
    if not as_json:
        click.echo(f"onnxdc container {info['format_version']}, written by {printable(c.header.producer)}, "
                   f"{len(c.header.tensors)} tensors in {len(c.header.streams)} streams")
        click.echo(f"settings: {json.dumps(c.header.metadata.get('settings', {}), sort_keys=True)}")
        click.echo("")
    _print_report(build_report(c), quiet=False, as_json=as_json, top=None if show_all else 30, extra=info)


@main.command()
@click.argument("container", type=click.Path(dir_okay=False))
@json_option
@click.option("--all", "show_all", is_flag=True, help="List every tensor (default: the 30 largest).")
def report(container: str, as_json: bool, show_all: bool) -> None:
    """Print the stage-by-stage size report of CONTAINER."""
    from onnxdc.api import build_report, read_container

    _print_report(build_report(read_container(read_input(container))), quiet=False, as_json=as_json,
                  top=None if show_all else 30)


def format_eval(r: Any) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    lines = [f"samples: {r.samples}"]
    if r.reference_top1 is not None:
        lines.append(f"top-1: reference {pct(r.reference_top1)}  candidate {pct(r.candidate_top1)}  "
                     f"(drop {r.top1_drop_points:+.2f} points)")
        lines.append(f"top-5: reference {pct(r.reference_top5)}  candidate {pct(r.candidate_top5)}")
    if r.agreement_top1 is not None:
        lines.append(f"top-1 agreement with reference: {pct(r.agreement_top1)}")
    for o in r.outputs:
        lines.append(f"output {o.name!r}: cosine {o.cosine:.6f}  SNR {o.snr_db:.2f} dB  max abs error {o.max_abs_error:.4g}")
    return "\n".join(lines)


def read_input(path: str) -> bytes:
    from onnxdc.api import read_regular_file
    from onnxdc.errors import ContainerError

    return read_regular_file(path, error=ContainerError, what="container")


def _print_report(report: Any, *, quiet: bool, as_json: bool, top: int | None = 30,
                  extra: dict[str, Any] | None = None) -> None:
    from onnxdc.api import format_report

    if as_json:
        click.echo(json.dumps({**(extra or {}), **report.to_json()}, indent=2))
    elif not quiet:
        if extra and "output" in extra:
            click.echo(f"wrote {extra['output']}")
        click.echo(format_report(report, top=top))
