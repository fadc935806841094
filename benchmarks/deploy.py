"""Deployable outputs: file size, onnxruntime session memory and latency of ``decompress --as
float|qdq|palettized``, and their accuracy against the original model.

For each sample model in ``models/`` two containers are made: the automatic mode with
``--calib models/M.calib.npz`` (its weights on uniform grids: what ``qdq`` expresses) and manual
Deep Compression ``--sparsity 0.9 --bits 5`` (k-means codebooks: what ``palettized`` expresses).
Each is decoded to the three forms, and every model file (the original too) is measured in a fresh
subprocess, so that memory figures belong to that session alone:

- *RSS*: resident memory after creating the session and running it once, minus before (the
  interpreter, numpy, onnxruntime and the input already loaded); *peak*: the same for VmHWM;
- *latency*: median of ``--runs`` runs on one test sample (one intra-op thread, so the shared
  machine's load moves it less);
- *folded*: whether onnxruntime turned the weights back into float initializers at load: the
  optimized graph it saves (``optimized_model_filepath``) is read back and its DequantizeLinear /
  Gather-on-codebook nodes counted (none left: folded).

Each at three settings: onnxruntime's default optimization level (``ORT_ENABLE_ALL``, *all*), the
same without constant folding (*no fold*: session config entry
``optimization.disable_specified_optimizers = ConstantFolding``), and optimizations off
(``ORT_DISABLE_ALL``, *off*). Accuracy: ``onnxdc.api.evaluate`` of each form against the original on
``models/M.test.npz`` (top-1 against the labels, top-1 agreement, the lowest over outputs of the
mean per-sample cosine).

``--big`` adds a synthetic 10M-parameter MLP (1024-2048-2048-2048-10, Laplacian weights rounded
to a grid of step 0.002, seeded), where weights, not onnxruntime's own arenas, dominate memory. It
gets one container, manual weight sharing at 8 bits (``--bits 8``, no pruning), whose k-means
keeps the grid's at most 255 values exactly: the same tensors are then both a grid (``qdq``) and a
palette. (The automatic mode needs 13 minutes on it on this machine, and on random weights and
inputs it keeps every tensor exact: nothing to deploy.)

``--int4`` measures instead, per sample model, the model with its opset number raised from 17 to 21 (IR 10;
its operators changed only in the types they accept between the two: onnx.checker and onnxruntime
run it), compressed by the automatic mode the same way and written ``--as qdq``, where grids of
levels -8..7 are packed as int4 (onnxdc itself never raises an opset).

    python benchmarks/deploy.py [--runs 200] [--big] [--int4] [--out benchmarks/deploy.md] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxdc import api

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("lenet300", "lenet5", "crnn", "yolo")
FORMS = ("float", "qdq", "palettized")
LEVELS = ("all", "nofold", "disable")
#: The step of the synthetic MLP's weight grid.
GRID_STEP = 0.002

#: Runs in a fresh interpreter: argv = model, level, runs, input .npz, optimized-model path.
PROBE = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort

def status():
    out = {}
    for line in open('/proc/self/status'):
        key, _, value = line.partition(':')
        if key in ('VmRSS', 'VmHWM'):
            out[key] = int(value.split()[0]) * 1024
    return out

path, level, runs, inputs, optimized = sys.argv[1:]
with np.load(inputs) as z:
    feed = {k: z[k] for k in z.files}
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
so.graph_optimization_level = {'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                               'nofold': ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                               'disable': ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[level]
if level == 'nofold':
    so.add_session_config_entry('optimization.disable_specified_optimizers', 'ConstantFolding')
so.optimized_model_filepath = optimized
before = status()
sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
sess.run(None, feed)
after = status()
times = []
for _ in range(int(runs)):
    t = time.perf_counter()
    sess.run(None, feed)
    times.append(time.perf_counter() - t)
print(json.dumps({'rss': after['VmRSS'] - before['VmRSS'], 'peak': after['VmHWM'] - before['VmHWM'],
                  'latency_ms': 1000 * float(np.median(times))}))
"""


