"""Issue 11's exported benchmark models: a DB-style text detector, a GRU encoder-decoder, a transformer encoder.

Each is a torch model exported as third-party models are (``torch.onnx.export(..., dynamo=False)``,
BatchNorm folded by the exporter, a dynamic batch axis), with seeded synthetic data:

- ``textdet``: a ~0.47M-parameter conv detector (strided backbone to 1/32, an FPN merging 1/4 to
  1/32, a transposed-conv head to a 1-channel probability map at full resolution), input
  1x3x320x320, trained (``--train``) at 160x160 (it is fully convolutional) on numpy-rendered
  "text lines" (rows of dark strokes on a noisy background, with dark non-text boxes and rules as
  distractors); target: the lines' box mask; metric: pixel F1 of the map thresholded at 0.5.
- ``gru_seq2seq``: a ~1.0M-parameter GRU encoder-decoder in one graph (embeddings, a 2-layer GRU
  encoder whose final state starts a 2-layer GRU decoder teacher-forced on the shifted target,
  a Linear to logits [batch, T, vocab]), trained to reverse 12-digit sequences; metric: token
  accuracy.
- ``transformer``: a 6-layer, 384-wide post-norm transformer encoder with a 30,000 x 384 token
  embedding (22.2M parameters), sequence length fixed at 32, randomly initialized: its figure is a
  speed figure only; metric: cosine of the hidden states to the original's.

Files per model in DIR: ``<name>.onnx``, ``<name>.calib.npz`` (128 samples) and ``<name>.test.npz``
(a disjoint split), both keyed by the ONNX input names (no ``labels``: no first output here is
[batch, classes]), ``<name>.test_targets.npz`` (key ``targets``) where the task has ground truth,
and ``<name>.json`` (task, metric, parameters, the original model's test metric, how it was
trained). Trained weights are cached as ``<name>.trained.pt`` so a second ``--train`` run does not
retrain. torch runs on 1 thread whatever the environment says, so the same flags give the same
bytes on this machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from task_metrics import cosines, task_metric

CALIB, TEST = 128, 64
DET_SIZE, DET_TRAIN_SIZE = 320, 160
SEQ_T, SEQ_VOCAB, BOS = 12, 11, 10
TR_VOCAB, TR_SEQ, TR_WIDTH, TR_LAYERS = 30_000, 32, 384, 6


# ---------------------------------------------------------------- synthetic data (numpy, seeded)

def text_images(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy pages of ``size`` x ``size`` with a few text lines; images [n,3,s,s] in [0,1], masks [n,s,s].

    A line is a row of "characters", each 2-4 dark bars inside its cell; the mask is the line's
    box. Dark filled boxes and long thin rules are drawn too, outside the mask, so that darkness
    alone is not text.
    """
    scale = size / 320
    images = np.empty((n, 3, size, size), np.float32)
    masks = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.uniform(0.55, 0.95)
        gx, gy = rng.uniform(-0.15, 0.15, 2)
        page = base + gx * (xx - 0.5) + gy * (yy - 0.5)
        img = np.repeat(page[None], 3, 0) + rng.uniform(-0.04, 0.04, (3, 1, 1))
        for _ in range(rng.integers(0, 3)):  # distractor: a dark box or a thin rule
            if rng.random() < 0.5:
                h, w = (int(v * scale) for v in rng.integers(25, 90, 2))
            else:
                h, w = max(1, int(rng.integers(1, 3) * scale)), int(rng.integers(80, 300) * scale)
            y, x = rng.integers(0, size - h), rng.integers(0, max(1, size - w))
            img[:, y:y + h, x:x + w] = rng.uniform(0.05, 0.45)
        for _ in range(rng.integers(1, 7)):
            h = max(4, int(rng.integers(8, 22) * scale))
            length = int(rng.integers(40, 240) * scale)
            y, x0 = int(rng.integers(0, size - h)), int(rng.integers(0, max(1, size - length)))
            ink, x = rng.uniform(0.0, 0.3), x0
            while x < x0 + length:
                cw = max(3, int(h * rng.uniform(0.45, 0.8)))
                for _ in range(rng.integers(2, 5)):
                    t = max(1, h // 6)
                    if rng.random() < 0.6:  # vertical bar
                        bx = x + int(rng.integers(0, max(1, cw - t)))
                        img[:, y:y + h, bx:bx + t] = ink
                    else:  # horizontal bar
                        by = y + int(rng.integers(0, max(1, h - t)))
                        img[:, by:by + t, x:x + cw] = ink
                x += cw + max(1, int(h * rng.uniform(0.15, 0.35)))
            masks[i, y:y + h, x0:min(x, size)] = 1
        img += rng.normal(0, rng.uniform(0.02, 0.08), img.shape)
        images[i] = np.clip(img, 0, 1)
    return images, masks


def digit_sequences(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source digits, teacher-forced decoder input (BOS + target shifted right), target (the reversal)."""
    src = rng.integers(0, 10, (n, SEQ_T), dtype=np.int64)
    tgt = src[:, ::-1].copy()
    tgt_in = np.concatenate([np.full((n, 1), BOS, np.int64), tgt[:, :-1]], axis=1)
    return src, tgt_in, tgt


def token_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Zipf-distributed token ids, as text gives them (a few frequent ids, a long tail)."""
    return np.minimum(rng.zipf(1.2, (n, TR_SEQ)) - 1, TR_VOCAB - 1).astype(np.int64)


# ---------------------------------------------------------------- models (torch, imported lazily)

def detector() -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    def cbr(i: int, o: int, s: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class TextDet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = (32, 64, 112, 144)
            self.stem = cbr(3, 16, 2)
            self.stages = nn.ModuleList()
            for i, w in enumerate(widths):
                prev = 16 if i == 0 else widths[i - 1]
                self.stages.append(nn.Sequential(cbr(prev, w, 2), cbr(w, w)) if i < 3 else cbr(prev, w, 2))
            self.lateral = nn.ModuleList(nn.Conv2d(w, 64, 1, bias=False) for w in widths)
            self.smooth = nn.ModuleList(cbr(64, 16) for _ in widths)
            self.head = nn.Sequential(cbr(64, 32), nn.ConvTranspose2d(32, 16, 2, 2, bias=False), nn.BatchNorm2d(16),
                                      nn.ReLU(inplace=True), nn.ConvTranspose2d(16, 1, 2, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats, f = [], self.stem(x)
            for stage in self.stages:
                f = stage(f)
                feats.append(f)
            lat = [conv(f) for conv, f in zip(self.lateral, feats)]
            for i in range(len(lat) - 2, -1, -1):
                lat[i] = lat[i] + F.interpolate(lat[i + 1], scale_factor=2.0, mode="nearest")
            maps = [F.interpolate(s(p), scale_factor=float(2 ** i), mode="nearest") if i else s(p)
                    for i, (s, p) in enumerate(zip(self.smooth, lat))]
            return torch.sigmoid(self.head(torch.cat(maps, 1)))

    return TextDet()


def seq2seq() -> Any:
    import torch
    from torch import nn

    class GruSeq2Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.src_emb, self.tgt_emb = nn.Embedding(SEQ_VOCAB, 64), nn.Embedding(SEQ_VOCAB, 64)
            self.encoder = nn.GRU(64, 224, num_layers=2, batch_first=True)
            self.decoder = nn.GRU(64, 224, num_layers=2, batch_first=True)
            self.out = nn.Linear(224, SEQ_VOCAB)

        def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
            _, state = self.encoder(self.src_emb(src))
            dec, _ = self.decoder(self.tgt_emb(tgt_in), state)
            return self.out(dec)

    return GruSeq2Seq()


def transformer() -> Any:
    import torch
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(TR_VOCAB, TR_WIDTH)
            self.pos = nn.Parameter(torch.randn(1, TR_SEQ, TR_WIDTH) * 0.02)
            layer = nn.TransformerEncoderLayer(TR_WIDTH, 6, 4 * TR_WIDTH, dropout=0.0, batch_first=True,
                                               activation="gelu")
            self.enc = nn.TransformerEncoder(layer, TR_LAYERS, norm=nn.LayerNorm(TR_WIDTH),
                                             enable_nested_tensor=False)
            for block in self.enc.layers:  # the encoder deep-copies one layer: give each its own weights
                for mod in block.modules():
                    if isinstance(mod, nn.Linear):  # out_proj too, which MultiheadAttention's reset leaves
                        mod.reset_parameters()
                block.self_attn._reset_parameters()

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.enc(self.emb(ids) + self.pos)

    return Encoder()


# ---------------------------------------------------------------- training

def train_detector(model: Any, *, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Adam on BCE + dice at 160x160, fresh synthetic pages every step.

    A step count, not a time budget, so a busy machine trains the same weights (torch on 1 thread).
    """
    import torch
    from torch.nn import functional as F

    rng = np.random.default_rng(101)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x, m = text_images(16, DET_TRAIN_SIZE, rng)
        x, m = torch.from_numpy(x), torch.from_numpy(m).float()[:, None]
        p = model(x).clamp(1e-6, 1 - 1e-6)
        dice = 1 - 2 * (p * m).sum() / (p.sum() + m.sum() + 1)
        loss = F.binary_cross_entropy(p, m) + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            log(f"textdet step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    return {"steps": steps, "batch": 16, "resolution": DET_TRAIN_SIZE, "final_loss": round(loss.item(), 4)}


def train_seq2seq(model: Any, *, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Adam on cross-entropy, teacher-forced, fresh random sequences every step."""
    import torch
    from torch.nn import functional as F

    rng = np.random.default_rng(202)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    start = time.perf_counter()
    for step in range(1, steps + 1):
        src, tgt_in, tgt = (torch.from_numpy(a) for a in digit_sequences(128, rng))
        loss = F.cross_entropy(model(src, tgt_in).reshape(-1, SEQ_VOCAB), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            log(f"gru_seq2seq step {step} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    model.eval()
    return {"steps": steps, "batch": 128, "final_loss": round(loss.item(), 4)}


# ---------------------------------------------------------------- the build

@dataclass(frozen=True)
class Spec:
    """One benchmark model: how to make it, its data and how it is judged."""

    name: str
    make: Callable[[], Any]
    train: Callable[..., dict[str, Any]] | None
    train_steps: int
    data: Callable[[int, np.random.Generator], tuple[dict[str, np.ndarray], np.ndarray | None]]
    metric: str  # pixel_f1, token_accuracy or cosine (to the original's output)
    dynamic: dict[str, dict[int, str]]
    outputs: tuple[str, ...]
    opset: int


def _det_data(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    images, masks = text_images(n, DET_SIZE, rng)
    return {"images": images}, masks


def _seq_data(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    src, tgt_in, tgt = digit_sequences(n, rng)
    return {"src": src, "tgt_in": tgt_in}, tgt


def _tr_data(n: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    return {"ids": token_ids(n, rng)}, None


SPECS = (
    Spec("textdet", detector, train_detector, 450, _det_data, "pixel_f1",
         {"images": {0: "batch"}, "prob": {0: "batch"}}, ("prob",), 13),
    Spec("gru_seq2seq", seq2seq, train_seq2seq, 1200, _seq_data, "token_accuracy",
         {"src": {0: "batch"}, "tgt_in": {0: "batch"}, "logits": {0: "batch"}}, ("logits",), 14),
    Spec("transformer", transformer, None, 0, _tr_data, "cosine",
         {"ids": {0: "batch"}, "hidden": {0: "batch"}}, ("hidden",), 17),
)


def build(out_dir: Path, *, train: bool, only: list[str] | None = None,
          log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Write every model's files into ``out_dir``; returns each model's metadata (also in ``<name>.json``)."""
    import torch

    torch.set_num_threads(1)  # 2 threads ran 6x slower beside one busy neighbour on 2 cores
    out_dir.mkdir(parents=True, exist_ok=True)
    metas = []
    for seed, spec in enumerate(SPECS):
        if only and spec.name not in only:
            continue
        t0 = time.perf_counter()
        torch.manual_seed(1000 + seed)
        model = spec.make().eval()
        training: dict[str, Any] = {"trained": False}
        cache = out_dir / f"{spec.name}.trained.pt"
        if train and spec.train is not None:
            if cache.exists():
                saved = torch.load(cache, weights_only=True)
                model.load_state_dict(saved["state"])
                training = json.loads(saved["info"])
                log(f"{spec.name}: trained weights from {cache}")
            else:
                training = {"trained": True, **spec.train(model, steps=spec.train_steps, log=log)}
                torch.save({"state": model.state_dict(), "info": json.dumps(training)}, cache)
        model.eval()
        rng = np.random.default_rng(7 + seed)
        calib, _ = spec.data(CALIB, rng)
        test, targets = spec.data(TEST, rng)  # drawn after the calibration samples: a disjoint split
        onnx_path = out_dir / f"{spec.name}.onnx"
        example = tuple(torch.from_numpy(v[:2]) for v in calib.values())
        # not under no_grad: there nn.TransformerEncoderLayer takes its fused fast path, which has no ONNX export
        torch.onnx.export(model, example, str(onnx_path), dynamo=False, input_names=list(calib),
                          output_names=list(spec.outputs), dynamic_axes=spec.dynamic, opset_version=spec.opset)
        np.savez(out_dir / f"{spec.name}.calib.npz", **calib)
        np.savez(out_dir / f"{spec.name}.test.npz", **test)
        if targets is not None:
            np.savez(out_dir / f"{spec.name}.test_targets.npz", targets=targets)
        meta = {"name": spec.name, "metric": spec.metric, "parameters": sum(p.numel() for p in model.parameters()),
                "onnx_bytes": onnx_path.stat().st_size, "calib_samples": CALIB, "test_samples": TEST,
                "inputs": {k: list(v.shape[1:]) for k, v in calib.items()}, **training,
                "original_test_metric": original_metric(onnx_path, test, targets, spec.metric)}
        (out_dir / f"{spec.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        log(f"{spec.name}: {meta['parameters']:,} parameters, test {spec.metric} "
            f"{meta['original_test_metric']:.4f}, {time.perf_counter() - t0:.1f} s")
        metas.append(meta)
    return metas


def original_metric(onnx_path: Path, test: dict[str, np.ndarray], targets: np.ndarray | None, metric: str) -> float:
    """The exported model's own test metric, run by onnxruntime as the benchmark runs it (cosine: 1 by definition)."""
    import onnxruntime as ort

    out = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, test)[0]
    if metric == "cosine":
        return float(cosines(out, out).mean())
    return task_metric(metric, out, targets)
