"""Decode speed and size of the order-0 coders on a long skewed stream (symbols/s, bytes over entropy).

    PYTHONPATH=. python tools/coder_speed.py [--symbols 10000000] [--p 0.3]

The stream is geometric(p) symbols (cluster-index-like: a few frequent levels, a long tail), seeded.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from onnxdc.coders import get_coder
from onnxdc.pipeline.streams import order0_entropy_bits

CODERS = [{"id": "rans"}, {"id": "huffman"}, {"id": "zstd-literals"}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10_000_000)
    parser.add_argument("--p", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    symbols = np.minimum(rng.geometric(args.p, size=args.symbols) - 1, 255).astype(np.uint8)
    entropy = order0_entropy_bits(symbols) / 8
    print(f"{args.symbols:,} geometric({args.p}) symbols, order-0 entropy {entropy:,.0f} bytes")
    print(f"{'coder':<15}{'bytes':>12}{'over H':>9}{'encode Msym/s':>15}{'decode Msym/s':>15}")
    for config in CODERS:
        coder = get_coder(config)
        t0 = time.perf_counter()
        data = coder.encode(symbols)
        enc = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = coder.decode(data, count=symbols.size)
            best = min(best, time.perf_counter() - t0)
        assert np.array_equal(out, symbols)
        print(f"{config['id']:<15}{len(data):>12,}{100 * (len(data) / entropy - 1):>8.3f}%"
              f"{symbols.size / enc / 1e6:>15.1f}{symbols.size / best / 1e6:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
