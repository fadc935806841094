"""``auto_speed.py --models DIR``: the automatic mode with calibration data on issue 11's exported models.

Kept apart from ``auto_speed.py``'s synthetic-model sweep: this half reads the files
``exported_models.py --build DIR`` wrote (``<name>.onnx``, ``.calib.npz``, ``.test.npz``,
``.test_targets.npz``, ``.json``) and judges each compressed model by its task on the test split.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from task_metrics import cosines, task_metric
from throughput import ONNXDC, run_child

#: Issue 11's time targets on 2 cores, seconds; and its peak RSS target for each, MB.
TARGET_SECONDS = {"textdet": 60, "gru_seq2seq": 30, "transformer": 180}
TARGET_RSS_MB = 1500


def run_exported(model_dir: Path, *, timeout: float, only: list[str] | None, json_path: Path | None) -> list[dict]:
    """Compress, time and evaluate every model in ``model_dir``; prints the markdown table."""
    metas = [json.loads(p.read_text()) for p in sorted(model_dir.glob("*.json"))]
    metas = [m for m in metas if (model_dir / f"{m['name']}.onnx").exists() and (not only or m["name"] in only)]
    if not metas:
        raise SystemExit(f"no exported models in {model_dir} (run exported_models.py --build {model_dir})")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        for meta in metas:
            name = meta["name"]
            model, out = model_dir / f"{name}.onnx", Path(tmp_name) / f"{name}.onnxdc"
            cmd = [sys.executable, "-c", ONNXDC, "compress", str(model), "--calib", str(model_dir / f"{name}.calib.npz"),
                   "-o", str(out), "--force", "-q", *meta.get("compress_args", [])]
            load = os.getloadavg()[0]  # the machine is shared: a busy neighbour shows here
            run = run_child(name, cmd, timeout=timeout, outputs=[out], repeat=1)
            row: dict[str, Any] = {
                "model": name, "parameters": meta["parameters"], "trained": meta.get("trained", False),
                "metric": meta["metric"], "load_before": load, "seconds": run.seconds, "peak_rss_mb": run.peak_rss_mb,
                "onnx_bytes": model.stat().st_size, "bytes": run.out_bytes, "ok": run.ok,
                "status": "ok" if run.ok else ("timeout" if "timeout" in run.error else run.error)}
            if run.ok:
                row.update(evaluate(model_dir, name, out, meta["metric"]))
            rows.append(row)
            print(f"  {name}: {row['status']}", file=sys.stderr, flush=True)
    print(table(rows, timeout=timeout))
    if json_path:
        json_path.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def evaluate(model_dir: Path, name: str, container: Path, metric: str) -> dict[str, float]:
    """Decompress ``container`` with the library and run it and the original on the test split."""
    import onnxruntime as ort

    import onnxdc

    with np.load(model_dir / f"{name}.test.npz") as f:
        test = {k: f[k] for k in f.files}
    targets_path = model_dir / f"{name}.test_targets.npz"
    targets = np.load(targets_path)["targets"] if targets_path.exists() else None
    compressed = onnxdc.decompress(container.read_bytes()).SerializeToString()
    outs = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, test)[0]
            for m in (str(model_dir / f"{name}.onnx"), compressed)]
    cos = cosines(outs[0], outs[1])
    res = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    if metric != "cosine":
        res["metric_original"] = task_metric(metric, outs[0], targets)
        res["metric_compressed"] = task_metric(metric, outs[1], targets)
    return res


def table(rows: list[dict], *, timeout: float) -> str:
    """The markdown table of :func:`run_exported`'s rows."""
    lines = [f"| model | parameters | weights | seconds (target) | peak RSS MB (target {TARGET_RSS_MB}) | targets met | "
             "load avg before | .onnx bytes | .onnxdc bytes | ratio | test metric: original → compressed | "
             "cosine to original: mean / min |",
             "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        target = TARGET_SECONDS.get(r["model"])
        secs = (f"{r['seconds']:.1f}" if r["ok"] else
                f"timeout > {timeout:.0f}" if r["status"] == "timeout" else f"FAILED after {r['seconds']:.1f}")
        secs += f" ({target})" if target else ""
        weights = "trained" if r["trained"] else "random (speed figure only)"
        if r["ok"]:
            size, ratio = f"{r['bytes']:,}", f"{r['onnx_bytes'] / r['bytes']:.1f}x"
            metric = (f"{r['metric']} {r['metric_original']:.4f} → {r['metric_compressed']:.4f}"
                      if "metric_original" in r else "—")
            cos = f"{r['cosine_mean']:.5f} / {r['cosine_min']:.5f}"
        else:
            size, ratio, metric, cos = (r["status"] if r["status"] != "timeout" else "—"), "—", "—", "—"
        met = (r["ok"] and r["seconds"] < (target or float("inf")), r["peak_rss_mb"] < TARGET_RSS_MB)
        rss = f"{r['peak_rss_mb']:.0f}" + (" (at the kill)" if r["status"] == "timeout" else "")
        rss_met = ("yes" if met[1] else "no") if r["ok"] else "unknown" if met[1] else "no"
        lines.append(f"| {r['model']} | {r['parameters']:,} | {weights} | {secs} | {rss} | "
                     f"time {'yes' if met[0] else 'no'}, RSS {rss_met} | {r['load_before']:.1f} | "
                     f"{r['onnx_bytes']:,} | {size} | {ratio} | {metric} | {cos} |")
    return "\n".join(lines)
