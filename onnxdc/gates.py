"""Gates: what an evaluation must show, named per output and per metric, and their verdicts.

A gate is ``[OUTPUT:]METRIC OP LIMIT[?]``, for example ``logits:top1-drop<=0.5``,
``state:cosine>=0.999`` or ``*:snr>=30``. ``OUTPUT`` is an output name or a glob (``*``, ``enc_*``);
the last ``:`` ends it, so names such as ``Identity:0`` work. Left out, it is the first output for
the top-1 metrics (those of a classifier's logits) and every output for the others. ``OP`` is the
metric's own direction, ``>=`` for figures where higher is better and ``<=`` for the others, so a
reversed gate is refused rather than silently meaning the opposite. The metrics (:data:`METRICS`):

* ``agreement``: fraction of samples whose top-1 class is the reference's;
* ``top1``: the candidate's top-1 accuracy against the data's labels (first output only);
* ``top1-drop``: top-1 fall in points, against labels when the data have them and the output is
  the first, else against the reference's own top-1 (``100 × (1 − agreement)``), as ``--max-drop``;
* ``cosine``, ``min-cosine``: mean and lowest per-sample cosine (samples on axis 0);
* ``max-abs``: largest absolute difference; ``snr``: signal-to-noise ratio in dB.

A gate that cannot judge an output (a top-1 metric on an output without ``(samples, classes)``
logits, ``top1`` without labels) fails, naming the output and why: a gate never passes unseen.
A trailing ``?`` (or ``skip_inapplicable``) makes it skip such outputs instead, with a notice,
for a glob that is meant for the outputs it can judge (``*:agreement>=0.99?``).

From Python, ``Gate(metric=fn, ...)`` bounds a user's figure ``fn(reference, candidate) -> float``
(:data:`~onnxdc.metrics.OutputFn`) per output; :func:`onnxdc.evaluate.compare` computes it when
given the gate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from onnxdc.errors import ConfigError
from onnxdc.metrics import EvalResult, OutputFn, OutputMetrics


@dataclass(frozen=True)
class MetricSpec:
    """A built-in metric: its direction, the limits that make sense, what it needs, how it reads."""

    what: str
    higher_is_better: bool
    low: float = -math.inf
    high: float = math.inf
    top1: bool = False
    labels: bool = False
    unit: str = ""


METRICS: dict[str, MetricSpec] = {
    "agreement": MetricSpec("top-1 agreement", True, 0.0, 1.0, top1=True),
    "top1": MetricSpec("top-1 against labels", True, 0.0, 1.0, top1=True, labels=True),
    "top1-drop": MetricSpec("top-1 drop", False, 0.0, 100.0, top1=True, unit=" points"),
    "cosine": MetricSpec("mean per-sample cosine", True, -1.0, 1.0),
    "min-cosine": MetricSpec("lowest per-sample cosine", True, -1.0, 1.0),
    "max-abs": MetricSpec("max abs error", False, 0.0),
    "snr": MetricSpec("SNR", True, unit=" dB"),
}

_SPEC = re.compile(r"^(?:(?P<output>.*):)?(?P<metric>[A-Za-z][\w-]*)\s*(?P<op>[<>=!]=?)\s*(?P<limit>[^?\s]+)\s*"
                   r"(?P<optional>\?)?$")


@dataclass(frozen=True, kw_only=True)
class Gate:
    """One bound on one metric of the outputs it names.

    Attributes:
        metric: a name in :data:`METRICS`, or a user's :data:`~onnxdc.metrics.OutputFn`.
        op: ``">="`` or ``"<="``; a built-in metric takes its own direction only.
        limit: the bound (``top1-drop`` in points, fractions for ``agreement`` and ``top1``).
        output: an output name or glob; None is the metric's default (the first output for the
            top-1 metrics, ``*`` for the others).
        optional: skip, with a notice, the outputs the gate cannot judge, rather than failing.
        source: how the user asked for it (an option such as ``--max-drop``), for messages; None
            is the gate's own text.
    """

    metric: str | OutputFn
    op: str
    limit: float
    output: str | None = None
    optional: bool = False
    source: str | None = None

    def __post_init__(self) -> None:
        _check(self.metric, self.op, self.limit, self.output, text=self.source or str(self))

    @property
    def metric_name(self) -> str:
        """The metric's name: the built-in's, or a user function's qualified name."""
        return self.metric if isinstance(self.metric, str) else qualname(self.metric)

    @property
    def spec(self) -> MetricSpec:
        """The metric's description (a user's function: a figure whose direction the gate's op gives)."""
        if isinstance(self.metric, str):
            return METRICS[self.metric]
        return MetricSpec(self.metric_name, self.op == ">=")

    @property
    def label(self) -> str:
        """The gate as messages name it: ``--max-drop 0.5``, or its own text."""
        return f"{self.source} {_num(self.limit)}" if self.source else str(self)

    def __str__(self) -> str:
        head = f"{self.output}:" if self.output is not None else ""
        return f"{head}{self.metric_name}{self.op}{_num(self.limit)}{'?' if self.optional else ''}"

    def outputs(self, names: Sequence[str]) -> list[int]:
        """The indices of the outputs the gate judges, in model order.

        Raises:
            ConfigError: it names no output of the model.
        """
        if self.output is None:
            return [0] if self.spec.top1 and names else list(range(len(names)))
        hit = [i for i, n in enumerate(names) if fnmatchcase(n, self.output)]
        if not hit:
            raise ConfigError(f"gate {self.label!r} names no output of the model; its outputs are "
                              f"{', '.join(map(repr, names))}")
        return hit

    def judges(self, om: OutputMetrics, *, index: int, ev: EvalResult) -> float | None:
        """The gate's figure on one output, or None when it cannot be measured there."""
        if callable(self.metric):
            return om.custom.get(self.metric_name)
        first = index == 0  # an EvalResult built by hand may carry the first output's top-1 at top level
        if self.metric == "agreement":
            return om.agreement if om.agreement is not None or not first else ev.agreement_top1
        if self.metric in ("top1", "top1-drop"):
            ref, cand = (om.reference_top1, om.candidate_top1) if om.reference_top1 is not None or not first \
                else (ev.reference_top1, ev.candidate_top1)
            if self.metric == "top1":
                return cand
            if ref is not None and cand is not None:
                return 100.0 * (ref - cand)
            agree = om.agreement if om.agreement is not None or not first else ev.agreement_top1
            return None if agree is None else 100.0 * (1.0 - agree)
        return {"cosine": om.cosine_mean, "min-cosine": om.cosine_min, "max-abs": om.max_abs_error,
                "snr": om.snr_db}[self.metric]


