"""The context-modelled rANS (``rans-ctx``) on the levels of containers' shared tensors.

For every shared tensor of each container given, prints its levels' bits per weight (over all
``numel`` weights, zero included, as the dense layout codes them): the order-0 entropy, what
order-0 rANS writes, the entropy given the ``rans-ctx`` contexts (models excluded) and what
``rans-ctx`` writes; then the tensor's stored streams (indices + positions + codebook) as the
automatic choice codes them without and with ``rans-ctx`` (``encode_shared(contexts=...)`` on the
container's own quantized values, so the two differ only in the coder), and the file totals.

    python benchmarks/context_coding.py a.onnxdc [b.onnxdc ...] [--candidates]

``--candidates`` also prints, per tensor, the ideal bytes (conditional entropy, models excluded)
of the levels under candidate contexts, the measurement that chose ``rans-ctx``'s: ``order0``;
``above`` the symbol above (i-1, j); ``sig_above`` its significance; ``left`` the symbol before
in the row (i, j-1, which a row-parallel decoder cannot use: a reference); ``colhist`` the
column's history (``rans-ctx``'s contexts); ``colhist+sig_above``; ``rowhist`` the row's history
so far (a reference, like ``left``).

The containers come from ``onnxdc compress`` (e.g. the automatic mode:
``onnxdc compress models/lenet300.onnx --calib models/lenet300.calib.npz --max-drop 0.5 -o x.onnxdc``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from onnx import numpy_helper

from onnxdc.api import (
    AUTO_INDEX_CODERS,
    Clustering,
    ShareConfig,
    decompress,
    encode_shared,
    get_coder,
    level_contexts,
    order0_entropy_bits,
    read_container,
    row_length,
)

#: Contexts of ``rans-ctx`` (first row, column all zero so far, four fraction buckets).
CONTEXTS = 6


def levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dense levels of quantized values (0: zero, 1..: the non-zero values in ascending order)
    and the non-zero values."""
    flat = values.reshape(-1)
    nonzero = np.unique(flat[flat != 0])
    lev = np.zeros(flat.size, dtype=np.uint8)
    lev[flat != 0] = np.searchsorted(nonzero, flat[flat != 0]) + 1
    return lev, nonzero


def context_entropy_bits(symbols: np.ndarray, row: int) -> float:
    ctx = level_contexts(symbols, row)
    joint = np.bincount(ctx * 256 + symbols, minlength=CONTEXTS * 256).reshape(CONTEXTS, 256)
    return sum(order0_entropy_bits(np.repeat(np.arange(256, dtype=np.uint8), r)) for r in joint)


def _conditional_bytes(x: np.ndarray, ctx: np.ndarray) -> float:
    joint = np.bincount(ctx.astype(np.int64) * 256 + x, minlength=(int(ctx.max()) + 1) * 256).reshape(-1, 256)
    return sum(order0_entropy_bits(np.repeat(np.arange(256, dtype=np.uint8), r)) for r in joint) / 8


def candidate_contexts(lev: np.ndarray, row: int) -> dict[str, float]:
    """Ideal bytes of ``lev`` under each candidate context (see the module docstring)."""
    n = lev.size
    rows = n // row
    x = lev[:rows * row].astype(np.int64)
    grid = x.reshape(rows, row)
    above = np.vstack([np.full((1, row), -1), grid[:-1]]).reshape(-1)
    left = np.hstack([np.full((rows, 1), -1), grid[:, :-1]]).reshape(-1)
    col = level_contexts(lev[:rows * row], row).astype(np.int64)
    # The same buckets over the row so far: the contexts of the transposed grid, transposed back.
    rowc = level_contexts(np.ascontiguousarray(lev[:rows * row].reshape(rows, row).T).reshape(-1), rows)
    rowc = rowc.reshape(row, rows).T.reshape(-1).astype(np.int64)
    sig_above = np.where(above < 0, 2, above > 0)
    return {"order0": order0_entropy_bits(lev[:rows * row]) / 8,
            "above": _conditional_bytes(x, above + 1), "sig_above": _conditional_bytes(x, sig_above),
            "left": _conditional_bytes(x, left + 1), "colhist": _conditional_bytes(x, col),
            "colhist+sig_above": _conditional_bytes(x, col * 3 + sig_above), "rowhist": _conditional_bytes(x, rowc)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("containers", nargs="+")
    parser.add_argument("--candidates", action="store_true", help="also the ideal bytes of candidate contexts")
    args = parser.parse_args()
    for path in args.containers:
        data = open(path, "rb").read()
        c = read_container(data)
        model = decompress(c)
        arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}  # the main graph's
        print(f"== {path}")
        print(f"{'tensor':<15}{'numel':>8}{'nnz':>7}{'row':>5} | bits/weight: {'H0':>6}{'rans':>7}{'Hctx':>7}"
              f"{'r-ctx':>7} | stored bytes: {'without':>8} {'layout/coder':<24}{'with':>7} layout/coder")
        saved = 0
        for info in c.header.tensors:
            p = info.params
            if info.encoding != "shared" or p["nnz"] == 0:
                continue
            v = arrays[info.name]
            lev, nonzero = levels(v)
            row = row_length(info.shape, p["op"])
            n = lev.size
            bpw = [order0_entropy_bits(lev) / n, 8 * len(get_coder({"id": "rans"}).encode(lev)) / n,
                   context_entropy_bits(lev, row) / n, 8 * len(get_coder({"id": "rans-ctx", "row": row}).encode(lev)) / n]
            keep = v.reshape(-1) != 0
            clus = Clustering(nonzero.astype(np.float32), (lev[keep] - 1).astype(np.uint8))
            share = ShareConfig(bits=p["bits"], codebook_dtype=p["codebook_dtype"])
            coded = []
            for ctx in (False, True):
                st = encode_shared(v, keep.reshape(v.shape), share=share, index_coders=AUTO_INDEX_CODERS, op=p["op"],
                                   clustering=clus, contexts=ctx)
                size = sum(len(s.data) for s in st.streams.values())
                label = st.params["positions"] + "/" + "+".join(
                    s.coder["id"] for r, s in st.streams.items() if r != "codebook")
                coded.append((size, label))
            saved += coded[0][0] - coded[1][0]
            print(f"{info.name[:14]:<15}{n:>8}{p['nnz']:>7}{row:>5} |              "
                  + "".join(f"{b:>7.3f}" for b in bpw)
                  + f" |               {coded[0][0]:>8} {coded[0][1]:<24}{coded[1][0]:>7} {coded[1][1]}")
            if args.candidates and n >= 2 * row:
                print("    ideal bytes: " + "  ".join(f"{k} {v:,.0f}" for k, v in candidate_contexts(lev, row).items()))
        size = os.path.getsize(path)
        print(f"tensors' streams: {saved:,} bytes smaller with rans-ctx; this file: {size:,} bytes")


if __name__ == "__main__":
    main()
