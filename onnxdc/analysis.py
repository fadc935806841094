"""The ``report`` command's analysis: where a container's bytes go and how close its coders come to
the entropy of what they code.

Unlike :mod:`onnxdc.report` (the header alone, for ``compress`` right after writing), this decodes
each weight-shared tensor's index and position streams back to its *levels*: one symbol per weight,
0 where pruned, else 1 + the codebook index (the dense layout's index stream is already that). The
levels are what any layout codes, so their order-0 entropy — and their entropy given ``rans-ctx``'s
contexts — are bounds every layout can be held to: the gap between them and the coded bits per
weight is what the coder gains or leaves on the table. Bits per weight count every weight of a
tensor, pruned ones included (a 90%-pruned tensor at 0.5 b/w costs 0.5 bits per original weight).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from onnxdc.coders.rans_ctx import contexts
from onnxdc.dtypes import CODEBOOK_DTYPES, dtype_name, np_dtype
from onnxdc.errors import ModelError
from onnxdc.format.positions import decode_mask, decode_relative
from onnxdc.format.registry import decode_tensor
from onnxdc.onnx_io.tensors import iter_tensors, tensor_array, tensor_raw_bytes
from onnxdc.pipeline.shared import row_length
from onnxdc.report import Report, clip, coder_label, printable, report_for

if TYPE_CHECKING:
    import onnx

    from onnxdc.format.container import Container
    from onnxdc.format.header import TensorInfo

#: The parts a tensor's bytes are split into, in the order reports show them.
PARTS = ("codebook", "positions", "levels")


@dataclass(frozen=True)
class TensorAnalysis:
    """One stored tensor: its settings, its bytes by part, and its bits per weight.

    ``quantizer`` is ``uniform`` (the automatic mode's entropy-constrained levels times one
    ``step``), ``k-means`` (the manual mode's shared values) or ``exact`` (stored losslessly).
    ``coded_bpw`` is the levels' coded bits (index and position streams, codebook apart) per weight;
    ``entropy_bpw`` their order-0 entropy and ``context_bpw`` their entropy given ``rans-ctx``'s
    contexts (None for exact tensors, and ``context_bpw`` for tensors of one row).
    """

    name: str
    slot: int
    op: str
    dtype: str
    shape: tuple[int, ...]
    numel: int
    quantizer: str
    layout: str  # the positions scheme (relative | mask | dense), or "planes"
    coder: str
    sparsity: float
    bits: int | None
    k: int | None
    step: float | None
    method: str
    bytes: dict[str, int]  # PARTS -> bytes
    original_bytes: int
    coded_bpw: float
    entropy_bpw: float | None
    context_bpw: float | None
    codebook: tuple[float, ...]

    @property
    def stored_bytes(self) -> int:
        return sum(self.bytes.values())

    @property
    def bpw(self) -> float:
        """Every stored bit of the tensor (codebook included) per weight."""
        return 8 * self.stored_bytes / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class Analysis:
    """Every stored tensor's analysis, and the header-only report whose totals make up the file."""

    report: Report
    tensors: tuple[TensorAnalysis, ...]
    sensitivity_recorded: bool  # containers record no sensitivity curves today (see the README)
    metadata: dict  # the header's: settings, calibration methods, the automatic mode's budget

    @property
    def numel(self) -> int:
        return sum(t.numel for t in self.tensors)

    def total_bpw(self, *, whole_file: bool = False) -> float:
        """Stored tensor bits per weight; with ``whole_file``, the file's bits (header and skeleton
        included) per stored weight."""
        n = max(self.numel, 1)
        return 8 * (self.report.file_bytes if whole_file else self.report.tensor_stored_bytes) / n

    def total_entropy_bpw(self) -> float | None:
        """Order-0 entropy of every shared tensor's levels, plus the exact tensors' stored bits,
        per weight: what the file's tensors would cost with an ideal order-0 coder of the levels."""
        return self._total(lambda t: t.entropy_bpw)

    def total_context_bpw(self) -> float | None:
        """As :meth:`total_entropy_bpw`, with the context entropy where a tensor has one."""
        return self._total(lambda t: t.context_bpw if t.context_bpw is not None else t.entropy_bpw)

    def _total(self, pick) -> float | None:  # noqa: ANN001 - TensorAnalysis -> float | None
        if not any(t.entropy_bpw is not None for t in self.tensors):
            return None
        bits = sum(8 * t.stored_bytes if pick(t) is None else pick(t) * t.numel + 8 * t.bytes["codebook"]
                   for t in self.tensors)
        return bits / max(self.numel, 1)

    def to_json(self) -> dict:
        rows = [{**asdict(t), "shape": list(t.shape), "codebook": list(t.codebook), "stored_bytes": t.stored_bytes,
                 "bpw": round(t.bpw, 6)} for t in self.tensors]
        return {**self.report.to_json(), "analysis": rows, "bpw": round(self.total_bpw(), 6),
                "file_bpw": round(self.total_bpw(whole_file=True), 6),
                "entropy_bpw": _round(self.total_entropy_bpw()), "context_bpw": _round(self.total_context_bpw()),
                "sensitivity_recorded": self.sensitivity_recorded}


def analyze(container: Container, *, on_values: Callable[[TensorInfo, np.ndarray], None] | None = None) -> Analysis:
    """Decode every shared tensor's levels and measure them (see the module doc).

    Args:
        container: a container read with its streams (not a header-only one).
        on_values: called with each tensor and its decoded values (float32, in its shape), made
            from the levels already decoded (the HTML page's histograms): the streams are decoded
            once, not again by :func:`decoded_weights`.

    Raises:
        ContainerError: a stream is corrupted or does not decode.
    """
    methods = container.header.metadata.get("calibration", {}).get("tensors", {})
    rows = tuple(_analyze_tensor(t, container, methods.get(t.name or t.path, {}).get("method", ""), on_values)
                 for t in container.header.tensors)
    return Analysis(report_for(container.header, container.header_size), rows, sensitivity_recorded=False,
                    metadata=container.header.metadata)


def tensor_levels(info: TensorInfo, container: Container) -> np.ndarray:
    """A shared tensor's levels, one per weight in flat order: 0 where pruned, else 1 + the index
    (the dense layout's own index stream, whose code 0 is zero or, with nothing pruned, the first
    shared value)."""
    p = info.params
    idx = container.decode_stream(info.streams["indices"])
    if p["positions"] == "dense":
        return idx.astype(np.int64)
    syms = container.decode_stream(info.streams["positions"])
    if p["positions"] == "relative":
        pos = decode_relative(syms, bits=p["position_bits"], numel=p["numel"], nnz=p["nnz"], name=info.name)
    else:
        pos = decode_mask(syms, numel=p["numel"], nnz=p["nnz"], name=info.name)
    levels = np.zeros(p["numel"], dtype=np.int64)
    levels[pos] = idx.astype(np.int64) + 1
    return levels


def decoded_weights(info: TensorInfo, container: Container) -> np.ndarray:
    """A stored tensor's decoded values (checked against its CRC), as float32 in its shape."""
    raw = decode_tensor(info, container)
    return np.frombuffer(raw, dtype=np_dtype(info.dtype).newbyteorder("<")).astype(np.float32).reshape(info.shape)


def original_weights(model: onnx.ModelProto, container: Container) -> dict[int, np.ndarray]:
    """The weights of the model ``container`` was made from, by slot, as float32 in their shapes.

    Raises:
        ModelError: the model holds no tensor at a stored tensor's slot, or one of another name or
            shape (it is not the container's original).
    """
    refs = {r.slot: r for r in iter_tensors(model)}
    out = {}
    for t in container.header.tensors:
        ref = refs.get(t.slot)
        if ref is None or ref.proto.name != t.name or tuple(ref.proto.dims) != t.shape:
            found = "nothing" if ref is None else f"{ref.proto.name!r} of shape {tuple(ref.proto.dims)}"
            raise ModelError(f"tensor {t.name or t.path!r} (slot {t.slot}, shape {t.shape}) is not in the model: "
                             f"found {found}; is it the container's original?")
        out[t.slot] = tensor_array(ref.proto, tensor_raw_bytes(ref.proto)).astype(np.float32)
    return out


def entropy_bits(levels: np.ndarray) -> float:
    """Order-0 entropy of integer symbols, in bits (the sum of -log2 of each symbol's frequency)."""
    if levels.size == 0:
        return 0.0
    counts = np.bincount(levels.reshape(-1)).astype(np.float64)
    counts = counts[counts > 0]
    return max(0.0, float(-(counts * np.log2(counts / levels.size)).sum()))  # never -0.0


def context_entropy_bits(levels: np.ndarray, row: int) -> float:
    """The levels' entropy given the contexts ``rans-ctx`` codes them in: each context's order-0
    entropy, summed (its models' bytes excluded)."""
    ctx = contexts(levels, row)
    return sum(entropy_bits(levels[ctx == c]) for c in np.unique(ctx))


def uniform_step(codebook: np.ndarray) -> float | None:
    """The step of a codebook whose values are integer multiples of one step, else None.

    The automatic mode stores levels times its step as shared values, but only the levels used,
    so the smallest value may be a multiple of the step: the largest divisor of it (1..64) on
    whose grid every value falls is the step. Values are float32: a level of a few hundred is
    still within 1e-3 of an integer.
    """
    vals = np.abs(codebook[codebook != 0].astype(np.float64))
    if vals.size == 0:
        return None
    for n in range(1, 65):
        step = vals.min() / n
        q = vals / step
        if q.max() <= 4096 and np.all(np.abs(q - np.rint(q)) <= 1e-3):
            return float(step)
    return None


def _analyze_tensor(t: TensorInfo, container: Container, method: str,
                    on_values: Callable[[TensorInfo, np.ndarray], None] | None) -> TensorAnalysis:
    s = container.header.streams
    numel = math.prod(t.shape)
    coder = coder_label(s[t.streams["indices"]].coder) if "indices" in t.streams else ",".join(
        sorted({coder_label(s[i].coder) for i in t.streams.values()}))
    if t.encoding != "shared":
        if on_values is not None:
            on_values(t, decoded_weights(t, container))
        stored = sum(s[i].length for i in t.streams.values())
        return TensorAnalysis(t.name or t.path, t.slot, "", dtype_name(t.dtype), t.shape, numel, "exact", "planes",
                              coder, 0.0, None, None, None, method, {"codebook": 0, "positions": 0, "levels": stored},
                              t.nbytes, 8 * stored / numel if numel else 0.0, None, None, ())
    p = t.params
    cb = np.frombuffer(container.decode_stream(t.streams["codebook"]).tobytes(),
                       dtype=np.dtype(CODEBOOK_DTYPES[p["codebook_dtype"]]).newbyteorder("<")).astype(np.float64)
    levels = tensor_levels(t, container)
    if on_values is not None:  # what format.shared decodes: codebook[index] where kept, else exact zeros
        table = cb.astype(np.float32) if p["positions"] == "dense" else np.concatenate([[0.0], cb]).astype(np.float32)
        on_values(t, table[levels].astype(np_dtype(t.dtype)).astype(np.float32).reshape(t.shape))
    parts = {"codebook": s[t.streams["codebook"]].length,
             "positions": s[t.streams["positions"]].length if "positions" in t.streams else 0,
             "levels": s[t.streams["indices"]].length}
    row = row_length(t.shape, p["op"])
    ctx = context_entropy_bits(levels, row) / numel if len(t.shape) >= 2 and row < numel else None
    # The automatic mode picks uniform levels or k-means per tensor (both "rd"): the codebook says which.
    step = uniform_step(cb) if method.startswith("rd") else None
    return TensorAnalysis(
        t.name or t.path, t.slot, p["op"], dtype_name(t.dtype), t.shape, numel, "uniform" if step is not None else "k-means",
        p["positions"], coder, 1 - p["nnz"] / max(numel, 1), p["bits"], p["k"], step,
        method, parts, t.nbytes, 8 * (parts["positions"] + parts["levels"]) / max(numel, 1),
        entropy_bits(levels) / max(numel, 1), ctx, tuple(float(v) for v in cb))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def format_analysis(a: Analysis, *, top: int | None = None) -> str:
    """The per-tensor analysis table and the bits-per-weight totals, as plain text."""
    rows = sorted(a.tensors, key=lambda r: (-r.original_bytes, r.slot))
    shown = rows if top is None else rows[:top]
    name_w = min(40, max([len("tensor")] + [len(printable(r.name)) for r in shown]))
    lines = [f"{'tensor':<{name_w}}  {'op':<8} {'quantizer':<9} {'setting':<12} {'sparsity':>8} {'layout':<8} "
             f"{'codebook':>8} {'positions':>9} {'levels':>9} {'b/w':>6} {'H0 b/w':>6} {'ctx b/w':>7}  coder"]
    for r in shown:
        lines.append(f"{clip(printable(r.name), name_w):<{name_w}}  {clip(printable(r.op or '-'), 8):<8} {r.quantizer:<9} {_setting(r):<12} "
                     f"{r.sparsity:>8.1%} {r.layout:<8} {r.bytes['codebook']:>8,} {r.bytes['positions']:>9,} "
                     f"{r.bytes['levels']:>9,} {r.coded_bpw:>6.3f} {_opt(r.entropy_bpw):>6} "
                     f"{_opt(r.context_bpw):>7}  {printable(r.coder)}")
    if top is not None and len(rows) > top:
        lines.append(f"... {len(rows) - top} more tensors (--all shows them)")
    lines += ["", "b/w: coded bits of the levels (positions + indices) per weight, pruned ones included; "
              "H0: their order-0 entropy; ctx: their entropy in rans-ctx's contexts",
              f"bits per weight, all {a.numel:,} stored weights: tensors {a.total_bpw():.3f} "
              f"(order-0 entropy {_opt(a.total_entropy_bpw())}, context entropy {_opt(a.total_context_bpw())}; "
              f"codebooks included), whole file {a.total_bpw(whole_file=True):.3f}",
              "sensitivity curves: not recorded in the container (the automatic mode keeps only its choices)"]
    return "\n".join(lines)


def _setting(r: TensorAnalysis) -> str:
    if r.quantizer != "exact" and not r.k:
        return "all pruned"
    if r.quantizer == "uniform":
        return f"step {r.step:.3g}" if r.step is not None else f"k={r.k}"
    if r.quantizer == "k-means":
        return f"{r.bits} bits, k={r.k}"
    return "exact"


def _opt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
