"""The ``report --html`` page: one self-contained HTML file of an :class:`~onnxdc.analysis.Analysis`.

Plots are drawn with matplotlib (the optional ``report`` extra) on the Agg backend and embedded as
inline SVG: no script, no stylesheet, font or image is fetched, so the page opens offline and
leaks nothing (glyphs are SVG paths; the SVG's namespace and DTD URLs are dropped, as HTML needs
none for inline SVG). The bytes do not depend on the date or the machine: SVG ids come from a
fixed hash salt and no date is written.
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Mapping

import numpy as np

from onnxdc._version import __version__
from onnxdc.analysis import PARTS, Analysis, TensorAnalysis
from onnxdc.errors import MissingDependencyError

#: Colours of the byte parts (codebook, positions, levels) and of the container's own bytes.
_COLOURS = {"codebook": "#e69f00", "positions": "#56b4e9", "levels": "#0072b2", "container": "#999999"}
_HIST_BINS = 80


def html_report(analysis: Analysis, *, title: str, decoded: Mapping[int, np.ndarray],
                original: Mapping[int, np.ndarray] | None = None) -> str:
    """The page for ``analysis``.

    Args:
        analysis: what :func:`onnxdc.analysis.analyze` measured.
        title: the page's heading (the container's file name).
        decoded: per tensor slot, its decoded values (the histogram without ``original``, and
            which weights were pruned).
        original: per tensor slot, the original model's values: the histograms show them.

    Raises:
        MissingDependencyError: matplotlib is not installed.
    """
    matplotlib = require_matplotlib()
    with matplotlib.rc_context(_RC):
        return _page(analysis, title=title, decoded=decoded, original=original)


def _page(analysis: Analysis, *, title: str, decoded: Mapping[int, np.ndarray],
          original: Mapping[int, np.ndarray] | None) -> str:
    r = analysis.report
    parts = [f"<h1>onnxdc report: {_e(title)}</h1>",
             f"<p class=lead>{r.file_bytes:,} bytes, {_ratio(r.ratio)} of the {r.tensor_original_bytes:,} "
             f"original weight bytes; {analysis.numel:,} stored weights at {analysis.total_bpw():.3f} bits per "
             f"weight ({analysis.total_bpw(whole_file=True):.3f} with header and skeleton).</p>",
             "<h2>Where the bytes go, by stage</h2>", _stage_table(analysis), _svg(_stage_plot(analysis)),
             "<h2>Where the bytes go, by layer</h2>", _svg(_layer_plot(analysis)),
             "<h2>Bits per weight</h2>",
             "<p>Coded: the levels' index and position streams per weight, pruned weights included, codebook "
             "apart. Order-0: the entropy of the levels (0 where pruned, else 1 + the codebook index), the "
             "bound of any order-0 coder. Context: their entropy in <code>rans-ctx</code>'s contexts.</p>",
             _svg(_bpw_plot(analysis)), _tensor_table(analysis),
             "<h2>Weights and their shared values</h2>",
             f"<p>Histograms of the {'original' if original else 'decoded'} weights (log scale)"
             f"{'' if original else ' (give <code>--model original.onnx</code> for the original ones)'}; "
             "the red lines are the tensor's shared values (its codebook), grey the pruned weights"
             f"{', the black outline the decoded kept weights' if original else ''}.</p>",
             "<div class=grid>" + "".join(_histogram_card(t, decoded.get(t.slot), (original or {}).get(t.slot))
                                          for t in _ordered(analysis))
             + "</div>",
             "<h2>Sensitivity</h2>",
             "<p>Not recorded: a container keeps the automatic mode's choices (its recipe rules and budget, "
             "below), not the curves it chose them from; <code>onnxdc sensitivity MODEL --calib DATA</code> "
             "measures them.</p>",
             "<h2>Settings recorded in the container</h2>", _settings(analysis)]
    return _PAGE.format(title=_e(title), version=_e(__version__), body=_unique_ids("\n".join(parts)))


def _unique_ids(body: str) -> str:
    """``body`` with each inline SVG's ids (clip paths, glyphs) prefixed by the figure's number:
    ids are the page's, and two figures must not define one twice."""
    chunks = body.split("<svg")
    for i in range(1, len(chunks)):
        c = re.sub(r'\bid="', f'id="f{i}-', chunks[i])
        c = c.replace('href="#', f'href="#f{i}-').replace("url(#", f"url(#f{i}-")
        chunks[i] = c
    return "<svg".join(chunks)


#: matplotlib settings for the page's figures, set only while it is drawn: fixed SVG ids, glyphs
#: as paths (no font to fetch), no date.
_RC = {"svg.hashsalt": "onnxdc", "svg.fonttype": "path", "font.size": 9, "font.family": "DejaVu Sans",
       "axes.spines.top": False, "axes.spines.right": False}


def require_matplotlib():  # noqa: ANN201 - the matplotlib module
    """matplotlib, or the error naming the extra that installs it."""
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401  (Figure objects: no pyplot, no global backend)
    except ImportError:
        raise MissingDependencyError("the html report needs matplotlib: pip install 'onnxdc[report]'") from None
    return matplotlib


