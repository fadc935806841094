"""What an automatically compressed model must keep: the budget, checked on held-out samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxdc.errors import ConfigError
from onnxdc.evaluate import EvalResult


@dataclass(frozen=True)
class Budget:
    """What the compressed model must keep on the calibration set.

    Attributes:
        max_drop: top-1 fall in points (against labels, or agreement without labels).
        min_agreement: top-1 agreement with the original, as a fraction.
        min_cosine: mean cosine similarity of the outputs.
    """

    max_drop: float | None = None
    min_agreement: float | None = 0.995
    min_cosine: float | None = 0.999

    def __post_init__(self) -> None:
        if self.max_drop is not None and self.max_drop < 0:
            raise ConfigError(f"max drop must be >= 0 points, got {self.max_drop}")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise ConfigError(f"min cosine must be in [-1, 1], got {self.min_cosine}")

    def met(self, ev: EvalResult) -> bool:
        """Whether an evaluation on the calibration set is within the budget."""
        if self.max_drop is not None and (ev.top1_drop_points or 0.0) > self.max_drop + 1e-9:
            return False
        if self.min_agreement is not None and ev.agreement_top1 is not None \
                and ev.agreement_top1 < self.min_agreement:
            return False
        return not (self.min_cosine is not None and mean_cosine(ev) < self.min_cosine)

    def to_json(self) -> dict:
        return {"max_drop": self.max_drop, "min_agreement": self.min_agreement, "min_cosine": self.min_cosine}


def mean_cosine(ev: EvalResult) -> float:
    return float(np.mean([o.cosine for o in ev.outputs])) if ev.outputs else 1.0
