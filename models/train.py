"""Regenerate the sample models and data sets in ``models/`` (dev-only).

This script is a development tool only. ``torch`` is NOT a runtime dependency
of ``onnxdc``; it is needed solely to re-train and re-export the sample models.

Usage::

    pip install torch==2.13.0 onnx onnxruntime numpy scikit-learn
    python models/train.py

What it does (deterministically: fixed seeds, single thread,
``torch.use_deterministic_algorithms(True)``):

* Data: ``sklearn.datasets.load_digits`` (1797 grey-scale 8x8 images, values
  0..16). Each image is scaled to [0, 1], upsampled to 28x28 with bilinear
  interpolation (``align_corners=False``) and normalized with
  ``(x - mean) / std`` where ``mean``/``std`` are scalars computed over the
  training split. A fixed-seed permutation puts 400 samples in the test split
  (never used for training or calibration); the remaining 1397 samples form
  the training split. The calibration set is 512 samples drawn (fixed seed,
  without replacement) from the training split.
* Models (float32, ONNX opset 17, input ``input`` with dynamic batch dimension
  ``batch``, output ``logits``):

  - ``lenet300.onnx``: LeNet-300-100 MLP, input ``[batch, 784]``.
  - ``lenet5.onnx``: Caffe LeNet-5, input ``[batch, 1, 28, 28]``.
  - ``crnn.onnx``: small conv + GRU classifier, input ``[batch, 1, 28, 28]``.

* For each model, writes ``<name>.onnx`` (weights inline, no external data),
  ``<name>.calib.npz`` (512 samples) and ``<name>.test.npz`` (400 samples),
  each npz holding ``input`` (float32, in the model's input shape, already
  normalized) and ``labels`` (int64).
* Checks: ``onnx.checker.check_model``, ONNX Runtime vs. torch outputs within
  1e-4 on the test split, the CRNN graph contains a ``GRU`` node whose W/R/B
  are initializers, and accuracy (top-1) is measured with ONNX Runtime on the
  exported files.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

OUT_DIR = Path(__file__).resolve().parent
SEED = 20240607
N_TEST = 400
N_CALIB = 512
OPSET = 17
ATOL = 1e-4
MIN_ACC = 0.95


def set_determinism(seed: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def make_data():
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)  # [N,8,8]
    labels = digits.target.astype(np.int64)
    up = F.interpolate(images[:, None], size=(28, 28), mode="bilinear", align_corners=False)
    up = up.numpy().astype(np.float32)  # [N,1,28,28]

    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(labels))
    test_idx = np.sort(perm[:N_TEST])
    train_idx = np.sort(perm[N_TEST:])
    calib_idx = np.sort(rng.choice(train_idx, size=N_CALIB, replace=False))
    assert not set(test_idx) & set(train_idx)
    assert set(calib_idx) <= set(train_idx)

    mean = float(up[train_idx].mean(dtype=np.float64))
    std = float(up[train_idx].std(dtype=np.float64))
    x = ((up - np.float32(mean)) / np.float32(std)).astype(np.float32)
    return {
        "x": x,
        "y": labels,
        "train": train_idx,
        "test": test_idx,
        "calib": calib_idx,
        "mean": mean,
        "std": std,
    }


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #
class LeNet300(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5 variant (no nonlinearity after the convolutions)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(800, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)  # [B,20,12,12]
        x = F.max_pool2d(self.conv2(x), 2)  # [B,50,4,4]
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class CRNN(nn.Module):
    """Two conv blocks, then a GRU reading the 7 feature columns as a sequence."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.gru = nn.GRU(input_size=32 * 7, hidden_size=hidden, batch_first=False)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # [B,16,14,14]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [B,32,7,7]  (B,C,H,W)
        x = x.permute(3, 0, 1, 2).flatten(2)  # [W=7, B, C*H=224]
        _, h = self.gru(x)  # h: [1,B,hidden]
        return self.fc(h[0])


SPECS = [
    # name, ctor, flat input, expected params, epochs, lr
    ("lenet300", LeNet300, True, 266_610, 30, 1e-3),
    ("lenet5", LeNet5, False, 431_080, 20, 1e-3),
    ("crnn", CRNN, False, None, 30, 2e-3),
]


def model_input(x: np.ndarray, flat: bool) -> np.ndarray:
    return np.ascontiguousarray(x.reshape(len(x), 784) if flat else x, dtype=np.float32)


# --------------------------------------------------------------------------- #
# Train / export / verify
# --------------------------------------------------------------------------- #
def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    bs = 64
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(perm), bs):
            idx = perm[i : i + bs]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    model.eval()