def parse_gate(text: str) -> Gate:
    """A :class:`Gate` from its text ``[OUTPUT:]METRIC OP LIMIT[?]`` (module docstring).

    Raises:
        ConfigError: one line naming the gate and what is wrong with it.
    """
    m = _SPEC.match(text.strip())
    if m is None:
        raise ConfigError(f"gate {text!r} is not [OUTPUT:]METRIC>=LIMIT or [OUTPUT:]METRIC<=LIMIT "
                          f"(e.g. 'logits:top1-drop<=0.5', '*:cosine>=0.999')")
    try:
        limit = float(m["limit"])
    except ValueError:
        raise ConfigError(f"gate {text!r}: the limit {m['limit']!r} is not a number") from None
    _check(m["metric"], m["op"], limit, m["output"], text=text)
    return Gate(metric=m["metric"], op=m["op"], limit=limit, output=m["output"], optional=m["optional"] is not None)


def _check(metric: str | OutputFn, op: str, limit: float, output: str | None, *, text: str) -> None:
    """One line naming the gate ``text`` for the first thing wrong with it."""
    if op not in (">=", "<="):
        raise ConfigError(f"gate {text!r}: the comparison must be >= or <=, got {op!r}")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not math.isfinite(limit):
        raise ConfigError(f"gate {text!r}: the limit must be a finite number, got {limit!r}")
    if output is not None and not output:
        raise ConfigError(f"gate {text!r}: the output name before ':' is empty")
    if callable(metric):
        return
    spec = METRICS.get(metric) if isinstance(metric, str) else None
    if spec is None:
        raise ConfigError(f"gate {text!r}: unknown metric {metric!r}; metrics are {', '.join(METRICS)}")
    want = ">=" if spec.higher_is_better else "<="
    if op != want:
        raise ConfigError(f"gate {text!r}: {metric} is better {'higher' if want == '>=' else 'lower'}, "
                          f"so its gate is {metric}{want}LIMIT")
    if not spec.low <= limit <= spec.high:
        raise ConfigError(f"gate {text!r}: {metric} limit must be in [{spec.low:g}, {spec.high:g}], got {limit:g}")