def _figure(width: float, height: float):  # noqa: ANN202 - a Figure and its Axes
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _ordered(a: Analysis) -> list[TensorAnalysis]:
    return sorted(a.tensors, key=lambda t: (-t.original_bytes, t.slot))


def _stage_plot(a: Analysis):  # noqa: ANN001, ANN202 - pyplot, a Figure
    r = a.report
    stages = [("original weights", r.tensor_original_bytes), ("after pruning", r.tensor_pruned_bytes),
              ("after weight sharing", r.tensor_shared_bytes), ("after entropy coding", r.tensor_stored_bytes),
              ("file (+ skeleton, header)", r.file_bytes)]
    fig, ax = _figure(7.5, 2.2)
    y = np.arange(len(stages))[::-1]
    ax.barh(y, [max(b, 1) for _, b in stages], color=["#999999", "#56b4e9", "#e69f00", "#0072b2", "#009e73"])
    ax.set_yticks(y, [s for s, _ in stages])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_plain)
    ax.xaxis.set_minor_formatter(_blank)
    ax.set_xlabel("bytes (log scale)")
    for yi, (_, b) in zip(y, stages):
        ax.text(max(b, 1), yi, f" {b:,}", va="center")
    ax.set_xlim(right=max(b for _, b in stages) * 8)
    return fig


def _layer_plot(a: Analysis):  # noqa: ANN001, ANN202
    rows = _ordered(a)
    labels = [_short(t.name) for t in rows] + ["skeleton", "header"]
    fig, ax = _figure(7.5, 0.8 + 0.28 * len(labels))
    y = np.arange(len(labels))[::-1]
    left = np.zeros(len(labels))
    for part in PARTS:
        vals = np.array([t.bytes[part] for t in rows] + [0, 0], dtype=np.float64)
        ax.barh(y, vals, left=left, color=_COLOURS[part], label=part)
        left += vals
    extra = np.array([0.0] * len(rows) + [a.report.skeleton_stored_bytes, a.report.overhead_bytes])
    ax.barh(y, extra, left=left, color=_COLOURS["container"], label="container")
    ax.set_yticks(y, labels)
    ax.set_xlabel("bytes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def _bpw_plot(a: Analysis):  # noqa: ANN001, ANN202
    rows = [t for t in _ordered(a) if t.entropy_bpw is not None]
    fig, ax = _figure(7.5, 0.8 + 0.4 * max(len(rows), 1))
    y = np.arange(len(rows))[::-1] * 1.0
    h = 0.27
    ax.barh(y + h, [t.coded_bpw for t in rows], h, color="#0072b2", label="coded")
    ax.barh(y, [t.entropy_bpw for t in rows], h, color="#e69f00", label="order-0 entropy")
    ax.barh(y - h, [t.context_bpw or 0.0 for t in rows], h, color="#009e73", label="context entropy")
    ax.set_yticks(y, [_short(t.name) for t in rows])
    ax.set_xlabel("bits per weight")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return fig


def _histogram_card(t: TensorAnalysis, decoded: np.ndarray | None, original: np.ndarray | None) -> str:
    head = f"<h3>{_e(t.name)}</h3><p>{_e(_describe(t))}</p>"
    if decoded is None or decoded.size == 0:
        return f"<div class=card>{head}<p>no weights</p></div>"
    kept = decoded.reshape(-1) != 0
    values = (decoded if original is None else original).reshape(-1).astype(np.float64)
    shown = values[kept] if original is None else values
    lo, hi = (float(shown.min()), float(shown.max())) if shown.size else (-1.0, 1.0)
    if t.codebook:
        lo, hi = min(lo, min(t.codebook)), max(hi, max(t.codebook))
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    fig, ax = _figure(5.4, 2.0)
    pruned = int(values.size - kept.sum())
    edges = np.linspace(lo, hi, _HIST_BINS + 1)
    # Steps, not bars: one path per series instead of a rectangle per bin (drawing bars took seconds).
    if original is None:
        ax.stairs(np.histogram(values[kept], bins=edges)[0], edges, fill=True, color="#0072b2", label="decoded")
        if pruned:
            ax.bar([0.0], [pruned], width=(hi - lo) / _HIST_BINS, color="#bbbbbb",
                   label=f"zeros ({pruned / values.size:.0%})")
    else:
        kept_counts = np.histogram(values[kept], bins=edges)[0]
        all_counts = kept_counts + np.histogram(values[~kept], bins=edges)[0]
        ax.stairs(all_counts, edges, fill=True, color="#bbbbbb", label=f"pruned ({pruned / values.size:.0%})")
        ax.stairs(kept_counts, edges, fill=True, color="#0072b2", label="kept")
        ax.stairs(np.histogram(decoded.reshape(-1)[kept], bins=edges)[0], edges, color="#000000", linewidth=0.7,
                  label="decoded (kept)")
    shared = [v for v in t.codebook if v != 0.0]
    if shared:
        ax.vlines(shared, 0, 1, transform=ax.get_xaxis_transform(), colors="#d55e00", linewidth=0.6,
                  label="shared values")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.8)
    ax.yaxis.set_major_formatter(_plain)  # no mathtext: parsing "10^4" labels was most of the time
    ax.yaxis.set_minor_formatter(_blank)
    ax.set_ylabel("weights")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7)
    return f"<div class=card>{head}{_svg(fig)}</div>"