def export(model: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # dynamo=False is deliberate (stable, plain-opset graphs).
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # Spurious for this model: the exporter builds GRU initial_h from
        # Shape(input), so any batch size works (checked below with batch 1).
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*GRU.*")
        _torch_export(model, example, buf)
    # Re-serialize through onnx so the bytes on disk are canonical.
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _torch_export(model: nn.Module, example: torch.Tensor, buf: io.BytesIO) -> None:
    torch.onnx.export(
        model,
        (example,),
        buf,
        dynamo=False,
        opset_version=OPSET,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
        export_params=True,
    )


def check_gru(proto: onnx.ModelProto) -> None:
    inits = {i.name for i in proto.graph.initializer}
    rnn = [n for n in proto.graph.node if n.op_type in ("GRU", "LSTM")]
    assert rnn, "no GRU/LSTM node in CRNN graph"
    for n in rnn:
        w, r, b = n.input[1], n.input[2], n.input[3] if len(n.input) > 3 else ""
        for role, name in (("W", w), ("R", r), ("B", b)):
            assert name in inits, f"{n.op_type} input {role} ({name!r}) is not an initializer"


def ort_logits(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def top1(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


def main() -> int:
    set_determinism(SEED)
    t_all = time.perf_counter()
    d = make_data()
    x, y = d["x"], d["y"]
    print(
        f"digits: train={len(d['train'])} test={len(d['test'])} calib={len(d['calib'])} "
        f"mean={d['mean']:.6f} std={d['std']:.6f}"
    )

    rows = []
    for k, (name, ctor, flat, want_params, epochs, lr) in enumerate(SPECS):
        set_determinism(SEED + k)
        model = ctor()
        n_params = sum(p.numel() for p in model.parameters())
        if want_params is not None:
            assert n_params == want_params, (name, n_params, want_params)

        x_train = model_input(x[d["train"]], flat)
        x_test = model_input(x[d["test"]], flat)
        x_calib = model_input(x[d["calib"]], flat)
        y_train, y_test, y_calib = y[d["train"]], y[d["test"]], y[d["calib"]]

        t0 = time.perf_counter()
        train(model, x_train, y_train, epochs, lr, SEED + 100 + k)
        t_train = time.perf_counter() - t0

        model_bytes = export(model, torch.from_numpy(x_test[:2]))
        proto = onnx.load_from_string(model_bytes)
        assert proto.opset_import[0].version == OPSET
        assert all(
            i.data_location != onnx.TensorProto.EXTERNAL for i in proto.graph.initializer
        ), "external data"
        if name == "crnn":
            check_gru(proto)

        with torch.no_grad():
            ref = model(torch.from_numpy(x_test)).numpy()
        got = ort_logits(model_bytes, x_test)
        max_diff = float(np.abs(ref - got).max())
        assert max_diff <= ATOL, f"{name}: ORT vs torch max |diff| {max_diff:g} > {ATOL}"
        # Also exercise a different batch size (dynamic batch dimension).
        got1 = ort_logits(model_bytes, x_test[:1])
        assert got1.shape == (1, 10) and np.abs(got1 - ref[:1]).max() <= ATOL

        acc_test = top1(got, y_test)
        acc_calib = top1(ort_logits(model_bytes, x_calib), y_calib)
        assert acc_test >= MIN_ACC, f"{name}: test top-1 {acc_test:.4f} < {MIN_ACC}"

        onnx_path = OUT_DIR / f"{name}.onnx"
        onnx_path.write_bytes(model_bytes)
        np.savez_compressed(OUT_DIR / f"{name}.calib.npz", input=x_calib, labels=y_calib)
        np.savez_compressed(OUT_DIR / f"{name}.test.npz", input=x_test, labels=y_test)

        rows.append(
            (
                name,
                n_params,
                len(model_bytes),
                acc_test,
                acc_calib,
                max_diff,
                t_train,
                hashlib.sha256(model_bytes).hexdigest()[:16],
            )
        )

    print()
    hdr = f"{'model':<9} {'params':>8} {'bytes':>9} {'test top1':>9} {'calib top1':>10} {'max|diff|':>9} {'train s':>7}  sha256[:16]"
    print(hdr)
    print("-" * len(hdr))
    for name, n, b, at, ac, md, tt, h in rows:
        print(f"{name:<9} {n:>8,} {b:>9,} {at:>9.4f} {ac:>10.4f} {md:>9.1e} {tt:>7.1f}  {h}")
    print(f"\ntotal time: {time.perf_counter() - t_all:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
