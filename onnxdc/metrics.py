"""Comparing two models' outputs: the figures of an evaluation, pure numpy (no model runs).

:mod:`onnxdc.evaluate` runs the models and calls these; an engine with its own sessions calls
:func:`onnxdc.evaluate.compare`, which builds the same :class:`EvalResult`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from onnxdc.errors import ModelError
from onnxdc.threads import single_blas_thread

#: A user's own fidelity check: ``metric(reference_outputs, candidate_outputs) -> bool``, the
#: outputs in the model's order with the samples of the evaluation data; True means acceptable.
Metric = Callable[[list[np.ndarray], list[np.ndarray]], bool]

#: A user's own figure for one output: ``fn(reference, candidate) -> float``, both arrays of that
#: output over every sample of the evaluation (samples on axis 0); a gate bounds it.
OutputFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class OutputMetrics:
    """Agreement of one output between reference and candidate.

    ``cosine`` is taken over the whole output flattened (large samples weigh more);
    ``cosine_mean`` and ``cosine_min`` are the mean and minimum over samples of each sample's
    cosine, the samples being axis 0 of the output. An output whose axis 0 is not the samples (its
    size differs from the sample count: a sequence-first ``(T, N, C)`` map, a pooled statistic) is
    treated as one sample, and ``per_sample`` is False: its per-sample figures equal ``cosine``.
    Built without them (``OutputMetrics(name, cosine, snr, err)``), they default to ``cosine``.

    ``agreement`` (top-1 agreement with the reference) is set on an output with a class axis
    (:func:`has_class_axis`); ``reference_top1`` and ``candidate_top1`` (against labels) on the
    first output only, the one labels name classes of; ``custom`` holds the figures of a user's
    per-output functions (:data:`OutputFn`) by name, for the gates that asked for them.
    """

    name: str
    cosine: float
    snr_db: float
    max_abs_error: float
    cosine_mean: float | None = None
    cosine_min: float | None = None
    per_sample: bool = False
    shape: tuple[int, ...] = ()
    agreement: float | None = None
    reference_top1: float | None = None
    candidate_top1: float | None = None
    custom: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for attr in ("cosine_mean", "cosine_min"):
            if getattr(self, attr) is None:
                object.__setattr__(self, attr, self.cosine)


@dataclass(frozen=True)
class EvalResult:
    """Everything ``onnxdc eval`` reports.

    ``metric_ok`` is the verdict of a user's :data:`Metric` when the comparison ran one, else None.
    """

    samples: int
    reference_top1: float | None
    candidate_top1: float | None
    reference_top5: float | None
    candidate_top5: float | None
    agreement_top1: float | None
    outputs: list[OutputMetrics] = field(default_factory=list)
    metric_ok: bool | None = None

    @property
    def top1_drop_points(self) -> float | None:
        """Fall in top-1 (percentage points) against labels, else in agreement; None if neither applies."""
        if self.reference_top1 is not None and self.candidate_top1 is not None:
            return 100.0 * (self.reference_top1 - self.candidate_top1)
        if self.agreement_top1 is not None:
            return 100.0 * (1.0 - self.agreement_top1)
        return None

    def to_json(self) -> dict:
        return {"samples": self.samples, "reference_top1": self.reference_top1,
                "candidate_top1": self.candidate_top1, "reference_top5": self.reference_top5,
                "candidate_top5": self.candidate_top5, "agreement_top1": self.agreement_top1,
                "top1_drop_points": self.top1_drop_points, "metric_ok": self.metric_ok,
                "outputs": [{"name": o.name, "shape": list(o.shape), "cosine": o.cosine,
                             "cosine_mean": o.cosine_mean, "cosine_min": o.cosine_min,
                             "per_sample": o.per_sample, "snr_db": _finite(o.snr_db),
                             "max_abs_error": o.max_abs_error, "agreement": o.agreement,
                             "reference_top1": o.reference_top1, "candidate_top1": o.candidate_top1,
                             **({"custom": {k: _finite(v) for k, v in o.custom.items()}} if o.custom else {})}
                            for o in self.outputs]}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def has_class_axis(output: np.ndarray, samples: int) -> bool:
    """Whether ``output`` is ``(samples, classes)`` logits with at least two classes: what top-1,
    top-5 and agreement need. A hidden state ``(N, T, H)``, a 4-D map or a ``(T, N, C)``
    sequence has none."""
    return output.ndim == 2 and output.shape[0] == samples and output.shape[1] > 1


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


@single_blas_thread
def output_metrics(name: str, ref: np.ndarray, cand: np.ndarray, *, samples: int | None = None) -> OutputMetrics:
    """Cosine similarity (whole, and per sample along axis 0), SNR (dB) and max abs error of
    ``cand`` against ``ref``.

    The per-sample cosines take axis 0 as the samples when its size is ``samples`` (default: the
    output's own axis-0 size); otherwise the whole output counts as one sample (``per_sample``
    False), since slicing another axis would compare mixed parts of different samples.
    """
    if np.shape(ref) != np.shape(cand):
        raise ModelError(f"output {name!r} has shape {np.shape(ref)} in the reference but {np.shape(cand)} "
                         f"in the candidate")
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    c = np.asarray(cand, dtype=np.float64).reshape(-1)
    err = r - c
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    cos = float(r @ c / (nr * nc)) if nr and nc else (1.0 if nr == nc else 0.0)
    noise = float(err @ err)
    snr = math.inf if noise == 0 else 10 * math.log10(max(float(r @ r), 1e-300) / noise)
    shape = tuple(int(d) for d in np.shape(ref))
    n = samples if samples is not None else (shape[0] if shape else 1)
    per_sample = len(shape) >= 1 and shape[0] == n and n > 0
    if per_sample:
        rows = _cosines(r.reshape(n, -1), c.reshape(n, -1))
        mean, low = float(np.mean(rows)), float(np.min(rows))
    else:
        mean = low = cos
    return OutputMetrics(name, cos, snr, float(np.max(np.abs(err))) if err.size else 0.0,
                         cosine_mean=mean, cosine_min=low, per_sample=per_sample, shape=shape)


def _cosines(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two ``(rows, features)`` arrays; a zero row is 1 against a zero row, else 0."""
    nr, nc = np.linalg.norm(r, axis=1), np.linalg.norm(c, axis=1)
    dot = np.einsum("ij,ij->i", r, c)
    both = (nr > 0) & (nc > 0)
    out = np.where((nr == 0) & (nc == 0), 1.0, 0.0)
    out[both] = dot[both] / (nr[both] * nc[both])
    return np.clip(out, -1.0, 1.0)
