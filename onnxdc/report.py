"""Size reports computed from a container header alone (no decoding needed).

The same code serves ``compress`` (right after writing) and ``inspect`` / ``report`` (on any file),
so the numbers a user sees always describe the bytes on disk. The rows add up to the file size: the
tensors' streams, the skeleton stream, and the container overhead (prefix + JSON header).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from onnxdc.container import Container
from onnxdc.graphio import dtype_name


@dataclass(frozen=True)
class TensorRow:
    """One stored tensor in the report."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    original_bytes: int
    stored_bytes: int
    coders: str

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.stored_bytes if self.stored_bytes else math.inf


@dataclass(frozen=True)
class Report:
    """Per-tensor rows and the totals that add up to the container size."""

    tensors: tuple[TensorRow, ...]
    tensor_original_bytes: int
    tensor_stored_bytes: int
    skeleton_original_bytes: int
    skeleton_stored_bytes: int
    overhead_bytes: int
    file_bytes: int

    def to_json(self) -> dict:
        out = asdict(self)
        out["tensors"] = [{**asdict(r), "shape": list(r.shape), "ratio": _finite(r.ratio)} for r in self.tensors]
        out["ratio"] = _finite(self.ratio)
        return out

    @property
    def ratio(self) -> float:
        """Original bytes (tensors + skeleton) over file bytes."""
        orig = self.tensor_original_bytes + self.skeleton_original_bytes
        return orig / self.file_bytes if self.file_bytes else math.inf


def _finite(x: float) -> float | None:
    return round(x, 4) if math.isfinite(x) else None


def _coder_label(cfg: dict) -> str:
    if cfg.get("id") == "chain":
        return "+".join(_coder_label(c) for c in cfg.get("coders", []))
    return str(cfg.get("id"))


def build_report(container: Container) -> Report:
    """Summarize a container: per-tensor sizes and the totals that make up the file."""
    h = container.header
    rows = []
    for t in h.tensors:
        streams = [h.streams[i] for i in t.streams.values()]
        coders = ",".join(sorted({_coder_label(s.coder) for s in streams}))
        rows.append(TensorRow(t.name, dtype_name(t.dtype), t.shape, t.encoding, t.nbytes,
                              sum(s.length for s in streams), coders))
    skel = h.streams[h.skeleton]
    payload = sum(s.length for s in h.streams)
    return Report(
        tensors=tuple(rows),
        tensor_original_bytes=sum(r.original_bytes for r in rows),
        tensor_stored_bytes=sum(r.stored_bytes for r in rows),
        skeleton_original_bytes=skel.count,
        skeleton_stored_bytes=skel.length,
        overhead_bytes=container.header_size,
        file_bytes=container.header_size + payload,
    )


def format_report(report: Report, *, top: int | None = None) -> str:
    """Render the report as a plain-text table (largest tensors first when ``top`` is set)."""
    rows = sorted(report.tensors, key=lambda r: -r.original_bytes)
    if top is not None:
        rows = rows[:top]
    name_w = min(48, max([len("tensor")] + [len(r.name) for r in rows]))
    lines = [f"{'tensor':<{name_w}}  {'dtype':<8} {'shape':<18} {'encoding':<8} "
             f"{'original':>12} {'stored':>12} {'ratio':>8}  coders"]
    for r in rows:
        shape = "x".join(map(str, r.shape)) or "scalar"
        lines.append(f"{_clip(r.name, name_w):<{name_w}}  {r.dtype:<8} {_clip(shape, 18):<18} {r.encoding:<8} "
                     f"{r.original_bytes:>12,} {r.stored_bytes:>12,} {_ratio(r.ratio):>8}  {r.coders}")
    if top is not None and len(report.tensors) > top:
        lines.append(f"... {len(report.tensors) - top} more tensors (--all shows them)")
    lines.append("")
    lines.append(f"{'tensors':<22}{report.tensor_original_bytes:>14,} -> {report.tensor_stored_bytes:>12,} bytes")
    lines.append(f"{'skeleton (graph)':<22}{report.skeleton_original_bytes:>14,} -> "
                 f"{report.skeleton_stored_bytes:>12,} bytes")
    lines.append(f"{'container overhead':<22}{'':>14}    {report.overhead_bytes:>12,} bytes")
    total_orig = report.tensor_original_bytes + report.skeleton_original_bytes
    lines.append(f"{'total':<22}{total_orig:>14,} -> {report.file_bytes:>12,} bytes  ({_ratio(report.ratio)})")
    return "\n".join(lines)


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if math.isfinite(x) else "inf"


def _clip(s: str, w: int) -> str:
    return s if len(s) <= w else s[: w - 1] + "…"
