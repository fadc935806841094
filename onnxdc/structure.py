"""A container's structure, from its header alone (``inspect``): what is stored where, nothing
decoded. The analysis of what the bytes buy is :mod:`onnxdc.analysis` (``report``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from onnxdc.dtypes import dtype_name
from onnxdc.report import clip, coder_label, printable

if TYPE_CHECKING:
    from onnxdc.format.container import Container


def structure(container: Container) -> dict[str, Any]:
    """The header's facts as JSON-native data: version, producer, metadata, the skeleton stream,
    and per tensor its place, encoding, layout and streams (role, coder, symbols, bytes)."""
    h = container.header
    skel = h.streams[h.skeleton]
    tensors = []
    for t in h.tensors:
        streams = [{"role": role, "index": i, "coder": coder_label(h.streams[i].coder), "symbols": h.streams[i].count,
                    "bytes": h.streams[i].length} for role, i in t.streams.items()]
        p = t.params
        tensors.append({"name": t.name, "path": t.path, "slot": t.slot, "dtype": dtype_name(t.dtype),
                        "shape": list(t.shape), "encoding": t.encoding, "layout": p.get("positions", "planes"),
                        "op": p.get("op", ""), "bits": p.get("bits"), "k": p.get("k"), "nnz": p.get("nnz"),
                        "original_bytes": t.nbytes, "stored_bytes": sum(s["bytes"] for s in streams),
                        "streams": streams})
    payload = sum(s.length for s in h.streams)
    return {"format_version": f"{container.version[0]}.{container.version[1]}", "producer": h.producer,
            "streams": len(h.streams), "header_bytes": container.header_size,
            "skeleton": {"coder": coder_label(skel.coder), "symbols": skel.count, "bytes": skel.length},
            "file_bytes": container.header_size + payload, "metadata": h.metadata, "tensors": tensors}


def format_structure(info: dict[str, Any], *, top: int | None = None) -> str:
    """:func:`structure` as text: a summary, the settings, one line per tensor and per stream."""
    tensors = sorted(info["tensors"], key=lambda t: (-t["original_bytes"], t["slot"]))
    shown = tensors if top is None else tensors[:top]
    sk = info["skeleton"]
    lines = [f"onnxdc container {info['format_version']}, written by {printable(info['producer'])}, "
             f"{len(info['tensors'])} tensors in {info['streams']} streams, {info['file_bytes']:,} bytes",
             f"header {info['header_bytes']:,} bytes; skeleton {sk['bytes']:,} bytes ({sk['symbols']:,} decoded, "
             f"{printable(sk['coder'])})"]
    meta = dict(info["metadata"])  # 3.0 and older headers hold the run's settings; 4.0 a user's entries
    if "settings" in meta:
        lines.append(f"settings: {json.dumps(meta.pop('settings'), sort_keys=True)}")
    auto = meta.pop("auto", None)
    if auto:
        lines.append(f"automatic mode: {json.dumps(auto, sort_keys=True)}")
    if meta:
        lines.append(f"metadata: {json.dumps(meta, sort_keys=True)}")
    name_w = min(40, max([len("tensor")] + [len(printable(t["name"] or t["path"])) for t in shown]))
    lines += ["", f"{'tensor':<{name_w}}  {'slot':>4} {'dtype':<8} {'shape':<14} {'op':<8} {'encoding':<8} "
              f"{'layout':<8} {'bits':>4} {'k':>4} {'stored':>10}  streams (role coder symbols bytes)"]
    for t in shown:
        streams = "; ".join(f"{s['role']} {printable(s['coder'])} {s['symbols']:,} {s['bytes']:,}"
                            for s in t["streams"])
        shape = "x".join(map(str, t["shape"])) or "scalar"
        lines.append(f"{clip(printable(t['name'] or t['path']), name_w):<{name_w}}  {t['slot']:>4} "
                     f"{t['dtype']:<8} {clip(shape, 14):<14} {clip(printable(t['op'] or '-'), 8):<8} "
                     f"{printable(t['encoding']):<8} {printable(str(t['layout'])):<8} {_opt(t['bits']):>4} "
                     f"{_opt(t['k']):>4} {t['stored_bytes']:>10,}  {streams}")
    if top is not None and len(tensors) > top:
        lines.append(f"... {len(tensors) - top} more tensors (--all shows them)")
    return "\n".join(lines)


def _opt(x: Any) -> str:
    return "-" if x is None else str(x)