def probe(model: Path, level: str, runs: int, inputs: Path, work: Path) -> dict:
    """One fresh session of ``model`` at ``level``: memory, latency and what is left unfolded."""
    optimized = work / f"{model.stem}.{level}.opt.onnx"
    out = subprocess.run([sys.executable, "-c", PROBE, str(model), level, str(runs), str(inputs), str(optimized)],
                         check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["unfolded"] = unfolded(onnx.load(optimized))
    return row


def unfolded(model: onnx.ModelProto) -> int:
    """Weight-producing nodes left in an optimized graph: DequantizeLinear, and Gather whose
    data is an initializer (a codebook)."""
    inits = {t.name for t in model.graph.initializer}
    return sum(1 for n in model.graph.node
               if n.op_type == "DequantizeLinear" or (n.op_type == "Gather" and n.input[0] in inits
                                                      and n.input[0].endswith("_codebook")))


def accuracy(reference: onnx.ModelProto, candidate: Path, data: dict[str, np.ndarray]) -> dict:
    r = api.evaluate(reference, onnx.load(candidate), data)
    return {"top1": r.candidate_top1, "reference_top1": r.reference_top1, "agreement": r.agreement_top1,
            "cosine": min(o.cosine_mean for o in r.outputs)}


def synthetic_mlp(work: Path) -> str:
    """A 10M-parameter MLP and random calibration and test inputs beside it; returns its name."""
    rng = np.random.default_rng(0)
    dims = [1024, 2048, 2048, 2048, 10]
    nodes, inits, x = [], [], "x"
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        w = np.clip(np.rint(rng.laplace(scale=0.02, size=(b, a)) / GRID_STEP), -127, 127) * GRID_STEP
        inits += [numpy_helper.from_array(w.astype(np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"fc{i}.bias")]
        y = f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y], transB=1))
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [y], [y + "r"]))
            y += "r"
        x = y
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, work / "mlp.onnx")
    np.savez(work / "mlp.calib.npz", x=rng.normal(size=(256, 1024)).astype(np.float32))
    np.savez(work / "mlp.test.npz", x=rng.normal(size=(256, 1024)).astype(np.float32))
    return "mlp"


def containers(name: str, src: Path, work: Path) -> dict[str, Path]:
    """The automatic (with calibration data) and manual Deep Compression containers of a model."""
    model = src / f"{name}.onnx"
    auto = work / f"{name}.auto.onnxdc"
    api.compress_auto_path(model, auto, work / f"{name}.recipe.toml",
                           base=api.SharingConfig(min_elements=api.AUTO_MIN_ELEMENTS),
                           budget=api.Budget(min_agreement=0.995), calib=src / f"{name}.calib.npz", overwrite=True)
    manual = work / f"{name}.dc.onnxdc"
    config = api.CompressConfig(sharing=api.SharingConfig(sparsity=0.9, bits=5))
    api.compress_path(model, manual, config=config, overwrite=True)
    return {"auto": auto, "dc": manual}


def grid_container(name: str, src: Path, work: Path) -> dict[str, Path]:
    """The synthetic MLP's one container: 8-bit weight sharing, no pruning."""
    out = work / f"{name}.bits8.onnxdc"
    api.compress_path(src / f"{name}.onnx", out, config=api.CompressConfig(sharing=api.SharingConfig(bits=8)),
                      overwrite=True)
    return {"bits8": out}


