"""The ``onnxdc`` command line: a thin click layer over the library.

Commands parse options, build config dataclasses, call the library and print its reports. Errors the
library anticipates (:class:`~onnxdc.errors.OnnxdcError`) become one line on stderr: exit 1 for bad
data, exit 2 for bad usage or impossible settings. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from onnxdc._version import __version__
from onnxdc.cli.progress import progress_callback
from onnxdc.errors import ConfigError, OnnxdcError
from onnxdc.threads import usable_cores

__all__ = ["default_output", "force_option", "format_eval", "jobs_option", "json_option", "main", "notice_callback",
           "output_option", "print_report", "progress_callback", "quiet_option", "sharing_config", "sharing_options"]


#: One example per command, on the shipped sample models: shown under ``onnxdc --help`` and as
#: the epilog of each command's ``--help`` (a command added without one fails tests/test_cli_conventions.py).
EXAMPLES: dict[str, str] = {
    "compress": "onnxdc compress models/lenet5.onnx --calib models/lenet5.calib.npz -o lenet5.onnxdc",
    "eval": "onnxdc eval models/lenet5.onnx lenet5.onnxdc --data models/lenet5.test.npz --max-drop 0.5",
    "decompress": "onnxdc decompress lenet5.onnxdc -o lenet5.decompressed.onnx",
    "inspect": "onnxdc inspect lenet5.onnxdc --all",
    "report": "onnxdc report lenet5.onnxdc --json",
    "sensitivity": "onnxdc sensitivity models/lenet5.onnx --calib models/lenet5.calib.npz --csv sens.csv",
    "compare-coders": "onnxdc compare-coders models/lenet5.onnx --sparsity 0.9 --bits 5",
}


class _Group(click.Group):
    """A group that turns library errors into one line and an exit code, and shows every
    command's example (:data:`EXAMPLES`) in its help."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        example = EXAMPLES.get(name or cmd.name or "")
        if example is not None and not cmd.epilog:
            cmd.epilog = f"\b\nExample:\n  {example}"
        super().add_command(cmd, name)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = set(self.list_commands(ctx))
        rows = [example for name, example in EXAMPLES.items() if name in commands]  # in workflow order
        if rows:
            with formatter.section("Examples (one per command; COMMAND --help for its options)"):
                for example in rows:  # unwrapped: a command line is copied, not read as prose
                    formatter.write(f"{'':>{formatter.current_indent}}{example}\n")
        super().format_epilog(ctx, formatter)

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


def default_output(path: str, suffix: str) -> str:
    p = Path(path)
    return str(p.with_name(p.stem + suffix))


def notice_callback(quiet: bool) -> Any:
    """A library notice callback printing ``onnxdc: warning: ...`` on stderr (None when quiet)."""
    if quiet:
        return None
    return lambda message: click.echo(f"onnxdc: warning: {message}", err=True)


output_option = click.option("-o", "--output", type=click.Path(dir_okay=False), help="Output file.")
force_option = click.option("--force", is_flag=True, help="Overwrite an existing output file.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")


def jobs_option(what: str) -> Any:
    """``-j/--jobs``: threads for ``what`` and onnxruntime's intra-op threads (default: usable cores)."""
    return click.option("-j", "--jobs", type=click.IntRange(1), default=usable_cores(),
                        show_default="usable cores",
                        help=f"Threads: {what}, and onnxruntime's intra-op threads (one inter-op thread; "
                             f"numpy's BLAS always runs one). The output is the same for any value.")


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


def data_options(func: Any) -> Any:
    """``--sample-axis`` and ``--shared``: how the arrays of a data source feed the model's inputs."""
    options = [
        click.option("--sample-axis", "sample_axes", multiple=True, metavar="NAME=AXIS",
                     help="The model's sample (batch) axis of input NAME when it is not 0, e.g. state=1; the "
                          "data hold that input's samples on the same axis."),
        click.option("--shared", "shared_inputs", multiple=True, metavar="NAME",
                     help="Input NAME is one value fed to every sample (inputs of rank 0 are, unasked)."),
    ]
    for opt in reversed(options):
        func = opt(func)
    return func


def data_layout(kw: dict[str, Any]) -> Any:
    """The :class:`~onnxdc.api.Layout` of the ``data_options`` in ``kw``."""
    from onnxdc.api import Layout

    axes: dict[str, int] = {}
    for item in kw.get("sample_axes", ()):
        name, sep, value = item.rpartition("=")
        if not sep or not name or not value.strip().isdigit():
            raise click.BadParameter(f"expected NAME=AXIS with AXIS an integer >= 0, got {item!r}",
                                     param_hint="--sample-axis")
        if name in axes:
            raise click.BadParameter(f"input {name!r} given twice", param_hint="--sample-axis")
        axes[name] = int(value)
    return Layout(axes, frozenset(kw.get("shared_inputs", ())))


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


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def top1_lines(r: Any) -> list[str]:
    """An evaluation's sample count and top-1 / top-5 lines (the start of every eval summary)."""
    lines = [f"samples: {r.samples}"]
    if r.reference_top1 is not None:
        lines.append(f"top-1: reference {pct(r.reference_top1)}  candidate {pct(r.candidate_top1)}  "
                     f"(drop {r.top1_drop_points:+.2f} points)")
        lines.append(f"top-5: reference {pct(r.reference_top5)}  candidate {pct(r.candidate_top5)}")
    return lines


def format_eval(r: Any) -> str:
    lines = top1_lines(r)
    if r.agreement_top1 is not None:
        lines.append(f"top-1 agreement with reference: {pct(r.agreement_top1)}")
    for o in r.outputs:
        per = (f"per-sample mean {o.cosine_mean:.6f} min {o.cosine_min:.6f}" if o.per_sample
               else "per-sample: none (axis 0 is not the samples: the whole output is one)")
        lines.append(f"output {o.name!r}: cosine {o.cosine:.6f}  {per}  SNR {o.snr_db:.2f} dB  "
                     f"max abs error {o.max_abs_error:.4g}")
    if r.metric_ok is not None:
        lines.append(f"metric: {'acceptable' if r.metric_ok else 'not acceptable'}")
    return "\n".join(lines)


def print_report(report: Any, *, quiet: bool, as_json: bool, top: int | None = 30,
                  extra: dict[str, Any] | None = None) -> None:
    from onnxdc.api import format_report

    if as_json:
        click.echo(json.dumps({**(extra or {}), **report.to_json()}, indent=2))
    elif not quiet:
        if extra and "output" in extra:
            click.echo(f"wrote {extra['output']}")
        click.echo(format_report(report, top=top))
