"""Train and export the YOLO-style sample model ``models/yolo.onnx`` (dev-only, needs torch).

Like ``train.py`` this is a development tool: ``torch`` is not a dependency of ``onnxdc``.

Usage::

    pip install torch==2.13.0 onnx onnxruntime numpy
    nice -n 10 python models/train_yolo.py

What it does (deterministically: fixed seeds, one thread, ``torch.use_deterministic_algorithms``):

* Data: a synthetic shapes detection set rendered with numpy (:func:`render`): 96x96 RGB images,
  a background of a random base colour with 8x8-pixel blotches and 2% speckle noise, and 1-4
  non-overlapping filled circles, squares or triangles (the 3 classes) in one of 4 colours, sides
  14-30 px. Training images are rendered on the fly from their own seed (every step sees new
  images); the test split (300 images) and the calibration set (128 images) come from two other
  seeds, so neither is ever trained on. Inputs are ``pixel / 255`` as float32, NCHW.
* Model: a tiny-YOLOv2 backbone, five 3x3 conv + BatchNorm + LeakyReLU(0.1) stages with a 2x2
  max pool after the first four (96 -> 6), and a 1x1 conv head giving ``[batch, B*(5+C), 6, 6]``
  (B = 2 anchors, C = 3 classes, YOLOv2 layout; decoding in ``benchmarks/yolo_metric.py``). The
  export is in eval mode, so the exporter folds each BatchNorm into its conv.
* Loss: each object is assigned to the cell holding its centre and the anchor of best shape IoU;
  squared error on the sigmoid offsets and log sizes, BCE on objectness (all anchors), cross
  entropy on the classes of the assigned anchors.
* Writes ``yolo.onnx`` (opset 17, input ``input`` ``[batch, 3, 96, 96]``, output ``output``),
  ``yolo.calib.npz`` (``input`` only), ``yolo.test.npz`` (``input``) and
  ``yolo.test_targets.npz`` (``targets``: rows ``image, class, x0, y0, x1, y1``).
* Checks: ``onnx.checker``, no BatchNormalization left in the graph, ONNX Runtime against torch
  within 1e-4, and the test box-F1 at IoU 0.5 (computed by ONNX Runtime's output in numpy).
"""

from __future__ import annotations

import hashlib
import io
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

OUT_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(OUT_DIR.parent / "benchmarks"))
from yolo_metric import ANCHORS, yolo_box_f1  # noqa: E402

SEED = 20261202
SIZE = 96
GRID = 6
N_CLASSES = 3
N_TEST = 300
N_CALIB = 128
STEPS = 1100
BATCH = 32
LR = 3e-3
OPSET = 17
ATOL = 1e-4
MIN_F1 = 0.8
COLOURS = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230], [235, 210, 40]], np.int16)


def render(rng: np.random.Generator, n: int, *, first_image: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (float32 NCHW in [0, 1]) and their boxes (rows ``image, class, x0, y0, x1, y1``)."""
    imgs = np.empty((n, SIZE, SIZE, 3), np.uint8)
    targets = []
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for i in range(n):
        blotches = rng.integers(-20, 21, size=(SIZE // 8, SIZE // 8, 1))
        img = (rng.integers(40, 140, size=3) + np.kron(blotches, np.ones((8, 8, 1), np.int64))).astype(np.int16)
        speckle = rng.random((SIZE, SIZE)) < 0.02
        img[speckle] = rng.integers(0, 256, size=(int(speckle.sum()), 1))
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(1, 5))):
            for _try in range(20):
                s = int(rng.integers(14, 31))
                x0, y0 = int(rng.integers(0, SIZE - s + 1)), int(rng.integers(0, SIZE - s + 1))
                if all(x0 + s <= b[0] or b[2] <= x0 or y0 + s <= b[1] or b[3] <= y0 for b in boxes):
                    break
            else:
                continue
            c = int(rng.integers(0, N_CLASSES))
            if c == 0:
                m = (xx - (x0 + s / 2 - 0.5)) ** 2 + (yy - (y0 + s / 2 - 0.5)) ** 2 <= (s / 2) ** 2
            elif c == 1:
                m = (xx >= x0) & (xx < x0 + s) & (yy >= y0) & (yy < y0 + s)
            else:
                t = (yy - y0 + 0.5) / s
                m = (yy >= y0) & (yy < y0 + s) & (np.abs(xx + 0.5 - (x0 + s / 2)) <= t * s / 2)
            img[m] = COLOURS[rng.integers(0, len(COLOURS))]
            boxes.append((x0, y0, x0 + s, y0 + s))
            targets.append((first_image + i, c, x0 / SIZE, y0 / SIZE, (x0 + s) / SIZE, (y0 + s) / SIZE))
        imgs[i] = np.clip(img, 0, 255)
    x = np.ascontiguousarray(imgs.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)
    return x, np.array(targets, np.float32).reshape(-1, 6)


class TinyYolo(nn.Module):
    """Five conv stages (four pooled) and a 1x1 detection head."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for k, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.1)]
            if k < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, len(ANCHORS) * (5 + N_CLASSES), 1)

    def forward(self, x):
        return self.head(self.backbone(x))


