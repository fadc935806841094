"""How long the automatic mode (``onnxdc compress MODEL`` with no settings) takes as models grow.

Automatic mode is the default, so a user who passes no flags waits for it: it compresses every
weight tensor alone at 45 settings, measures 3 of them per tensor on the whole model with
onnxruntime, then runs up to 8 layer-by-layer calibrations of the whole model. This script builds
the synthetic models of ``benchmarks/throughput.py`` (a Conv stack, then Gemm/MatMul layers,
Laplacian weights; fixed input shape 1x3x32x32) at each ``--params`` and times, each in a fresh
child process, ``onnxdc compress`` with no settings (synthetic inputs, 128 samples) next to
``--sparsity 0.9 --bits 5`` and ``--lossless``, with the peak RSS and output size of each. The
automatic result is then compared with the original on 64 fresh random inputs (``onnxdc eval
--random 64 --seed 1``), inputs the automatic mode never saw.

``--models DIR`` instead takes the exported models ``exported_models.py --build DIR`` wrote (issue
11's text detector, GRU encoder-decoder and transformer encoder) and, for each, times ``onnxdc
compress DIR/m.onnx --calib DIR/m.calib.npz -o OUT --force`` once in a fresh child process (peak
RSS from the child's ``RUSAGE_CHILDREN``; killed past ``--timeout``, 600 s unless given), then
decompresses the container with the library and runs both models with onnxruntime on the test
split: the task metric (pixel F1, token accuracy) of the original and the compressed model, and
the per-sample cosine of the compressed model's first output to the original's (mean and minimum).

    python benchmarks/auto_speed.py [--params 1000000 5000000] [--json out.json]
    python benchmarks/auto_speed.py --models /tmp/onnxdc-exported [--timeout 300] [--only textdet]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from throughput import ONNXDC, build_model, plan, run_child  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=int, nargs="+", default=[1_000_000, 5_000_000])
    ap.add_argument("--timeout", type=float, help="seconds allowed per operation (3600; 600 with --models)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--models", type=Path, metavar="DIR", help="time the exported models in DIR instead")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="with --models: only these models")
    args = ap.parse_args()
    if args.models:
        from auto_exported import run_exported

        run_exported(args.models, timeout=args.timeout or 600, only=args.only, json_path=args.json)
        return
    args.timeout = args.timeout or 3600
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for params in args.params:
            layout = plan(params)
            model = tmp / f"m{params}.onnx"
            weight_bytes = build_model(model, layout, seed=0, external=False)
            print(f"model: {layout.params():,} parameters, {weight_bytes:,} weight bytes", file=sys.stderr)
            for mode, opts in (("automatic (no settings)", []), ("--sparsity 0.9 --bits 5", ["--sparsity", "0.9", "--bits", "5"]),
                               ("--lossless", ["--lossless"])):
                out = tmp / "out.onnxdc"
                run = run_child(mode, [py, "-c", ONNXDC, "compress", str(model), "-o", str(out), "-q", "--force",
                                       *opts], timeout=args.timeout, outputs=[out])
                row = {"params": layout.params(), "mode": mode, "seconds": run.seconds,
                       "peak_rss_mb": run.peak_rss_mb, "bytes": run.out_bytes, "ok": run.ok, "error": run.error,
                       "ratio": weight_bytes / run.out_bytes if run.out_bytes else None, "cosine": None}
                if run.ok and not opts:
                    ev = subprocess.run([py, "-c", ONNXDC, "eval", str(model), str(out), "--random", "64",
                                         "--seed", "1", "--json"], capture_output=True, text=True, check=False)
                    if ev.returncode == 0:
                        row["cosine"] = json.loads(ev.stdout)["outputs"][0]["cosine"]
                rows.append(row)
                out.unlink(missing_ok=True)
    print("| parameters | mode | seconds | peak RSS MB | bytes | ratio | cosine on fresh inputs |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "—"
        cos = f"{r['cosine']:.5f}" if r["cosine"] is not None else "—"
        size = f"{r['bytes']:,}" if r["bytes"] else ("FAILED " + r["error"] if not r["ok"] else "—")
        print(f"| {r['params']:,} | {r['mode']} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {size} | {ratio} | {cos} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
