"""The context-modelled rANS (``rans-ctx``) on the levels of containers' shared tensors.

For every shared tensor of each container given, prints its levels' bits per weight (over all
``numel`` weights, zero included, as the dense layout codes them): the order-0 entropy, what
order-0 rANS writes, the entropy given the ``rans-ctx`` contexts (models excluded) and what
``rans-ctx`` writes; then the tensor's stored streams (indices + positions + codebook) as the
automatic choice codes them without and with ``rans-ctx`` (``encode_shared(contexts=...)`` on the
container's own quantized values, so the two differ only in the coder), and the file totals.

    python benchmarks/context_coding.py a.onnxdc [b.onnxdc ...]

The containers come from ``onnxdc compress`` (e.g. the automatic mode:
``onnxdc compress models/lenet300.onnx --calib models/lenet300.calib.npz --max-drop 0.5 -o x.onnxdc``).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from onnxdc.coders.rans import RansCoder
from onnxdc.coders.rans_ctx import CONTEXTS, RansCtxCoder, contexts
from onnxdc.dtypes import np_dtype
from onnxdc.format.container import read_container
from onnxdc.format.registry import decode_tensor
from onnxdc.pipeline.settings import AUTO_INDEX_CODERS
from onnxdc.pipeline.shared import encode_shared, row_length
from onnxdc.pipeline.streams import order0_entropy_bits
from onnxdc.stages.quantize import Clustering, ShareConfig


def levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The dense levels of quantized values (0: zero, 1..: the non-zero values in ascending order)
    and the non-zero values."""
    flat = values.reshape(-1)
    nonzero = np.unique(flat[flat != 0])
    lev = np.zeros(flat.size, dtype=np.uint8)
    lev[flat != 0] = np.searchsorted(nonzero, flat[flat != 0]) + 1
    return lev, nonzero


def context_entropy_bits(symbols: np.ndarray, row: int) -> float:
    ctx = contexts(symbols, row)
    joint = np.bincount(ctx * 256 + symbols, minlength=CONTEXTS * 256).reshape(CONTEXTS, 256)
    return sum(order0_entropy_bits(np.repeat(np.arange(256, dtype=np.uint8), r)) for r in joint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("containers", nargs="+")
    args = parser.parse_args()
    for path in args.containers:
        data = open(path, "rb").read()
        c = read_container(data)
        print(f"== {path}")
        print(f"{'tensor':<15}{'numel':>8}{'nnz':>7}{'row':>5} | bits/weight: {'H0':>6}{'rans':>7}{'Hctx':>7}"
              f"{'r-ctx':>7} | stored bytes: {'without':>8} {'layout/coder':<24}{'with':>7} layout/coder")
        saved = 0
        for info in c.header.tensors:
            p = info.params
            if info.encoding != "shared" or p["nnz"] == 0:
                continue
            v = np.frombuffer(bytes(decode_tensor(info, c)), dtype=np_dtype(info.dtype)).reshape(info.shape)
            lev, nonzero = levels(v)
            row = row_length(info.shape, p["op"])
            n = lev.size
            bpw = [order0_entropy_bits(lev) / n, 8 * len(RansCoder().encode(lev)) / n,
                   context_entropy_bits(lev, row) / n, 8 * len(RansCtxCoder(row).encode(lev)) / n]
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
        size = os.path.getsize(path)
        print(f"tensors' streams: {saved:,} bytes smaller with rans-ctx; this file: {size:,} bytes")


if __name__ == "__main__":
    main()
