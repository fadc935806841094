"""What an automatically compressed model must keep: the budget, checked on held-out samples.

The rules, each optional (None turns it off):

* ``min_cosine``: the mean over samples of each sample's output cosine, for every output (a
  per-sample figure: a few large samples cannot hide many damaged small ones, as they can in the
  cosine of the whole output flattened);
* ``min_sample_cosine``: the lowest per-sample cosine, for every output (the worst input);
* ``min_agreement``: top-1 agreement with the original on the first output;
* ``max_drop``: top-1 fall in points on the first output, against labels when the data have
  them, else against the original's own top-1 (agreement);
* ``gates``: any :class:`~onnxdc.gates.Gate` (``state:cosine>=0.9999``, ``*:snr>=30``, a user's
  per-output function): the rules above are shorthands for gates
  (:meth:`Budget.rules`), which name the outputs they judge;
* ``metric``: from Python, a user's own check on both models' outputs (:data:`Metric`).

The default is ``min_cosine=0.999`` and ``min_agreement=0.995``, no per-sample floor. The mean
is what a held-out check can estimate: measured on the samples the automatic mode keeps aside, it
holds on new data, while a minimum is the extreme of the samples checked and falls as more are
drawn. On LeNet-300-100's automatic output (512 calibration samples, 128 held out), the test
split's mean per-sample cosine was 0.99921 (0.99915 on the held-out samples), but the median
minimum over random sets of its test samples was 0.99698 for 32, 0.99635 for 128 and 0.99495 for
all 400: a default floor would promise what no check on a few dozen samples can keep, and buy it
with size on every model. Users who need every input kept set ``min_sample_cosine``
(``--min-sample-cosine``), knowing that it judges the checked samples only.

Top-1 rules need ``(samples, classes)`` logits in the outputs they judge. When they do not apply
(a hidden state, a 4-D map, a sequence-first output), :meth:`Budget.check_applies` says so: an
error for a rule or gate the user asked for, a notice for a default one or an optional gate
(``?``, ``skip_inapplicable``), which is then not judged there.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields, replace

import numpy as np
import onnx

from onnxdc.calibration.samples import select
from onnxdc.errors import ConfigError, Notice
from onnxdc.evaluate import EvalResult, Metric, Reference, prepare_reference
from onnxdc.gates import Gate, inapplicable, judge, qualname

#: The shorthand rules (``Budget`` fields, ``eval`` and ``compress`` options), each the metric and
#: comparison of the gate it stands for.
SHORTHAND_GATES = {"max_drop": ("top1-drop", "<="), "min_agreement": ("agreement", ">="),
               "min_cosine": ("cosine", ">="), "min_sample_cosine": ("min-cosine", ">=")}


@dataclass(frozen=True)
class Budget:
    """What the compressed model must keep on the calibration set.

    Attributes:
        max_drop: top-1 fall in points (against labels, or agreement without labels), first output.
        min_agreement: top-1 agreement with the original, as a fraction, first output.
        min_cosine: mean per-sample output cosine similarity, for every output.
        min_sample_cosine: lowest per-sample output cosine similarity, for every output.
        gates: further gates, each naming its outputs and metric (:mod:`onnxdc.gates`); a gate
            whose metric is a user's function needs the evaluation to have measured it
            (``compare(..., gates=budget.gates)``).
        skip_inapplicable: every rule and gate skips, with a notice, the outputs it cannot judge.
        metric: a user's check ``metric(reference_outputs, candidate_outputs) -> bool``; the
            evaluation must have run it (``compare(..., metric=budget.metric)``).
    """

    max_drop: float | None = None
    min_agreement: float | None = 0.995
    min_cosine: float | None = 0.999
    min_sample_cosine: float | None = None
    metric: Metric | None = None
    gates: tuple[Gate, ...] = ()
    skip_inapplicable: bool = False

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError(f"max drop must be >= 0 points, got {self.max_drop}")
        for name in ("min_cosine", "min_sample_cosine"):
            value = getattr(self, name)
            if value is not None and not -1 <= value <= 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be in [-1, 1], got {value}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"min agreement must be in [0, 1], got {self.min_agreement}")
        if self.metric is not None and not callable(self.metric):
            raise ConfigError(f"metric must be callable, got {type(self.metric).__name__}")
        object.__setattr__(self, "gates", tuple(self.gates))
        for g in self.gates:
            if not isinstance(g, Gate):
                raise ConfigError(f"budget gates must be Gate objects (onnxdc.parse_gate), got {type(g).__name__}")

    def rules(self, *, explicit: Collection[str] | None = None) -> list[Gate]:
        """Every gate the budget judges: the shorthand rules as gates, then :attr:`gates`.

        A shorthand not in ``explicit`` (default :meth:`explicit`) is optional: on an output it
        cannot judge it is skipped with a notice rather than failing.
        """
        asked = self.explicit() if explicit is None else frozenset(explicit)
        out = []
        for rule, (metric, op) in SHORTHAND_GATES.items():
            limit = getattr(self, rule)
            if limit is not None:
                out.append(Gate(metric=metric, op=op, limit=float(limit), source=rule,
                                optional=self.skip_inapplicable or rule not in asked))
        return out + [replace(g, optional=True) if self.skip_inapplicable else g for g in self.gates]

    @property
    def cosine_floor(self) -> float | None:
        """The highest mean per-sample cosine any rule or gate asks for: what the search aims at."""
        floors = [g.limit for g in self.rules() if g.metric == "cosine"]
        return max(floors) if floors else None

    def met(self, ev: EvalResult, *, explicit: Collection[str] | None = None) -> bool:
        """Whether an evaluation on the calibration set is within the budget.

        A rule that cannot judge an output fails unless optional (a default rule, a gate with
        ``?``): say so first with :meth:`check_applies`.

        Raises:
            ConfigError: the budget has a ``metric`` the evaluation did not run.
        """
        if any(v.status == "fail" for v in judge(self.rules(explicit=explicit), ev)):
            return False
        if self.metric is not None:
            if ev.metric_ok is None:
                raise ConfigError(f"the budget's metric {qualname(self.metric)!r} was not run by the evaluation; "
                                  f"compare with metric=budget.metric")
            return ev.metric_ok
        return True

    def explicit(self) -> frozenset[str]:
        """The rules set to other than their defaults: those a caller evidently asked for."""
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) != f.default)

    def check_applies(self, ref: Reference, *, explicit: Collection[str] | None = None,
                      notice: Notice | None = None) -> list[str]:
        """Check that every rule and gate in use can be judged on the reference's outputs.

        A rule that cannot judge an output it names (a top-1 rule on an output without a class
        axis, ``top1`` without labels) is an error when the user asked for it (a shorthand in
        ``explicit``, default :meth:`explicit`, the rules not at their default value; the CLI
        passes the options given on the command line; a gate without ``?``), else a notice, and
        the rule is then not judged there. Per-sample cosine rules on an output whose axis 0 is
        not the samples judge that output as one sample, with a notice.

        Returns:
            The notices, also sent to ``notice``.

        Raises:
            ConfigError: a rule the user asked for cannot be judged, or a gate names no output.
        """
        n = ref.samples
        notes: list[str] = []
        whole: list[str] = []
        for gate in self.rules(explicit=explicit):
            for i in gate.outputs(ref.names):
                out, name = ref.outputs[i], ref.names[i]
                why = inapplicable(gate, name=name, index=i, shape=tuple(out.shape), samples=n,
                                   labels=ref.labels is not None)
                if why is None:
                    if gate.metric in ("cosine", "min-cosine") and (out.ndim == 0 or out.shape[0] != n) \
                            and name not in whole:
                        whole.append(name)
                        notes.append(f"output {name!r} of shape {tuple(out.shape)} has no sample axis 0 for "
                                     f"{n} samples: its per-sample cosine is taken over the whole output")
                    continue
                what = f"budget rule {gate.source}" if gate.source else f"budget gate {str(gate)!r}"
                if not gate.optional:
                    raise ConfigError(f"{what} cannot be judged: {why}")
                if gate.source and not self.skip_inapplicable:
                    notes.append(f"the default budget's {gate.spec.what} rule is not judged: {why}; "
                                 f"the cosine rules still are")
                else:
                    notes.append(f"{what} is not judged on output {name!r}: {why}")
        for note in notes:
            if notice is not None:
                notice(note)
        return notes

    def to_json(self) -> dict:
        return {"max_drop": self.max_drop, "min_agreement": self.min_agreement, "min_cosine": self.min_cosine,
                "min_sample_cosine": self.min_sample_cosine,
                "metric": None if self.metric is None else qualname(self.metric),
                **({"gates": [str(g) for g in self.gates]} if self.gates else {}),
                **({"skip_inapplicable": True} if self.skip_inapplicable else {})}


def mean_cosine(ev: EvalResult) -> float:
    """The cosine the search steers by: the lowest, over outputs, mean per-sample cosine."""
    return float(min(o.cosine_mean for o in ev.outputs)) if ev.outputs else 1.0


#: Samples :func:`check_budget` runs the reference on: the check needs output shapes only.
CHECK_SAMPLES = 16


def check_budget(model: onnx.ModelProto, data: dict[str, np.ndarray], *, budget: Budget,
                 explicit: Collection[str] | None = None, notice: Notice | None = None) -> list[str]:
    """:meth:`Budget.check_applies` on the outputs of ``model`` for the first samples of ``data``,
    before a search spends minutes on a budget that cannot be judged."""
    n = min(CHECK_SAMPLES, min((len(v) for v in data.values()), default=0))
    head = select(data, slice(0, n))
    return budget.check_applies(prepare_reference(model, head), explicit=explicit, notice=notice)