def inapplicable(gate: Gate, *, name: str, index: int, shape: tuple[int, ...], samples: int,
                 labels: bool) -> str | None:
    """Why ``gate`` cannot judge output ``name`` (its ``index`` and ``shape`` for ``samples``
    samples; ``labels``: the data have them), or None when it can."""
    spec = gate.spec
    if spec.top1 and not (len(shape) == 2 and shape[0] == samples and shape[1] > 1):
        return (f"{spec.what} needs (samples, classes) logits, but output {name!r} has shape {tuple(shape)} "
                f"for {samples} samples")
    if spec.labels and not labels:
        return f"{spec.what} needs labels in the data, which have none"
    if spec.labels and index != 0:
        return f"{spec.what} judges the first output only (labels are its classes), not {name!r}"
    return None


@dataclass(frozen=True)
class Verdict:
    """A gate on one output: ``status`` is ``"pass"``, ``"fail"`` or ``"skip"`` (an optional gate
    that cannot judge the output); ``reason`` says why a gate could not judge."""

    gate: Gate
    output: str
    value: float | None
    status: str
    reason: str = ""

    def describe(self) -> str:
        """One line: what was measured against what, or why it could not be."""
        if self.value is None:
            verb = "is not judged" if self.status == "skip" else "cannot be judged"
            return f"{self.gate.label} {verb}: {self.reason}"
        spec = self.gate.spec
        rel = ("meets" if self.status == "pass" else "is below" if self.gate.op == ">=" else "exceeds")
        return f"output {self.output!r}: {spec.what} {format_value(self.gate, self.value)} {rel} {self.gate.label}"

    def to_json(self) -> dict:
        value = self.value if self.value is None or math.isfinite(self.value) else None
        return {"gate": str(self.gate), "source": self.gate.source, "output": self.output,
                "metric": self.gate.metric_name, "value": value, "status": self.status,
                **({"reason": self.reason} if self.reason else {})}


def judge(gates: Sequence[Gate], ev: EvalResult, *, skip_inapplicable: bool = False) -> list[Verdict]:
    """Each gate on each output it names: what it measured and whether that passed.

    Raises:
        ConfigError: a gate names no output of the evaluation.
    """
    names = [o.name for o in ev.outputs]
    labels = ev.reference_top1 is not None or any(o.reference_top1 is not None for o in ev.outputs)
    out: list[Verdict] = []
    for gate in gates:
        for i in gate.outputs(names):
            om = ev.outputs[i]
            value = gate.judges(om, index=i, ev=ev)
            if value is None:
                why = inapplicable(gate, name=om.name, index=i, shape=om.shape, samples=ev.samples, labels=labels) \
                    or f"{gate.metric_name} was not measured on output {om.name!r}"
                skip = gate.optional or skip_inapplicable
                out.append(Verdict(gate, om.name, None, "skip" if skip else "fail", why))
                continue
            ok = value >= gate.limit - 1e-12 if gate.op == ">=" else value <= gate.limit + 1e-9
            out.append(Verdict(gate, om.name, value, "pass" if ok else "fail"))
    return out


def check_outputs(gates: Sequence[Gate], names: Sequence[str]) -> None:
    """Raise :class:`ConfigError` for a gate that names no output in ``names`` (before any run)."""
    for gate in gates:
        gate.outputs(names)


def optional(gates: Sequence[Gate]) -> list[Gate]:
    """The gates, each skipping the outputs it cannot judge."""
    return [replace(g, optional=True) for g in gates]


def format_value(gate: Gate, value: float) -> str:
    """A gate's figure as tables and messages print it."""
    name = gate.metric_name
    if name in ("agreement", "top1"):
        return f"{100 * value:.2f}%"
    if name in ("cosine", "min-cosine"):
        return f"{value:.6f}"
    if name in ("top1-drop", "snr"):
        return f"{value:.2f}{gate.spec.unit}" if math.isfinite(value) else "inf" + gate.spec.unit
    return f"{value:.4g}"


def qualname(fn: object) -> str:
    """A function's qualified name, as budgets and gates record it."""
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _num(x: float) -> str:
    return f"{x:.10g}" if isinstance(x, (int, float)) else repr(x)
