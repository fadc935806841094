"""Analysis commands: ``compare-coders``, ``sensitivity`` and ``eval``.

They measure rather than write containers; the click layer stays thin and every number comes from
the library. Registered on :data:`onnxdc.cli.main.main` when :mod:`onnxdc.cli` is imported.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from onnxdc.cli.gating import build_gates, format_eval_table, gate_options
from onnxdc.cli.main import (
    data_layout,
    data_options,
    force_option,
    jobs_option,
    json_option,
    main,
    notice_callback,
    progress_callback,
    sharing_config,
    sharing_options,
)


@main.command("compare-coders")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--study", is_flag=True,
              help="The coder study's table: codebook, fixed-width and coded bytes of the study's coders, "
                   "chains and the new ones, with the order-0 entropies.")
@sharing_options
@json_option
def compare_coders_cmd(model: str, study: bool, as_json: bool, **kw: Any) -> None:
    """Size MODEL's index and position streams under every coder and two-coder chain."""
    from onnxdc.api import coder_study, compare_coders, format_comparison, format_study, load_model

    if study:
        table = coder_study(load_model(model), sharing=sharing_config(kw))
        click.echo(json.dumps(table.to_json(), indent=2) if as_json else format_study(table))
        return
    rows = compare_coders(load_model(model), sharing=sharing_config(kw))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in rows], indent=2))
    else:
        click.echo(format_comparison(rows))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", type=click.Path(),
              help="Calibration inputs (.npz, .npy, or a folder of them; else synthetic inputs).")
@data_options
@click.option("--calib-samples", type=click.IntRange(1), default=512, show_default=True)
@click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE", help="Symbolic dimension for synthetic inputs.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the table as CSV.")
@sharing_options
@force_option
@json_option
def sensitivity(model: str, calib: str | None, calib_samples: int, dims: tuple[str, ...], csv_path: str | None,
                force: bool, as_json: bool, **kw: Any) -> None:
    """Measure each weight tensor alone: output cosine, agreement and size against sparsity and bits."""
    from onnxdc.api import check_output_path, model_input_files, parse_dims, sensitivity_path, write_atomic

    base = sharing_config(kw)
    csv_out = check_output_path(csv_path, force=force, inputs=model_input_files(model, calib, kw.get("recipe"))) \
        if csv_path else None

    def on_inputs(chosen: Any) -> None:
        if chosen.synthetic:
            click.echo("onnxdc: warning: no --calib data: measuring on synthetic inputs", err=True)

    with progress_callback(as_json, "measuring") as cb:
        rows = sensitivity_path(model, base=base, calib=calib, layout=data_layout(kw),
                                dims=parse_dims(dims) if calib is None else {},
                                max_samples=calib_samples, progress=cb, notice=notice_callback(False),
                                on_inputs=on_inputs)
    if csv_out is not None:
        cols = ["tensor", "sparsity", "bits", "est_bytes", "cosine", "agreement", "top1", "rel_error"]
        text = ",".join(cols) + "\n" + "".join(",".join(_csv(r[c]) for c in cols) + "\n" for r in rows)
        write_atomic(csv_out, text.encode(), overwrite=force)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'tensor':<32} {'sparsity':>8} {'bits':>4} {'est bytes':>10} {'cosine':>9} {'agreement':>9} {'top-1':>7}")
    for r in rows:
        agree = "-" if r["agreement"] is None else f"{100 * r['agreement']:.2f}%"
        top1 = "-" if r["top1"] is None else f"{100 * r['top1']:.2f}%"
        click.echo(f"{r['tensor'][:32]:<32} {r['sparsity']:>8.2f} {r['bits']:>4} {r['est_bytes']:>10,} "
                   f"{r['cosine']:>9.5f} {agree:>9} {top1:>7}")


def _csv(v: Any) -> str:
    if v is None:
        return ""
    s = str(v)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


@main.command("eval")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@click.option("--data", "data_path", type=click.Path(),
              help=".npz of inputs keyed by input name, plus optional 'labels' (or a .npy, or a folder of them).")
@data_options
@click.option("--random", "random_n", type=click.IntRange(1),
              help="No data at hand: compare on N random inputs built from the model's input specs.")
