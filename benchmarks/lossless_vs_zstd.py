"""Lossless mode against zstd -19 on the whole .onnx file, for float and int8 models.

For each sample model and its int8 version made with onnxruntime's ``quantize_dynamic``: the
``.onnx`` size, ``zstd -19`` of the whole file, and the ``onnxdc compress --lossless`` container;
the round trip is checked bit-exact for every run.

    python benchmarks/lossless_vs_zstd.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import zstandard
from onnx import numpy_helper

from onnxdc import compress, decompress, load_model

MODELS = Path(__file__).resolve().parent.parent / "models"


def quantized(src: Path, dst: Path, weight_type: str) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=getattr(QuantType, weight_type))
    return dst


def main() -> None:
    print("| model | .onnx bytes | zstd -19 | onnxdc lossless | onnxdc / zstd | ratio vs .onnx | compress s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name in ("lenet300", "lenet5", "crnn"):
            paths.append((name, MODELS / f"{name}.onnx"))
            for wt in ("QInt8", "QUInt8"):
                paths.append((f"{name} int8 ({wt})", quantized(MODELS / f"{name}.onnx",
                                                               Path(tmp) / f"{name}.{wt}.onnx", wt)))
        for label, path in paths:
            raw = path.read_bytes()
            z = len(zstandard.ZstdCompressor(level=19).compress(raw))
            model = load_model(path)
            t = time.perf_counter()
            res = compress(model)
            dt = time.perf_counter() - t
            out = decompress(res.data)
            for a, b in zip(model.graph.initializer, out.graph.initializer):
                assert numpy_helper.to_array(a).tobytes() == numpy_helper.to_array(b).tobytes()
            ours = len(res.data)
            print(f"| {label} | {len(raw):,} | {z:,} | {ours:,} | {ours / z:.3f} | "
                  f"{len(raw) / ours:.3f}x | {dt:.2f} |")


if __name__ == "__main__":
    main()
