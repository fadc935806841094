"""Gates from the command line, and the table ``eval`` prints: every figure per output, then each
gate's verdict.

``--gate SPEC`` (any number) and the shorthand options build one list of gates, parsed by the
library (:func:`onnxdc.api.parse_gate`), so a bad gate is one ``onnxdc: error:`` line and exit 2.
"""

from __future__ import annotations

import math
from typing import Any

import click

from onnxdc.cli.main import pct, top1_lines

GATE_HELP = ("Gate [OUTPUT:]METRIC>=LIMIT or <=LIMIT, repeatable: METRIC is agreement, top1 (against labels), "
             "top1-drop (points), cosine (mean per sample), min-cosine, max-abs or snr (dB); OUTPUT a name or glob "
             "(default: the first output for top-1 metrics, every output otherwise). A trailing '?' skips outputs "
             "the gate cannot judge instead of failing. E.g. 'logits:top1-drop<=0.5', 'state:cosine>=0.999', "
             "'*:snr>=30'.")
SKIP_HELP = "Gates that cannot judge an output (top-1 without a class axis, top1 without labels) skip it with a " \
            "warning instead of failing (as if each ended in '?')."


def gate_options(func: Any) -> Any:
    """``--gate`` and ``--skip-inapplicable``."""
    func = click.option("--skip-inapplicable", is_flag=True, help=SKIP_HELP)(func)
    return click.option("--gate", "gate_specs", multiple=True, metavar="SPEC", help=GATE_HELP)(func)


def build_gates(specs: tuple[str, ...], *, skip_inapplicable: bool, **shorthands: float | None) -> list[Any]:
    """The gates of the shorthand options given (named after the option) and of ``--gate``."""
    from onnxdc.api import SHORTHAND_GATES, Gate, optional_gates, parse_gate

    gates = [Gate(metric=metric, op=op, limit=float(shorthands[name]), source="--" + name.replace("_", "-"))
             for name, (metric, op) in SHORTHAND_GATES.items() if shorthands.get(name) is not None]
    gates += [parse_gate(s) for s in specs]
    return optional_gates(gates) if skip_inapplicable else gates


def format_eval_table(r: Any, verdicts: list[Any]) -> str:
    """The top-1 lines, one row per output with every figure measured, then the gates."""
    lines = top1_lines(r)
    custom = sorted({k for o in r.outputs for k in o.custom})
    head = ["output", "shape", "cosine", "mean cos", "min cos", "SNR dB", "max abs", "agreement", *custom]
    rows = []
    for o in r.outputs:
        mark = "" if o.per_sample else "*"
        rows.append([o.name, "x".join(map(str, o.shape)) or "scalar", f"{o.cosine:.6f}",
                     f"{o.cosine_mean:.6f}{mark}", f"{o.cosine_min:.6f}{mark}",
                     f"{o.snr_db:.2f}" if math.isfinite(o.snr_db) else "inf", f"{o.max_abs_error:.4g}",
                     pct(o.agreement), *(f"{o.custom[k]:.6g}" if k in o.custom else "-" for k in custom)])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    for row in [head, *rows]:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    if not all(o.per_sample for o in r.outputs):
        lines.append("* axis 0 is not the samples: the whole output counts as one sample")
    if r.metric_ok is not None:
        lines.append(f"metric: {'acceptable' if r.metric_ok else 'not acceptable'}")
    if verdicts:
        lines.append("gates:")
        lines += [f"  {v.status.upper() if v.status == 'fail' else v.status:<4}  {v.describe()}" for v in verdicts]
    return "\n".join(lines)
