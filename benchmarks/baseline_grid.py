"""Magnitude-pruning baseline: ratio and test top-1 over sparsity x bits x init, per sample model.

The honest baseline before calibration-aware compression: plain magnitude pruning, k-means weight
sharing and entropy coding, with no retraining and no calibration data. Accuracy is measured with
onnxruntime on each model's test split, which compression never sees. Ratio = float32 bytes of all
the model's initializers / container bytes.

    python benchmarks/baseline_grid.py [--models lenet300,lenet5,crnn] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from onnx import numpy_helper

from onnxdc import CompressConfig, compress, decompress, load_model
from onnxdc.api import SharingConfig, evaluate, load_data

MODELS = Path(__file__).resolve().parent.parent / "models"
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95)
BITS = (3, 4, 5, 8)
INITS = ("linear", "density", "forgy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300,lenet5,crnn")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    for name in args.models.split(","):
        model = load_model(MODELS / f"{name}.onnx")
        data = load_data(MODELS / f"{name}.test.npz")
        weight_bytes = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
        base = evaluate(model, model, data)
        print(f"\n## {name}: {weight_bytes:,} weight bytes, test top-1 {100 * base.reference_top1:.2f}%\n")
        print("| sparsity | bits | init | bytes | ratio | test top-1 | drop (pts) |")
        print("|---:|---:|---|---:|---:|---:|---:|")
        t0 = time.perf_counter()
        for sparsity in SPARSITIES:
            for bits in BITS:
                for init in INITS:
                    cfg = CompressConfig(sharing=SharingConfig(sparsity=sparsity, bits=bits, init=init))
                    res = compress(model, config=cfg)
                    ev = evaluate(model, decompress(res.data), data)
                    row = {"model": name, "sparsity": sparsity, "bits": bits, "init": init,
                           "bytes": len(res.data), "ratio": weight_bytes / len(res.data),
                           "top1": ev.candidate_top1, "reference_top1": ev.reference_top1}
                    results.append(row)
                    print(f"| {sparsity} | {bits} | {init} | {len(res.data):,} | {row['ratio']:.1f}x | "
                          f"{100 * ev.candidate_top1:.2f}% | {ev.top1_drop_points:+.2f} |")
        print(f"\n({time.perf_counter() - t0:.1f} s for {name})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
