"""Speed of the Deep Compression stages on one large synthetic tensor (default 10M weights).

Reports wall seconds for pruning, 1-D k-means weight sharing, and the full per-tensor encode
(sharing + position and index coding), with roughly Laplacian weights as trained layers have.

    python benchmarks/sharing_speed.py [--n 10000000] [--bits 5] [--sparsity 0.9]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from onnxdc.api import AUTO_INDEX_CODERS, PruneConfig, ShareConfig, encode_shared, kmeans_1d, prune


def timed(label: str, fn, repeat: int = 3):  # noqa: ANN001, ANN201
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    print(f"{label:<44} {best:8.3f} s (best of {repeat})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--bits", type=int, default=5)
    ap.add_argument("--sparsity", type=float, default=0.9)
    args = ap.parse_args()
    w = np.random.default_rng(0).laplace(0, 0.02, args.n).astype(np.float32)
    share = ShareConfig(bits=args.bits)
    print(f"{args.n:,} weights, {args.bits} bits, sparsity {args.sparsity}")
    timed(f"k-means, all {args.n:,} weights (no pruning)", lambda: kmeans_1d(w, config=share))
    keep = timed("magnitude pruning", lambda: prune(w, config=PruneConfig(sparsity=args.sparsity)))
    timed("k-means on the survivors", lambda: kmeans_1d(w[keep], config=share))
    timed("full tensor encode (prune mask given)",
          lambda: encode_shared(w, keep, share=share, index_coders=AUTO_INDEX_CODERS), repeat=1)


if __name__ == "__main__":
    main()
