"""What an automatically compressed model must keep: the budget, checked on held-out samples.

The rules, each optional (None turns it off):

* ``min_cosine``: the mean over samples of each sample's output cosine, for every output (a
  per-sample figure: a few large samples cannot hide many damaged small ones, as they can in the
  cosine of the whole output flattened);
* ``min_sample_cosine``: the lowest per-sample cosine, for every output (the worst input);
* ``min_agreement``: top-1 agreement with the original on the first output;
* ``max_drop``: top-1 fall in points on the first output, against labels when the data have
  them, else against the original's own top-1 (agreement);
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

Top-1 rules need ``(samples, classes)`` logits in the first output. When they do not apply (a
hidden state, a 4-D map, a sequence-first output), :meth:`Budget.check_applies` says so: an error
for a rule the user asked for, a notice for a default one, which is then not judged.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, fields

import numpy as np
import onnx

from onnxdc.calibration.samples import select
from onnxdc.errors import ConfigError, Notice
from onnxdc.evaluate import EvalResult, Metric, Reference, has_class_axis, prepare_reference

_TOP1_RULES = {"max_drop": "top-1 drop", "min_agreement": "top-1 agreement"}


@dataclass(frozen=True)
class Budget:
    """What the compressed model must keep on the calibration set.

    Attributes:
        max_drop: top-1 fall in points (against labels, or agreement without labels).
        min_agreement: top-1 agreement with the original, as a fraction.
        min_cosine: mean per-sample output cosine similarity, for every output.
        min_sample_cosine: lowest per-sample output cosine similarity, for every output.
        metric: a user's check ``metric(reference_outputs, candidate_outputs) -> bool``; the
            evaluation must have run it (``compare(..., metric=budget.metric)``).
    """

    max_drop: float | None = None
    min_agreement: float | None = 0.995
    min_cosine: float | None = 0.999
    min_sample_cosine: float | None = None
    metric: Metric | None = None

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

    def met(self, ev: EvalResult) -> bool:
        """Whether an evaluation on the calibration set is within the budget.

        A top-1 rule the evaluation could not measure (no class axis) is not judged here: say so
        first with :meth:`check_applies`.

        Raises:
            ConfigError: the budget has a ``metric`` the evaluation did not run.
        """
        if self.max_drop is not None and (ev.top1_drop_points or 0.0) > self.max_drop + 1e-9:
            return False
        if self.min_agreement is not None and ev.agreement_top1 is not None \
                and ev.agreement_top1 < self.min_agreement:
            return False
        if self.min_cosine is not None and any(o.cosine_mean < self.min_cosine for o in ev.outputs):
            return False
        if self.min_sample_cosine is not None and any(o.cosine_min < self.min_sample_cosine for o in ev.outputs):
            return False
        if self.metric is not None:
            if ev.metric_ok is None:
                raise ConfigError(f"the budget's metric {_qualname(self.metric)!r} was not run by the evaluation; "
                                  f"compare with metric=budget.metric")
            return ev.metric_ok
        return True

    def explicit(self) -> frozenset[str]:
        """The rules set to other than their defaults: those a caller evidently asked for."""
        return frozenset(f.name for f in fields(self) if getattr(self, f.name) != f.default)

    def check_applies(self, ref: Reference, *, explicit: Collection[str] | None = None,
                      notice: Notice | None = None) -> list[str]:
        """Check that every rule in use can be judged on the reference's outputs.

        A top-1 rule on a first output without a class axis cannot: it is an error when the rule
        is in ``explicit`` (default: :meth:`explicit`, the rules not at their default value; the
        CLI passes the options given on the command line), else a notice, and the rule is then
        not judged. Per-sample cosine rules on an output whose axis 0 is not the samples judge
        that output as one sample, with a notice.

        Returns:
            The notices, also sent to ``notice``.

        Raises:
            ConfigError: a rule the user asked for cannot be judged, naming the output and its shape.
        """
        asked = self.explicit() if explicit is None else frozenset(explicit)
        n = ref.samples
        first, name = ref.outputs[0], ref.names[0]
        notes: list[str] = []
        for rule, what in _TOP1_RULES.items():
            if getattr(self, rule) is None or has_class_axis(first, n):
                continue
            why = (f"{what} needs (samples, classes) logits, but output {name!r} has shape "
                   f"{tuple(first.shape)} for {n} samples")
            if rule in asked:
                raise ConfigError(f"budget rule {rule} cannot be judged: {why}")
            notes.append(f"the default budget's {what} rule is not judged: {why}; the cosine rules still are")
        if self.min_cosine is not None or self.min_sample_cosine is not None:
            for out_name, out in zip(ref.names, ref.outputs):
                if out.ndim == 0 or out.shape[0] != n:
                    notes.append(f"output {out_name!r} of shape {tuple(out.shape)} has no sample axis 0 for "
                                 f"{n} samples: its per-sample cosine is taken over the whole output")
        for note in notes:
            if notice is not None:
                notice(note)
        return notes

    def to_json(self) -> dict:
        return {"max_drop": self.max_drop, "min_agreement": self.min_agreement, "min_cosine": self.min_cosine,
                "min_sample_cosine": self.min_sample_cosine,
                "metric": None if self.metric is None else _qualname(self.metric)}


def _qualname(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def mean_cosine(ev: EvalResult) -> float:
    """The cosine :attr:`Budget.min_cosine` judges: the lowest, over outputs, mean per-sample cosine."""
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
