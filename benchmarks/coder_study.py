"""The coder study's two tables, YOLO and CRNN, as ``benchmarks/coder_study.md`` shows them.

For each sample model, at the study's style of settings (``--sparsity 0.9 --bits 5`` by default):
the ``onnxdc compare-coders MODEL --study`` table (:func:`onnxdc.api.coder_study`) as markdown, the
container ``onnxdc compress`` writes at the same settings (its bytes and its task metric on the test
split against the original's), and with ``--auto`` the automatic mode's container (``onnxdc
compress M --calib M.calib.npz`` with ``--max-drop 0.5`` for the classifier, the default cosine
budget for the detector, whose output has no class axis): its bytes, metric and per-tensor streams
grouped by role and coder, as ``onnxdc inspect`` lists them.

    python benchmarks/coder_study.py [--sparsity 0.9] [--bits 5] [--auto] [--models yolo crnn]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxdc.api import CompressConfig, SharingConfig, coder_study, compress, decompress, inspect_file, load_model

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from yolo_metric import yolo_box_f1  # noqa: E402

ONNXDC = [sys.executable, "-c", "import sys; from onnxdc.cli import main; sys.argv[0] = 'onnxdc'; main()"]
AUTO_FLAGS = {"crnn": ["--max-drop", "0.5"], "yolo": []}


def metric(name: str, model_bytes: bytes) -> tuple[str, float]:
    """The model's test metric: box-F1 at IoU 0.5 for the detector, top-1 for the classifiers."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    test = np.load(MODELS / f"{name}.test.npz")
    out = sess.run(None, {"input": test["input"]})[0]
    if name == "yolo":
        return "box-F1@0.5", yolo_box_f1(out, np.load(MODELS / "yolo.test_targets.npz")["targets"])
    return "top-1", float(np.mean(out.argmax(1) == test["labels"]))


def study_markdown(name: str, sharing: SharingConfig) -> str:
    study = coder_study(load_model(MODELS / f"{name}.onnx"), sharing=sharing)
    w = max(study.weights, 1)
    lines = ["| coder | layout | codebook bytes | fixed-width code bytes | coded bytes | bits / kept weight "
             "| code ratio | model ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in study.rows:
        label = f"*{r.label}*" if r.layout == "bound" else f"{r.label} (`{r.coder}`)"
        lines.append(f"| {label} | {r.layout} | {r.codebook_bytes:,} | {r.fixed_bytes:,} | {r.coded_bytes:,} "
                     f"| {8 * r.coded_bytes / w:.3f} | {r.code_ratio:.2f}x | {study.model_ratio(r):.2f}x |")
    lines.append(f"\n{study.tensors} shared tensors, {study.weights:,} of {study.numel:,} weights kept, "
                 f"{study.original_bytes:,} original bytes of shared tensors; LZ = zstd level {study.zstd_level}.")
    return "\n".join(lines)


def streams_markdown(path: Path) -> str:
    """The container's bytes grouped by stream role and coder (from its header alone)."""
    c = inspect_file(path)
    h = c.header
    groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in h.tensors:
        for role, i in t.streams.items():
            coder = h.streams[i].coder
            cid = "+".join(x["id"] for x in coder["coders"]) if coder["id"] == "chain" else coder["id"]
            key = (f"{t.encoding}/{t.params.get('positions', '-')}" if t.encoding == "shared" else t.encoding,
                   f"{role}: {cid}")
            groups[key][0] += 1
            groups[key][1] += h.streams[i].length
    lines = ["| encoding/layout | stream: coder | streams | bytes |", "|---|---|---:|---:|"]
    for (enc, sc), (n, b) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
        lines.append(f"| {enc} | {sc} | {n} | {b:,} |")
    skel = h.streams[h.skeleton]
    total = path.stat().st_size
    payload = sum(s.length for s in h.streams)
    lines.append(f"\nskeleton {skel.length:,} bytes ({skel.coder['id']}); header and framing "
                 f"{total - payload:,} bytes; file {total:,} bytes.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--bits", type=int, default=5)
    parser.add_argument("--auto", action="store_true", help="also the automatic mode's container")
    parser.add_argument("--models", nargs="+", default=["yolo", "crnn"])
    args = parser.parse_args()
    sharing = SharingConfig(sparsity=args.sparsity, bits=args.bits)
    for name in args.models:
        onnx_bytes = (MODELS / f"{name}.onnx").read_bytes()
        print(f"## {name}: `--sparsity {args.sparsity} --bits {args.bits}`\n")
        print(study_markdown(name, sharing))
        data = compress(load_model(MODELS / f"{name}.onnx"), config=CompressConfig(sharing=sharing)).data
        what, base = metric(name, onnx_bytes)
        _, got = metric(name, decompress(data).SerializeToString())
        print(f"\n`onnxdc compress models/{name}.onnx --sparsity {args.sparsity} --bits {args.bits}`: "
              f"{len(onnx_bytes):,} -> {len(data):,} bytes ({len(onnx_bytes) / len(data):.1f}x); "
              f"test {what} {base:.4f} -> {got:.4f}.\n")
        if args.auto:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / f"{name}.onnxdc"
                flags = AUTO_FLAGS.get(name, [])
                t0 = time.perf_counter()
                subprocess.run([*ONNXDC, "compress", str(MODELS / f"{name}.onnx"), "--calib",
                                str(MODELS / f"{name}.calib.npz"), *flags, "-o", str(out), "-q"], check=True)
                secs = time.perf_counter() - t0
                _, auto = metric(name, decompress(out.read_bytes()).SerializeToString())
                print(f"### {name}: automatic mode, `onnxdc compress models/{name}.onnx --calib "
                      f"models/{name}.calib.npz {' '.join(flags)}`\n")
                print(f"{out.stat().st_size:,} bytes ({len(onnx_bytes) / out.stat().st_size:.1f}x) in {secs:.0f} s; "
                      f"test {what} {base:.4f} -> {auto:.4f}. Streams:\n")
                print(streams_markdown(out) + "\n")


if __name__ == "__main__":
    main()
