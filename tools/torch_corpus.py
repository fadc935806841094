"""Small PyTorch models of common architectures, exported to ONNX: part of the corpus the built-in
dictionaries are trained on (``tools/make_dictionaries.py``). Dev-only: needs torch.

Most ONNX graphs users bring come from ``torch.onnx``, whose graphs share a vocabulary the ONNX
backend test graphs lack (module-path node names, ``onnx::`` value names, ``Constant`` shape
arithmetic). These are generic families — MLPs, residual and depthwise convolution stacks,
GRU/LSTM/RNN classifiers, transformer encoders, an encoder-decoder convolution, a detection head,
1-D convolution — with random weights, never onnxdc's sample models, which measure the result.
Deterministic for a given torch version (seeded; the dictionaries were built with torch 2.13.0).
"""

from __future__ import annotations

import io
import itertools
import random

import onnx


def corpus() -> list[tuple[str, onnx.ModelProto]]:
    """The corpus: (name, model) pairs in a fixed order."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    rng = random.Random(0)
    out: list[tuple[str, onnx.ModelProto]] = []

    def export(m: nn.Module, x: object, name: str) -> None:
        f = io.BytesIO()
        args = x if isinstance(x, tuple) else (x,)
        names = [f"in{i}" for i in range(len(args))] if len(args) > 1 else ["input"]
        torch.onnx.export(m.eval(), args, f, input_names=names, output_names=["output"],
                          opset_version=rng.choice([14, 17, 17, 18]), dynamo=False,
                          dynamic_axes={n: {0: "batch"} for n in names})
        out.append((name, onnx.load_from_string(f.getvalue())))

    class Res(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x + self.c(torch.relu(self.b(self.a(x)))))

    class Recurrent(nn.Module):
        def __init__(self, kind: str, layers: int, bi: bool) -> None:
            super().__init__()
            self.r = getattr(nn, kind)(8, 16, layers, batch_first=True, bidirectional=bi)
            self.fc = nn.Linear(16 * (2 if bi else 1), 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y, _ = self.r(x)
            return self.fc(y[:, -1])

    class Attention(nn.Module):
        def __init__(self, d: int, layers: int) -> None:
            super().__init__()
            self.e = nn.Embedding(100, d)
            self.t = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, 4, 2 * d, batch_first=True), layers)
            self.o = nn.Linear(d, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.o(self.t(self.e(x)).mean(1))

    class Depthwise(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.d, self.p, self.bn = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, 2 * c, 1), nn.BatchNorm2d(2 * c)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.hardswish(self.bn(self.p(self.d(x))))

    class EncoderDecoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.d, self.u, self.o = nn.Conv2d(3, 8, 3, 2, 1), nn.ConvTranspose2d(8, 8, 2, 2), nn.Conv2d(11, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.o(torch.cat([x, self.u(torch.relu(self.d(x)))], 1)))

    class Detect(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.b = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                                   nn.Conv2d(8, 16, 3, 1, 1), nn.SiLU())
            self.h = nn.Conv2d(16, 3 * 7, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.h(self.b(x))
            b, _, h, w = y.shape
            return y.view(b, 3, 7, h, w).permute(0, 1, 3, 4, 2).sigmoid()

    for i, (act, n) in enumerate(itertools.product([nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU], [1, 2, 3])):
        layers: list[nn.Module] = []
        d = 16
        for _ in range(n):
            layers += [nn.Linear(d, 32), act()]
            d = 32
        export(nn.Sequential(nn.Flatten(), *layers, nn.Linear(d, 10), nn.Softmax(-1)), torch.randn(2, 16), f"mlp{i}")
    for c in (4, 8):
        export(nn.Sequential(nn.Conv2d(3, c, 3, padding=1), Res(c), Res(c), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(c, 10)), torch.randn(1, 3, 16, 16), f"res{c}")
        export(nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), Depthwise(c), Depthwise(2 * c), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4 * c, 3)), torch.randn(1, 3, 16, 16), f"dw{c}")
    for kind, bi, n in itertools.product(["GRU", "LSTM", "RNN"], [False, True], [1, 2]):
        export(Recurrent(kind, n, bi), torch.randn(2, 5, 8), f"{kind.lower()}{int(bi)}{n}")
    for d, n in ((16, 1), (32, 2)):
        export(Attention(d, n), torch.randint(0, 100, (2, 6)), f"attention{d}x{n}")
    export(EncoderDecoder(), torch.randn(1, 3, 16, 16), "encoder_decoder")
    export(Detect(), torch.randn(1, 3, 32, 32), "detect")
    export(nn.Sequential(nn.Conv1d(4, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(64, 4)),
           torch.randn(2, 4, 16), "conv1d")
    return out
