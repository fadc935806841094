"""Decompression throughput in process (no interpreter start) on benchmarks/throughput.py's 25M-parameter
model, with a zstd reference to show the machine's load: `python tools/throughput_inproc.py`."""
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import numpy as np
import throughput as T
import zstandard

from onnxdc.pipeline.paths import decompress_file

tmp = Path("/tmp/tpw2"); tmp.mkdir(exist_ok=True)
model = tmp / "model.onnx"
if not model.exists():
    T.build_model(model, T.plan(25_000_000), seed=0, external=False)
for name, args in [("fixed", ["--sparsity", "0.9", "--bits", "5"]), ("lossless", ["--lossless"])]:
    out = tmp / f"{name}.onnxdc"
    if not out.exists():
        subprocess.run([sys.executable, "-m", "onnxdc", "compress", str(model), *args, "-q", "-o", str(out), "--force"], check=True)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter(); decompress_file(out, tmp / f"{name}.onnx", jobs=2); best = min(best, time.perf_counter() - t)
    print(name, f"decompress in process {best:.3f} s, {100.0/best:.0f} MB/s")
# a load reference: zstd-decompress 100 MB
raw = np.random.default_rng(0).integers(0, 4, 100_000_000, dtype=np.uint8).tobytes()
c = zstandard.ZstdCompressor(level=3).compress(raw)
t = time.perf_counter(); zstandard.ZstdDecompressor().decompress(c); print(f"reference zstd 100 MB: {time.perf_counter()-t:.3f} s")
