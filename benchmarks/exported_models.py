"""Automatic mode on graphs as torch exports them: a small transformer + GRU and a small detector.

The sample models are hand-sized; third-party models come from exporters, with their habits:
weights shared by identical layers, transposed MatMul weights, Reshapes that bake in the traced
sequence length, BatchNorm folded into convolutions, depthwise convolutions, a fixed batch of 1,
several outputs. This script exports two such models with torch (randomly initialized, seeded —
untrained, so their ratios say little; what matters is that every step runs and the budget holds on
inputs the automatic mode never saw) and runs, each in a child process:

- ``onnxdc compress MODEL`` with no settings (synthetic inputs; ``--dim seq=12`` for the
  transformer, whose attention Reshape only runs at the traced length), timed;
- ``onnxdc eval MODEL OUT.onnxdc --random 128 --seed 5`` (fresh inputs): agreement and cosine.

Dev only: it needs torch (``pip install torch==2.13.0``), which onnxdc itself never imports.

``--build DIR`` instead writes issue 11's benchmark models (a DB-style text detector, a GRU
encoder-decoder, a 6-layer transformer encoder; see :mod:`exported_build`) with their calibration
and test splits into DIR, for ``auto_speed.py --models DIR``; ``--train`` trains the first two
(a few minutes on 2 cores, cached in DIR), otherwise they keep their random initialization.

    python benchmarks/exported_models.py
    python benchmarks/exported_models.py --build /tmp/onnxdc-exported --train [--only textdet]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONNXDC = [sys.executable, "-c", "import sys; from onnxdc.cli import main; sys.argv[0] = 'onnxdc'; main()"]


def export(tmp: Path) -> dict[str, tuple[Path, list[str]]]:
    """Export the two models; returns name -> (path, extra compress/eval options)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(1000, 64)
            layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True, dropout=0.0)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(64, 10)
            self.gru = nn.GRU(64, 32, batch_first=True)
            self.out2 = nn.Linear(32, 5)

        def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.enc(self.emb(ids))
            g, _ = self.gru(h)
            return self.head(h.mean(1)), self.out2(g[:, -1])

    def block(i: int, o: int, s: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU6(),
                             nn.Conv2d(o, o, 3, 1, 1, groups=o, bias=False), nn.BatchNorm2d(o), nn.ReLU6(),
                             nn.Conv2d(o, o, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU6())

    class Det(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 64, 2), block(64, 128, 2))
            self.box, self.cls = nn.Conv2d(128, 12, 1), nn.Conv2d(128, 30, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            f = self.b(x)
            return (self.box(f).flatten(2).transpose(1, 2).reshape(1, -1, 4),
                    self.cls(f).flatten(2).transpose(1, 2).reshape(1, -1, 10).softmax(-1))

    seq, det = Seq().eval(), Det().eval()
    for mod in det.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(seq, (torch.randint(0, 1000, (2, 12)),), str(tmp / "seq.onnx"), dynamo=False,
                      input_names=["ids"], output_names=["cls", "seq"], opset_version=17,
                      dynamic_axes={"ids": {0: "batch", 1: "seq"}, "cls": {0: "batch"}, "seq": {0: "batch"}})
    torch.onnx.export(det, (torch.randn(1, 3, 128, 128),), str(tmp / "det.onnx"), dynamo=False,
                      input_names=["images"], output_names=["boxes", "scores"], opset_version=13)
    return {"transformer+GRU": (tmp / "seq.onnx", ["--dim", "seq=12"]), "detector (batch 1)": (tmp / "det.onnx", [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=Path, metavar="DIR", help="write issue 11's benchmark models into DIR instead")
    ap.add_argument("--train", action="store_true", help="with --build: train the detector and the GRU (cached in DIR)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="with --build: only these models")
    args = ap.parse_args()
    if args.build:
        sys.path.insert(0, str(Path(__file__).parent))
        from exported_build import build

        start = time.perf_counter()
        build(args.build, train=args.train, only=args.only, log=lambda line: print(line, file=sys.stderr, flush=True))
        print(f"built in {time.perf_counter() - start:.0f} s: {args.build}", file=sys.stderr)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, (model, opts) in export(tmp).items():
            out = tmp / f"{model.stem}.onnxdc"
            t = time.perf_counter()
            done = subprocess.run([*ONNXDC, "compress", str(model), "-o", str(out), "-q", *opts],
                                  capture_output=True, text=True, check=False)
            seconds = time.perf_counter() - t
            row = {"model": name, "onnx_bytes": model.stat().st_size, "seconds": seconds, "ok": done.returncode == 0,
                   "error": done.stderr.strip().splitlines()[-1] if done.returncode else ""}
            if row["ok"]:
                row["bytes"] = out.stat().st_size
                ev = subprocess.run([*ONNXDC, "eval", str(model), str(out), "--random", "128", "--seed", "5",
                                     *opts, "--json"], capture_output=True, text=True, check=True)
                res = json.loads(ev.stdout)
                row["agreement"] = res.get("agreement_top1")
                row["cosines"] = {o["name"]: o["cosine"] for o in res["outputs"]}
            rows.append(row)
    print("| model | .onnx bytes | .onnxdc bytes | ratio | seconds | top-1 agreement | cosine per output (fresh inputs) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if not r["ok"]:
            print(f"| {r['model']} | {r['onnx_bytes']:,} | FAILED | | {r['seconds']:.1f} | | {r['error']} |")
            continue
        agree = f"{100 * r['agreement']:.2f}%" if r["agreement"] is not None else "—"
        cos = ", ".join(f"{k} {v:.5f}" for k, v in r["cosines"].items())
        print(f"| {r['model']} | {r['onnx_bytes']:,} | {r['bytes']:,} | {r['onnx_bytes'] / r['bytes']:.1f}x | "
              f"{r['seconds']:.1f} | {agree} | {cos} |")


if __name__ == "__main__":
    main()
