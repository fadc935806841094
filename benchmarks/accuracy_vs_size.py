"""Accuracy against size on the sample models: magnitude-only vs calibration-aware vs automatic.

For each sample model, with accuracy always on its test split (never the calibration split):

* magnitude — ``--sparsity S --bits B`` (Han et al.'s stages, no calibration, no retraining);
* calibrated — the same settings with ``--calib`` (compensated pruning, codebook refit);
* automatic — ``--calib --max-drop 0.5`` (per-tensor settings chosen on the calibration set), at
  the default ``--min-cosine 0.999`` and at ``--min-cosine 0.995``;
* no flags — ``onnxdc compress MODEL -o OUT`` run as a user runs it (a child process), so the
  automatic mode fits on synthetic inputs and sees no data at all.

Ratio = float32 bytes of all initializers / container bytes. Seconds are wall time of compress.

    python benchmarks/accuracy_vs_size.py [--models lenet300,lenet5,crnn] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from onnx import numpy_helper

from onnxdc import CompressConfig, compress, decompress, load_model
from onnxdc.api import AUTO_MIN_ELEMENTS, Budget, SharingConfig, compress_auto, evaluate, load_data

MODELS = Path(__file__).resolve().parent.parent / "models"
FIXED = ((0.9, 5), (0.92, 4))


def _cli_default(model: Path) -> SimpleNamespace:
    """``onnxdc compress MODEL -o OUT`` with no other flag, in a child process: the container."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.onnxdc"
        subprocess.run([sys.executable, "-m", "onnxdc", "compress", str(model), "-o", str(out), "-q"], check=True)
        return SimpleNamespace(data=out.read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300,lenet5,crnn")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    print("| model | method | settings | bytes | ratio | test top-1 | drop (pts) | seconds |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        model = load_model(MODELS / f"{name}.onnx")
        calib, test = load_data(MODELS / f"{name}.calib.npz"), load_data(MODELS / f"{name}.test.npz")
        weight_bytes = sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer)
        runs = []
        for s, b in FIXED:
            sharing = SharingConfig(sparsity=s, bits=b)
            runs.append(("magnitude", f"--sparsity {s} --bits {b}",
                         lambda sh=sharing, m=model: compress(m, config=CompressConfig(sharing=sh))))
            runs.append(("calibrated", f"--sparsity {s} --bits {b} --calib",
                         lambda sh=sharing, m=model, c=calib: compress(m, config=CompressConfig(sharing=sh,
                                                                                                calibration=c))))
        for cos in (0.999, 0.995):
            budget = Budget(max_drop=0.5, min_agreement=None, min_cosine=cos)
            runs.append(("automatic", f"--calib --max-drop 0.5 --min-cosine {cos}",
                         lambda bu=budget, m=model, c=calib: compress_auto(
                             m, base=SharingConfig(min_elements=AUTO_MIN_ELEMENTS), data=c, budget=bu).result))
        runs.append(("no flags", "(none: synthetic inputs)", lambda n=name: _cli_default(MODELS / f"{n}.onnx")))
        for method, settings, run in runs:
            t = time.perf_counter()
            res = run()
            dt = time.perf_counter() - t
            ev = evaluate(model, decompress(res.data), test)
            row = {"model": name, "method": method, "settings": settings, "bytes": len(res.data),
                   "ratio": weight_bytes / len(res.data), "top1": ev.candidate_top1,
                   "reference_top1": ev.reference_top1, "drop": ev.top1_drop_points, "seconds": dt}
            rows.append(row)
            print(f"| {name} | {method} | `{settings}` | {len(res.data):,} | {row['ratio']:.1f}x | "
                  f"{100 * ev.candidate_top1:.2f}% (orig {100 * ev.reference_top1:.2f}%) | {row['drop']:+.2f} | "
                  f"{dt:.1f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
