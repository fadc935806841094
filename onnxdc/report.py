"""Size reports computed from a container header alone (no decoding needed).

The same code serves ``compress`` (right after writing) and ``inspect`` / ``report`` (on any file),
so the numbers a user sees always describe the bytes on disk. The rows add up to the file size: the
tensors' streams, the skeleton stream, and the container overhead (prefix + JSON header).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from onnxdc.dtypes import dtype_name
from onnxdc.format.container import Container, Header


@dataclass(frozen=True)
class TensorRow:
    """One stored tensor in the report.

    ``pruned_bytes`` and ``shared_bytes`` are the sizes after the first two Deep Compression stages
    (values + fixed-width positions; then fixed-width indices + positions + codebook); for tensors
    stored losslessly they equal ``original_bytes``. ``position_bpw`` / ``index_bpw`` are coded
    bits per stored weight.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    original_bytes: int
    stored_bytes: int
    coders: str
    op: str = ""
    sparsity: float = 0.0
    bits: int | None = None
    pruned_bytes: int = 0
    shared_bytes: int = 0
    position_bpw: float | None = None
    index_bpw: float | None = None
    numel: int = 0

    @property
    def bpw(self) -> float:
        """Every stored bit of the tensor per weight (pruned weights included)."""
        return 8 * self.stored_bytes / self.numel if self.numel else 0.0

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.stored_bytes if self.stored_bytes else math.inf


@dataclass(frozen=True)
class Report:
    """Per-tensor rows and the totals that add up to the container size."""

    tensors: tuple[TensorRow, ...]
    tensor_original_bytes: int
    tensor_pruned_bytes: int
    tensor_shared_bytes: int
    tensor_stored_bytes: int
    skeleton_original_bytes: int
    skeleton_stored_bytes: int
    overhead_bytes: int
    file_bytes: int

    def to_json(self) -> dict:
        out = asdict(self)
        out["tensors"] = [{**asdict(r), "shape": list(r.shape), "ratio": _finite(r.ratio), "bpw": round(r.bpw, 6)}
                          for r in self.tensors]
        out["ratio"] = _finite(self.ratio)
        out["bpw"] = round(self.bpw, 6)
        return out

    @property
    def bpw(self) -> float:
        """Stored tensor bits per stored weight (the skeleton's small tensors not counted)."""
        n = sum(r.numel for r in self.tensors)
        return 8 * self.tensor_stored_bytes / n if n else 0.0

    @property
    def ratio(self) -> float:
        """Original weight bytes over file bytes: the paper's compression rate."""
        return self.tensor_original_bytes / self.file_bytes if self.file_bytes else math.inf


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def coder_label(cfg: dict) -> str:
    """A stream's coder as reports show it: its id, a chain's ids joined by ``+``."""
    if cfg.get("id") == "chain":
        return "+".join(coder_label(c) for c in cfg.get("coders", []))
    return str(cfg.get("id"))


def build_report(container: Container) -> Report:
    """Summarize a container: per-tensor sizes and the totals that make up the file."""
    return report_for(container.header, container.header_size)


def report_for(h: Header, header_size: int) -> Report:
    """The report of a container with header ``h`` stored in ``header_size`` bytes (prefix included)."""
    rows = []
    for t in h.tensors:
        streams = [h.streams[i] for i in t.streams.values()]
        stored = sum(s.length for s in streams)
        if t.encoding == "shared":
            p = t.params
            nnz = max(p["nnz"], 1)
            idx = h.streams[t.streams["indices"]]
            pos_bits = 8 * h.streams[t.streams["positions"]].length / nnz if "positions" in t.streams else 0.0
            coders = coder_label(idx.coder)
            rows.append(TensorRow(t.name or t.path, dtype_name(t.dtype), t.shape, t.encoding, t.nbytes, stored,
                                  coders, op=p["op"], sparsity=1 - p["nnz"] / max(p["numel"], 1), bits=p["bits"],
                                  pruned_bytes=p["pruned_bytes"], shared_bytes=p["shared_bytes"],
                                  position_bpw=round(pos_bits, 3), index_bpw=round(8 * idx.length / nnz, 3),
                                  numel=p["numel"]))
        else:
            coders = ",".join(sorted({coder_label(s.coder) for s in streams}))
            rows.append(TensorRow(t.name or t.path, dtype_name(t.dtype), t.shape, t.encoding, t.nbytes, stored,
                                  coders, pruned_bytes=t.nbytes, shared_bytes=t.nbytes, numel=math.prod(t.shape)))
    skel = h.streams[h.skeleton]
    payload = sum(s.length for s in h.streams)
    return Report(
        tensors=tuple(rows),
        tensor_original_bytes=sum(r.original_bytes for r in rows),
        tensor_pruned_bytes=sum(r.pruned_bytes for r in rows),
        tensor_shared_bytes=sum(r.shared_bytes for r in rows),
        tensor_stored_bytes=sum(r.stored_bytes for r in rows),
        skeleton_original_bytes=skel.count,
        skeleton_stored_bytes=skel.length,
        overhead_bytes=header_size,
        file_bytes=header_size + payload,
    )


