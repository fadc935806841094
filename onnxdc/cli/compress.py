"""The ``compress`` command: options to a :class:`~onnxdc.api.CompressConfig` (or, in automatic mode,
a base :class:`~onnxdc.api.SharingConfig` and a :class:`~onnxdc.api.Budget`), one API call, the report.
"""

from __future__ import annotations

from typing import Any

import click

from onnxdc.cli.gating import gate_options
from onnxdc.cli.main import (
    data_layout,
    data_options,
    default_output,
    force_option,
    format_eval,
    jobs_option,
    json_option,
    main,
    notice_callback,
    output_option,
    print_report,
    progress_callback,
    quiet_option,
    sharing_config,
    sharing_options,
)


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@output_option
@click.option("--lossless", is_flag=True, help="Store every tensor exactly (no pruning or sharing).")
@sharing_options
@click.option("--calib", type=click.Path(),
              help="Calibration inputs (.npz, .npy, or a folder of them): prune and share so each layer keeps "
                   "its outputs.")
@data_options
@click.option("--max-drop", type=click.FloatRange(0.0),
              help="Automatic mode: top-1 drop allowed on the calibration set, in points (against labels, "
                   "else agreement with the original); replaces the agreement rule.")
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0),
              help="Automatic mode: top-1 agreement with the original to keep, as a fraction.  [default: 0.995 "
                   "without --max-drop]")
@click.option("--min-cosine", type=click.FloatRange(-1.0, 1.0), default=0.999, show_default=True,
              help="Automatic mode: mean over samples of each sample's output cosine, for every output.")
@click.option("--min-sample-cosine", type=click.FloatRange(-1.0, 1.0),
              help="Automatic mode: lowest per-sample output cosine, for every output (the worst checked "
                   "input; off by default).")
@gate_options
@click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE",
              help="Value of a symbolic input dimension for synthetic calibration inputs.")
@click.option("--calib-samples", type=click.IntRange(1), default=512, show_default=True,
              help="Calibration samples used at most.")
@click.option("--zstd-level", type=click.IntRange(1, 22), default=19, show_default=True,
              help="zstd level tried on lossless byte planes.")
@jobs_option("tensors coded in parallel")
@force_option
@quiet_option
@json_option
def compress(model: str, output: str | None, lossless: bool, calib: str | None, calib_samples: int,
             max_drop: float | None, min_agreement: float | None, min_cosine: float, min_sample_cosine: float | None,
             gate_specs: tuple[str, ...], skip_inapplicable: bool, dims: tuple[str, ...], zstd_level: int, jobs: int,
             force: bool, quiet: bool, as_json: bool, **kw: Any) -> None:
    """Compress MODEL (.onnx) into an .onnxdc container.

    Manual mode (--sparsity / --std-threshold / --bits / --recipe): the selected weights are
    pruned, weight-shared and entropy-coded as told, fitted to --calib data when given.
    Automatic mode (no such option): per-tensor sparsity and bits are chosen from measured
    sensitivity on --calib data (or synthetic inputs) so the calibration-set budget holds, and
    written as a recipe beside the output. --lossless stores every tensor exactly.

    \b
    Default budget: mean per-sample output cosine >= 0.999 and top-1
    agreement >= 99.5% on held-out calibration samples. --gate adds gates
    naming outputs and metrics, as eval's. A top-1 rule on an output with no
    class axis is an error when asked for (--max-drop, --min-agreement, a
    --gate without '?'), a warning when it is the default.
    Threads: -j N sets the coding threads and onnxruntime's intra-op
    threads (default: the usable cores); the bytes written do not depend on it.
    """
    from onnxdc.api import session_threads

    ctx = click.get_current_context()
    budget_opts = ("max_drop", "min_agreement", "min_cosine", "min_sample_cosine", "gate_specs", "skip_inapplicable")
    given = {o for o in budget_opts if ctx.get_parameter_source(o) is not click.core.ParameterSource.DEFAULT}
    with session_threads(jobs):
        _compress(model, output, lossless, calib, calib_samples, max_drop, min_agreement, min_cosine,
                  min_sample_cosine, (gate_specs, skip_inapplicable), given, dims, zstd_level, jobs, force, quiet,
                  as_json, kw)


