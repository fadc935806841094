"""Decode speed and size of the order-0 coders on a long skewed stream (symbols/s, bytes over entropy).

    PYTHONPATH=. python tools/coder_speed.py [--symbols 10000000 43008] [--p 0.3]

The stream is geometric(p) symbols (cluster-index-like: a few frequent levels, a long tail), seeded.

If `constriction <https://bamler-lab.github.io/constriction/>`_ is installed (a dev-only
comparison, not a dependency: ``pip install constriction``), its ANS coder (the stack coder, one
stream, 64-bit state, 32-bit words) and its range coder (the queue coder) code the same stream with
the same static model onnxdc's ``rans`` sends (frequencies quantized to 2**12, given to
``Categorical`` as probabilities); the model's bytes and a 4-byte count are added to theirs so both
sides pay for what a decoder needs.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from onnxdc.coders import get_coder
from onnxdc.coders.rans import _model_bytes, quantize
from onnxdc.pipeline.streams import order0_entropy_bits

CODERS = [{"id": "rans"}, {"id": "huffman"}, {"id": "zstd-literals"}]


def _constriction_rows(symbols: np.ndarray, repeat: int) -> list[tuple[str, int, float, float]]:
    """(name, bytes, encode s, best decode s) of constriction's ANS and range coders, or none."""
    try:
        import constriction
    except ImportError:
        return []
    freq = quantize(np.bincount(symbols), 12)
    model = constriction.stream.model.Categorical(freq / freq.sum(), perfect=False)
    side = len(_model_bytes(freq)) + 4
    data = symbols.astype(np.int32)
    rows = []
    for name, make in (("constriction ANS", constriction.stream.stack.AnsCoder),
                       ("constriction range", constriction.stream.queue.RangeEncoder)):
        t0 = time.perf_counter()
        enc = make()
        (enc.encode_reverse if name.endswith("ANS") else enc.encode)(data, model)
        words = enc.get_compressed()
        encode = time.perf_counter() - t0
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            dec = make(words) if name.endswith("ANS") else constriction.stream.queue.RangeDecoder(words)
            out = dec.decode(model, data.size)
            best = min(best, time.perf_counter() - t0)
        assert np.array_equal(out, data)
        rows.append((name, int(words.nbytes) + side, encode, best))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, nargs="+", default=[10_000_000, 43_008])
    parser.add_argument("--p", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    for n in args.symbols:
        rng = np.random.default_rng(0)
        symbols = np.minimum(rng.geometric(args.p, size=n) - 1, 255).astype(np.uint8)
        entropy = order0_entropy_bits(symbols) / 8
        print(f"{n:,} geometric({args.p}) symbols, order-0 entropy {entropy:,.0f} bytes")
        print(f"{'coder':<20}{'bytes':>12}{'over H':>9}{'encode Msym/s':>15}{'decode Msym/s':>15}")
        rows = []
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
            rows.append((config["id"], len(data), enc, best))
        for name, size, enc, best in rows + _constriction_rows(symbols, args.repeat):
            print(f"{name:<20}{size:>12,}{100 * (size / entropy - 1):>8.3f}%"
                  f"{n / enc / 1e6:>15.1f}{n / best / 1e6:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