def _plain(value: float, _pos: int) -> str:
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def _blank(_value: float, _pos: int) -> str:
    return ""


def _describe(t: TensorAnalysis) -> str:
    shape = "x".join(map(str, t.shape)) or "scalar"
    if t.quantizer == "exact":
        return f"{shape}, stored exactly ({t.coder}), {t.coded_bpw:.2f} bits per weight"
    if not t.k:
        return f"{shape} {t.op}: every weight pruned, {t.coded_bpw:.3f} bits per weight"
    setting = (f"step {t.step:.4g}, {t.k} levels" if t.step is not None else f"{t.k} shared values"
               ) if t.quantizer == "uniform" else f"{t.bits}-bit k-means, {t.k} shared values"
    return (f"{shape} {t.op}: {t.quantizer}, {setting}, {t.sparsity:.1%} pruned, {t.layout} layout, {t.coder}; "
            f"{t.coded_bpw:.3f} bits per weight (order-0 {t.entropy_bpw:.3f})")


def _stage_table(a: Analysis) -> str:
    r = a.report
    orig = r.tensor_original_bytes
    rows = [("original weights", orig), ("after pruning (values + positions)", r.tensor_pruned_bytes),
            ("after weight sharing (fixed width)", r.tensor_shared_bytes),
            ("after entropy coding", r.tensor_stored_bytes), ("+ skeleton (graph, small tensors)",
                                                              r.skeleton_stored_bytes),
            ("+ container overhead (header)", r.overhead_bytes), ("= file", r.file_bytes)]
    body = "".join(f"<tr><td>{_e(label)}</td><td>{b:,}</td><td>{_ratio(orig / b) if b and not label.startswith('+') else ''}"
                   f"</td></tr>" for label, b in rows)
    return f"<table><tr><th>stage</th><th>bytes</th><th>ratio</th></tr>{body}</table>"


def _tensor_table(a: Analysis) -> str:
    head = ("<tr><th>tensor</th><th>op</th><th>shape</th><th>quantizer</th><th>step / shared values</th>"
            "<th>sparsity</th><th>layout</th><th>coder</th><th>codebook B</th><th>positions B</th><th>levels B</th>"
            "<th>coded b/w</th><th>order-0 b/w</th><th>context b/w</th><th>method</th></tr>")
    rows = []
    for t in _ordered(a):
        setting = ("exact" if t.quantizer == "exact" else "all pruned" if not t.k else f"{t.step:.4g}"
                   if t.step is not None else f"{t.bits} bits, k={t.k}")
        rows.append("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in (
            t.name, t.op or "-", "x".join(map(str, t.shape)) or "scalar", t.quantizer, setting, f"{t.sparsity:.1%}",
            t.layout, t.coder, f"{t.bytes['codebook']:,}", f"{t.bytes['positions']:,}", f"{t.bytes['levels']:,}",
            f"{t.coded_bpw:.3f}", _opt(t.entropy_bpw), _opt(t.context_bpw), t.method or "-")) + "</tr>")
    total = (f"<tr class=total><td>all {len(a.tensors)} tensors</td><td colspan=7></td>"
             + "".join(f"<td>{sum(t.bytes[p] for t in a.tensors):,}</td>" for p in PARTS)
             + f"<td>{a.total_bpw():.3f}*</td><td>{_opt(a.total_entropy_bpw())}*</td>"
             f"<td>{_opt(a.total_context_bpw())}*</td><td></td></tr>")
    return (f"<table class=wide>{head}{''.join(rows)}{total}</table><p class=note>* totals count every stored "
            "byte (codebooks included; exact tensors at their stored size) per stored weight.</p>")


def _settings(a: Analysis) -> str:
    return f"<pre>{_e(json.dumps(a.metadata, indent=1, sort_keys=True))}</pre>"


def _svg(fig) -> str:  # noqa: ANN001 - a Figure
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]  # no XML declaration, no DTD
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    return f"<div class=plot>{text}</div>"


def _short(name: str, width: int = 36) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _opt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if math.isfinite(x) else "inf"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>onnxdc report: {title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em 2em; color: #222; max-width: 1200px; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }}
h3 {{ font-size: 0.95em; margin: 0.2em 0; word-break: break-all; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ddd; padding: 2px 6px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; white-space: nowrap; }}
tr.total td {{ font-weight: bold; }}
.lead {{ font-size: 1.05em; }} .note {{ font-size: 0.8em; color: #555; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.card {{ border: 1px solid #ddd; padding: 6px; width: 540px; font-size: 0.8em; }}
.card p {{ margin: 0.2em 0; }}
.plot svg {{ max-width: 100%; height: auto; }}
pre {{ font-size: 0.8em; background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; }}
</style>
</head>
<body>
{body}
<p class=note>written by onnxdc {version}</p>
</body>
</html>
"""