def _compress(model: str, output: str | None, lossless: bool, calib: str | None, calib_samples: int,
              max_drop: float | None, min_agreement: float | None, min_cosine: float,
              min_sample_cosine: float | None, gating: tuple[tuple[str, ...], bool], given: set[str],
              dims: tuple[str, ...], zstd_level: int, jobs: int, force: bool, quiet: bool, as_json: bool,
              kw: dict[str, Any]) -> None:
    manual = any(kw.get(k) is not None for k in ("sparsity", "std_threshold", "bits")) or bool(kw.get("recipe"))
    if not manual and not lossless:
        from onnxdc.api import Budget, parse_gate

        budget = Budget(max_drop=max_drop, min_cosine=min_cosine, min_sample_cosine=min_sample_cosine,
                        min_agreement=min_agreement if min_agreement is not None
                        else None if max_drop is not None else 0.995,
                        gates=tuple(parse_gate(g) for g in gating[0]), skip_inapplicable=gating[1])
        _compress_auto(model, output, calib, calib_samples, budget, given, dims, zstd_level, jobs, force,
                       quiet, as_json, kw)
        return
    budget_given = sorted(given - {"max_drop"})
    if budget_given:
        flags = ", ".join("--" + o.removesuffix("_specs").replace("_", "-") for o in budget_given)
        raise click.UsageError(f"{flags} set the automatic mode's budget; drop --sparsity/--std-threshold/--bits/"
                               f"--recipe/--lossless")
    from onnxdc.api import CompressConfig, check_output_path, compress_path, model_input_files

    sharing = sharing_config(kw) if manual else None  # the recipe, if any, read here and only here
    if lossless and (manual or calib or max_drop is not None):
        raise click.UsageError("--lossless cannot be combined with --sparsity, --std-threshold, --bits, --recipe, "
                               "--calib or --max-drop")
    if manual and max_drop is not None:
        raise click.UsageError("--max-drop chooses settings automatically; drop --sparsity/--std-threshold/--bits/--recipe")
    if sharing is None:
        sharing_config(kw)  # validate every option, also the ones lossless mode does not use (no recipe here)
    out = check_output_path(output or default_output(model, ".onnxdc"), force=force,
                            inputs=model_input_files(model, calib, kw.get("recipe")))
    config = CompressConfig(sharing=sharing, calib_samples=calib_samples, zstd_level=zstd_level, jobs=jobs)
    with progress_callback(quiet or as_json, "compressing") as cb:
        report = compress_path(model, out, config=config, calib=calib, progress=cb, notice=notice_callback(quiet),
                               overwrite=force, layout=data_layout(kw))
    print_report(report, quiet=quiet, as_json=as_json, extra={"output": str(out)})


def _compress_auto(model: str, output: str | None, calib: str | None, calib_samples: int, budget: Any,
                   given: set[str], dims: tuple[str, ...], zstd_level: int, jobs: int, force: bool, quiet: bool,
                   as_json: bool, kw: dict[str, Any]) -> None:
    """Automatic mode: options to configs, one call to :func:`onnxdc.api.compress_auto_path`, the report."""
    from onnxdc.api import (
        AUTO_MIN_ELEMENTS,
        check_output_path,
        compress_auto_path,
        model_input_files,
        parse_dims,
    )

    base = sharing_config({**kw, "min_elements": AUTO_MIN_ELEMENTS if kw["min_elements"] is None
                           else kw["min_elements"]})
    inputs = model_input_files(model, calib, kw.get("recipe"))
    out = check_output_path(output or default_output(model, ".onnxdc"), force=force, inputs=inputs)
    recipe_out = check_output_path(str(out) + ".recipe.toml", force=force, inputs=inputs)
    parsed_dims = parse_dims(dims) if calib is None else {}  # --dim only shapes synthetic inputs

    def on_inputs(chosen: Any) -> None:
        if chosen.synthetic and not quiet:
            click.echo("onnxdc: warning: no --calib data: choosing settings on synthetic inputs built from the "
                       "model's input specs; real data measures accuracy far better", err=True)
        if not quiet and not as_json:
            click.echo("onnxdc: automatic mode: fitting every weight tensor's quantizer to the data and checking "
                       "the choice on held-out samples; seconds on small models, minutes on large ones "
                       "(--sparsity/--bits or --lossless skip it)", err=True)

    with progress_callback(quiet or as_json, log=True) as cb:  # the library's labels are the phases
        done = compress_auto_path(model, out, recipe_out, base=base, budget=budget, calib=calib,
                                  layout=data_layout(kw), dims=parsed_dims,
                                  max_samples=calib_samples, zstd_level=zstd_level, jobs=jobs, overwrite=force,
                                  progress=cb, notice=notice_callback(quiet), explicit=given, on_inputs=on_inputs)
    auto = done.auto
    extra: dict[str, Any] = {"output": str(out), "mode": "auto", "budget_met": auto.budget_met,
                             "recipe": str(done.recipe) if done.recipe is not None else None,
                             "reuse_command": done.reuse}
    if auto.verified is not None:
        extra["calibration_eval"] = auto.verified.to_json()
    if not auto.budget_met and not quiet:  # a warning: on stderr, so --json keeps it
        click.echo("onnxdc: warning: no setting met the budget on the calibration set; every tensor was "
                   "stored losslessly", err=True)
    if not quiet and not as_json and auto.budget_met and auto.choice.rules:
        click.echo("automatic settings (zero fraction, index bits) per tensor, written to " + str(recipe_out) + ":")
        for r in auto.choice.rules:
            click.echo(f"  {r.match}: " + ("lossless" if r.settings.get("lossless") else
                                           f"sparsity {r.settings['sparsity']}, bits {r.settings['bits']}"))
        if auto.verified is not None:
            click.echo("on held-out calibration samples: " + format_eval(auto.verified).replace("\n", "; "))
        if done.reuse is not None:
            click.echo(f"reuse with: {done.reuse}")
    print_report(done.report, quiet=quiet, as_json=as_json, extra=extra)