@click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE", help="Symbolic dimension for --random inputs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --random inputs.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@gate_options
@click.option("--max-drop", type=click.FloatRange(0.0),
              help="Gate 'top1-drop<=PTS' on the first output: top-1 fall in points (against labels, else "
                   "agreement).")
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0),
              help="Gate 'agreement>=F' on the first output: top-1 agreement with the reference.")
@click.option("--min-cosine", type=click.FloatRange(-1.0, 1.0),
              help="Gate '*:cosine>=F': every output's mean per-sample cosine.")
@click.option("--min-sample-cosine", type=click.FloatRange(-1.0, 1.0),
              help="Gate '*:min-cosine>=F': every output's lowest per-sample cosine.")
@jobs_option("onnxruntime's runs of both models")
@json_option
def eval_cmd(reference: str, candidate: str, data_path: str | None, random_n: int | None, dims: tuple[str, ...],
             seed: int, batch_size: int, gate_specs: tuple[str, ...], skip_inapplicable: bool, max_drop: float | None,
             min_agreement: float | None, min_cosine: float | None, min_sample_cosine: float | None, jobs: int,
             as_json: bool, **kw: Any) -> None:
    """Compare CANDIDATE (.onnx or .onnxdc) with REFERENCE (.onnx) on --data, with onnxruntime.

    Per output: the cosine of the whole output, the mean and lowest per-sample cosine (samples on
    axis 0), SNR, max abs error and, on outputs of logits, top-1 agreement; top-1 and top-5
    against labels on a first output of logits. Gates (--gate and the shorthands) name the outputs
    and metric they judge; a gate that cannot judge an output fails unless it ends in '?' or
    --skip-inapplicable is given.

    \b
    Exit codes: 0 every gate passed, 3 a gate failed or could not judge,
    1 bad data or models, 2 bad usage (a malformed gate, an unknown output).
    """
    from onnxdc.api import (
        check_gate_outputs,
        evaluate,
        judge_gates,
        load_data,
        load_model,
        parse_dims,
        session_threads,
        synthetic_inputs,
    )

    if (data_path is None) == (random_n is None):
        raise click.UsageError("give exactly one of --data FILE and --random N")
    gates = build_gates(gate_specs, skip_inapplicable=skip_inapplicable, max_drop=max_drop,
                        min_agreement=min_agreement, min_cosine=min_cosine, min_sample_cosine=min_sample_cosine)
    ref_model = load_model(reference)
    check_gate_outputs(gates, [o.name for o in ref_model.graph.output])
    cand_model = _load_any(candidate)  # both models read and checked before the data is
    if data_path is not None:
        data = load_data(data_path, model=ref_model, layout=data_layout(kw), notice=notice_callback(False))
    else:
        data = synthetic_inputs(ref_model, samples=random_n, dims=parse_dims(dims), seed=seed,
                                layout=data_layout(kw))
    with session_threads(jobs):
        result = evaluate(ref_model, cand_model, data, batch_size=batch_size, gates=gates)
    verdicts = judge_gates(gates, result)
    if as_json:
        click.echo(json.dumps({**result.to_json(), "gates": [v.to_json() for v in verdicts],
                               "passed": all(v.status != "fail" for v in verdicts)}, indent=2))
    else:
        click.echo(format_eval_table(result, verdicts))
    for v in verdicts:
        if v.status == "skip":
            click.echo(f"onnxdc: warning: {v.describe()}", err=True)
    failed = [v for v in verdicts if v.status == "fail"]
    for v in failed:
        click.echo(f"onnxdc: {v.describe()}", err=True)
    if failed:
        sys.exit(3)


def _load_any(path: str) -> Any:
    """Load an .onnx model, or decode an .onnxdc container in memory."""
    from onnxdc.api import MAGIC, load_model
    from onnxdc.api import decompress as run_decompress

    data = read_input(path)
    if data[: len(MAGIC)] == MAGIC:
        return run_decompress(data)
    return load_model(path)


def read_input(path: str) -> bytes:
    """The bytes of a container (or model) file given to ``eval``."""
    from onnxdc.api import ContainerError, read_regular_file

    return read_regular_file(path, error=ContainerError, what="container")