def format_stages(report: Report) -> str:
    """The stage summary: original weights, after each stage, skeleton and header, the file."""
    orig = report.tensor_original_bytes
    return "\n".join([
        f"{'stage':<32}{'bytes':>14}  {'ratio':>8}",
        f"{'original weights':<32}{orig:>14,}  {_ratio(1.0):>8}",
        f"{'after pruning (values + positions)':<32}{report.tensor_pruned_bytes:>14,}  "
        f"{_ratio(_div(orig, report.tensor_pruned_bytes)):>8}",
        f"{'after weight sharing (fixed width)':<32}{report.tensor_shared_bytes:>14,}  "
        f"{_ratio(_div(orig, report.tensor_shared_bytes)):>8}",
        f"{'after entropy coding':<32}{report.tensor_stored_bytes:>14,}  "
        f"{_ratio(_div(orig, report.tensor_stored_bytes)):>8}  ({report.bpw:.3f} bits per weight)",
        f"{'+ skeleton (graph, small tensors)':<32}{report.skeleton_stored_bytes:>14,}",
        f"{'+ container overhead (header)':<32}{report.overhead_bytes:>14,}",
        f"{'= file':<32}{report.file_bytes:>14,}  {_ratio(_div(orig, report.file_bytes)):>8}  (of weights)"])


def format_report(report: Report, *, top: int | None = None) -> str:
    """Render the stage summary and the per-tensor table (largest tensors first when ``top``)."""
    rows = sorted(report.tensors, key=lambda r: -r.original_bytes)
    if top is not None:
        rows = rows[:top]
    lines = [format_stages(report), ""]
    name_w = min(40, max([len("tensor")] + [len(printable(r.name)) for r in rows]))
    lines.append(f"{'tensor':<{name_w}}  {'shape':<14} {'op':<8} {'encoding':<8} {'sparsity':>8} {'bits':>4} "
                 f"{'pos b/w':>7} {'idx b/w':>7} {'b/w':>6} {'original':>11} {'stored':>10} {'ratio':>8}  coder")
    for r in rows:
        shape = "x".join(map(str, r.shape)) or "scalar"
        lines.append(
            f"{clip(printable(r.name), name_w):<{name_w}}  {clip(shape, 14):<14} {clip(printable(r.op or '-'), 8):<8} "
            f"{printable(r.encoding):<8} {r.sparsity:>8.1%} {r.bits if r.bits else '-':>4} {_opt(r.position_bpw):>7} "
            f"{_opt(r.index_bpw):>7} {r.bpw:>6.3f} {r.original_bytes:>11,} {r.stored_bytes:>10,} {_ratio(r.ratio):>8}  "
            f"{printable(r.coders)}")
    if top is not None and len(report.tensors) > top:
        lines.append(f"... {len(report.tensors) - top} more tensors (--all shows them)")
    return "\n".join(lines)


def printable(text: str) -> str:
    """``text`` with every control, format or separator character but the space escaped
    (``\\x1b``, ``\\u202e``), for a terminal.

    Names, op types, coder ids and the producer come from the container: a hostile one could
    otherwise move the cursor, rewrite earlier lines, set the window title or reverse the text
    direction when printed. Printable text, every real name, comes out unchanged.
    """
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _div(a: int, b: int) -> float:
    return a / b if b else math.inf


def _opt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if math.isfinite(x) else "inf"


def clip(s: str, w: int) -> str:
    """``s`` cut to ``w`` characters, an ellipsis marking the cut (for table columns)."""
    return s if len(s) <= w else s[: w - 1] + "…"
