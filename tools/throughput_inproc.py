"""Decompression throughput in process (no interpreter start) on ``benchmarks/throughput.py``'s
25M-parameter model, with a 100 MB zstd decompression as a reference of the machine's load::

    python tools/throughput_inproc.py [WORKDIR]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import throughput  # noqa: E402

from onnxdc.pipeline.paths import decompress_file  # noqa: E402


def main() -> None:
    tmp = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/onnxdc-throughput")
    tmp.mkdir(exist_ok=True)
    model = tmp / "model.onnx"
    if not model.exists():
        throughput.build_model(model, throughput.plan(25_000_000), seed=0, external=False)
    for name, args in (("fixed", ["--sparsity", "0.9", "--bits", "5"]), ("lossless", ["--lossless"])):
        out = tmp / f"{name}.onnxdc"
        if not out.exists():
            subprocess.run([sys.executable, "-m", "onnxdc", "compress", str(model), *args, "-q", "-o", str(out),
                            "--force"], check=True)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            decompress_file(out, tmp / f"{name}.onnx", jobs=2)
            best = min(best, time.perf_counter() - t)
        print(f"{name}: decompress in process {best:.3f} s, {100.0 / best:.0f} MB/s")
    raw = np.random.default_rng(0).integers(0, 4, 100_000_000, dtype=np.uint8).tobytes()
    coded = zstandard.ZstdCompressor(level=3).compress(raw)
    t = time.perf_counter()
    zstandard.ZstdDecompressor().decompress(coded)
    print(f"reference: zstd decompression of 100 MB in {time.perf_counter() - t:.3f} s")


if __name__ == "__main__":
    main()