def yolo_loss(out: torch.Tensor, targets: np.ndarray) -> torch.Tensor:
    n = out.shape[0]
    b = len(ANCHORS)
    p = out.view(n, b, 5 + N_CLASSES, GRID, GRID)
    obj = np.zeros((n, b, GRID, GRID), np.float32)
    txy = np.zeros((n, b, 2, GRID, GRID), np.float32)
    twh = np.zeros((n, b, 2, GRID, GRID), np.float32)
    cls = np.zeros((n, b, GRID, GRID), np.int64)
    for img, c, x0, y0, x1, y1 in targets:
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2 * GRID, (y0 + y1) / 2 * GRID
        col, row = min(int(cx), GRID - 1), min(int(cy), GRID - 1)
        inter = np.minimum(w, ANCHORS[:, 0]) * np.minimum(h, ANCHORS[:, 1])
        a = int(np.argmax(inter / (w * h + ANCHORS[:, 0] * ANCHORS[:, 1] - inter)))
        i = int(img)
        obj[i, a, row, col] = 1
        txy[i, a, :, row, col] = (cx - col, cy - row)
        twh[i, a, :, row, col] = (np.log(w / ANCHORS[a, 0]), np.log(h / ANCHORS[a, 1]))
        cls[i, a, row, col] = int(c)
    obj_t = torch.from_numpy(obj)
    pos = obj_t.bool()
    l_obj = F.binary_cross_entropy_with_logits(p[:, :, 4], obj_t, reduction="none")
    l_obj = (l_obj * torch.where(pos, 1.0, 0.5)).sum()
    pm = pos[:, :, None].expand(-1, -1, 2, -1, -1)
    l_xy = ((torch.sigmoid(p[:, :, 0:2]) - torch.from_numpy(txy)) ** 2)[pm].sum()
    l_wh = ((p[:, :, 2:4] - torch.from_numpy(twh)) ** 2)[pm].sum()
    logits = p[:, :, 5:].permute(0, 1, 3, 4, 2)[pos]
    l_cls = F.cross_entropy(logits, torch.from_numpy(cls)[pos], reduction="sum")
    return (5 * l_xy + 5 * l_wh + l_obj + l_cls) / n


def export(model: nn.Module, example: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(model, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          do_constant_folding=True, export_params=True)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    assert not [nd for nd in proto.graph.node if nd.op_type == "BatchNormalization"], "BatchNorm not folded"
    return proto.SerializeToString()


def ort_output(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(["output"], {"input": x})[0]


def main() -> int:
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_test, t_test = render(np.random.default_rng(SEED + 1), N_TEST)
    x_calib, _ = render(np.random.default_rng(SEED + 2), N_CALIB)
    model = TinyYolo()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=STEPS, pct_start=0.1)
    rng = np.random.default_rng(SEED)
    t0 = time.perf_counter()
    model.train()
    for step in range(STEPS):
        x, t = render(rng, BATCH)
        opt.zero_grad(set_to_none=True)
        loss = yolo_loss(model(torch.from_numpy(x)), t)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == STEPS - 1:
            print(f"step {step:5d} loss {loss.item():8.3f}  {time.perf_counter() - t0:6.1f}s", flush=True)
    t_train = time.perf_counter() - t0
    model.eval()

    model_bytes = export(model, torch.from_numpy(x_test[:2]))
    with torch.no_grad():
        ref = model(torch.from_numpy(x_test)).numpy()
    got = ort_output(model_bytes, x_test)
    max_diff = float(np.abs(ref - got).max())
    assert max_diff <= ATOL, f"ORT vs torch max |diff| {max_diff:g} > {ATOL}"
    f1 = yolo_box_f1(got, t_test)
    assert f1 >= MIN_F1, f"test box-F1 {f1:.4f} < {MIN_F1}"
    (OUT_DIR / "yolo.onnx").write_bytes(model_bytes)
    np.savez_compressed(OUT_DIR / "yolo.calib.npz", input=x_calib)
    np.savez_compressed(OUT_DIR / "yolo.test.npz", input=x_test)
    np.savez_compressed(OUT_DIR / "yolo.test_targets.npz", targets=t_test)
    print(f"yolo: params {n_params:,}  bytes {len(model_bytes):,}  test box-F1@0.5 {f1:.4f} "
          f"({len(t_test)} objects)  max|diff| {max_diff:.1e}  train {t_train:.1f}s  "
          f"sha256[:16] {hashlib.sha256(model_bytes).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