def int4_rows(name: str, src: Path, work: Path, runs: int) -> list[dict]:
    """The opset-21 copy of a sample model: its automatic container, written ``--as qdq``."""
    model = api.load_model(src / f"{name}.onnx")
    model.opset_import[0].version = 21
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    raised = work / f"{name}.opset21.onnx"
    onnx.save(model, raised)
    container = work / f"{name}.opset21.auto.onnxdc"
    api.compress_auto_path(raised, container, work / f"{name}.opset21.recipe.toml",
                           base=api.SharingConfig(min_elements=api.AUTO_MIN_ELEMENTS),
                           budget=api.Budget(min_agreement=0.995), calib=src / f"{name}.calib.npz", overwrite=True)
    data = api.load_data(src / f"{name}.test.npz", model=model)
    one = work / f"{name}.one.npz"
    np.savez(one, **{k: v[:1] for k, v in data.items() if k != "labels"})
    rows = []
    for form in ("float", "qdq"):
        out = work / f"{name}.opset21.{form}.onnx"
        report = api.deploy_file(container, out, form=form, overwrite=True)
        onnx.checker.check_model(onnx.load(out), full_check=True)
        rows.append({"model": name, "container": "auto, opset 21", "container_bytes": container.stat().st_size,
                     "form": form if form == "float" else f"qdq ({sum(t.form.startswith('int4') for t in report.rewritten)} int4)",
                     "bytes": out.stat().st_size, "rewritten": len(report.rewritten),
                     "kept_float": len(report.kept_float), **accuracy(api.load_model(src / f"{name}.onnx"), out, data),
                     **{lv: probe(out, lv, runs, one, work) for lv in LEVELS}})
    return rows


def measure(name: str, src: Path, work: Path, runs: int, make: Callable[[str, Path, Path], dict[str, Path]]
            = containers) -> list[dict]:
    data = api.load_data(src / f"{name}.test.npz", model=api.load_model(src / f"{name}.onnx"))
    one = work / f"{name}.one.npz"
    np.savez(one, **{k: v[:1] for k, v in data.items() if k != "labels"})
    original = src / f"{name}.onnx"
    reference = api.load_model(original)
    rows = [{"model": name, "container": "-", "form": "original", "bytes": original.stat().st_size,
             **{lv: probe(original, lv, runs, one, work) for lv in LEVELS}}]
    for kind, path in make(name, src, work).items():
        for form in FORMS:
            out = work / f"{name}.{kind}.{form}.onnx"
            report = api.deploy_file(path, out, form=form, overwrite=True)
            onnx.checker.check_model(onnx.load(out), full_check=True)
            rows.append({"model": name, "container": kind, "container_bytes": path.stat().st_size, "form": form,
                         "bytes": out.stat().st_size, "rewritten": len(report.rewritten),
                         "kept_float": len(report.kept_float), **accuracy(reference, out, data),
                         **{lv: probe(out, lv, runs, one, work) for lv in LEVELS}})
    return rows


def table(rows: list[dict]) -> str:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    head = ("| model | container | form | file bytes | rewritten / kept float | RSS MB (all / no fold / off) | "
            "peak MB (all / no fold / off) | latency ms (all / no fold / off) | weight nodes left (all / no fold / off) "
            "| top-1 | agreement | mean cosine |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        p = [r[lv] for lv in LEVELS]
        mb = 1 << 20
        counts = "-" if r["form"] in ("original", "float") else f"{r['rewritten']} / {r['kept_float']}"
        rss = " / ".join(f"{x['rss'] / mb:.1f}" for x in p)
        peak = " / ".join(f"{x['peak'] / mb:.1f}" for x in p)
        latency = " / ".join(f"{x['latency_ms']:.3f}" for x in p)
        left = " / ".join(str(x["unfolded"]) for x in p)
        lines.append(
            f"| {r['model']} | {r['container']} | {r['form']} | {r['bytes']:,} | {counts} | {rss} | {peak} | "
            f"{latency} | {left} | "
            f"{pct(r.get('top1'))} | {pct(r.get('agreement'))} | "
            f"{'-' if 'cosine' not in r else format(r['cosine'], '.6f')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--big", action="store_true", help="add the synthetic 10M-parameter MLP")
    ap.add_argument("--int4", action="store_true", help="measure the sample models raised to opset 21 instead")
    ap.add_argument("--models", nargs="*", default=list(MODELS))
    ap.add_argument("--out", type=Path, default=None, help="write the table here (Markdown)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models:
            rows += (int4_rows if args.int4 else measure)(name, ROOT / "models", work, args.runs)
            print(table(rows), file=sys.stderr)
        if args.big:
            rows += measure(synthetic_mlp(work), work, work, args.runs, grid_container)
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
