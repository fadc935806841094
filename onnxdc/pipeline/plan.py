"""Planning: which weight tensors are pruned and weight-shared, with which settings (and global
pruning masks), and the checks they must pass first (finite weights, a codebook dtype that holds
them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx

from onnxdc.errors import ModelError, Notice
from onnxdc.onnx_io.candidates import Candidate, find_candidates
from onnxdc.onnx_io.tensors import TensorRef, has_data, tensor_array, tensor_numel, tensor_raw_bytes
from onnxdc.pipeline.settings import SharingConfig, TensorSettings, resolve
from onnxdc.stages.prune import prune, prune_global

#: The smallest magnitude float16 rounds to infinity (its largest finite value is 65504).
FLOAT16_OVERFLOW = 65520.0


@dataclass(frozen=True)
class WeightPlan:
    """What the pipeline will do with one weight tensor."""

    candidate: Candidate
    settings: TensorSettings
    keep: np.ndarray | None  # precomputed mask (global pruning), else None
    #: Largest weight magnitude when it overflowed the float16 codebook asked for, so the tensor
    #: keeps a float32 codebook (its params record it); None otherwise.
    codebook_overflow: float | None = None

    def mask(self, w: np.ndarray) -> np.ndarray:
        """The surviving weights of ``w``: the precomputed mask, else magnitude pruning by the
        tensor's own rule."""
        return self.keep if self.keep is not None else prune(w, config=self.settings.prune)


def tensor_label(ref: TensorRef) -> str:
    """The name reports and recipes use: the tensor name, or its path when it has none."""
    return ref.proto.name or ref.path


def plan_sharing(model: onnx.ModelProto, sharing: SharingConfig,
                 read: Callable[[onnx.TensorProto], bytes] = tensor_raw_bytes,
                 notice: Notice | None = None) -> dict[int, WeightPlan]:
    """Choose the tensors to weight-share and resolve their settings (and global pruning masks).

    A tensor asked to have a float16 codebook whose weights overflow float16 keeps a float32
    codebook instead (recorded in its params): shared values would otherwise decode as ±inf.
    ``notice`` hears of every recipe rule that matches no weight tensor (a typo in a glob would
    otherwise change nothing, silently), or only tensors too small to be shared.
    """
    plans: dict[int, WeightPlan] = {}
    hit: set[int] = set()
    small: set[int] = set()
    floor = max(sharing.min_elements, 1)
    for slot, cand in find_candidates(model).items():
        if not has_data(cand.ref.proto):
            continue
        label = tensor_label(cand.ref)
        matched = {i for i, r in enumerate(sharing.rules) if r.matches(label, cand.ops)}
        if tensor_numel(cand.ref.proto) < floor:
            small |= matched
            continue
        hit |= matched
        ts = resolve(label, cand.kind, sharing, op_types=cand.ops)
        if not ts.lossless:
            plans[slot] = _fit_codebook_dtype(WeightPlan(cand, ts, None), read)
    if notice is not None:
        for i, rule in enumerate(sharing.rules):
            if i not in hit:
                why = (f"only tensors under {floor} elements, which are stored exactly (--min-elements)"
                       if i in small else "no weight tensor")
                notice(f"recipe rule {i} ({rule.describe()}) matches {why}")
    global_slots = [s for s, p in plans.items() if p.settings.prune.global_]
    if global_slots and sharing.sparsity:
        weights = [tensor_array(plans[s].candidate.ref.proto, read(plans[s].candidate.ref.proto))
                   for s in global_slots]
        for s, w in zip(global_slots, weights):
            check_finite(w, tensor_label(plans[s].candidate.ref))
        for s, mask in zip(global_slots, prune_global(weights, sparsity=sharing.sparsity)):
            plans[s] = replace(plans[s], keep=mask)
    return plans


def _fit_codebook_dtype(plan: WeightPlan, read: Callable[[onnx.TensorProto], bytes]) -> WeightPlan:
    """``plan`` with a float32 codebook if it asks for float16 and its weights overflow it."""
    if plan.settings.share.codebook_dtype != "float16":
        return plan
    proto = plan.candidate.ref.proto
    w = tensor_array(proto, read(proto))
    check_finite(w, tensor_label(plan.candidate.ref))
    peak = float(np.max(np.abs(w.astype(np.float64)))) if w.size else 0.0
    if peak < FLOAT16_OVERFLOW:
        return plan
    share = replace(plan.settings.share, codebook_dtype="float32")
    return replace(plan, settings=replace(plan.settings, share=share), codebook_overflow=peak)


def check_finite(w: np.ndarray, name: str) -> None:
    """Refuse NaN and infinite weights in a tensor to be pruned and shared.

    Pruning ranks by magnitude and k-means averages: a NaN would silently be pruned to zero or
    poison its cluster. Lossless mode stores such tensors bit-exactly.

    Raises:
        ModelError: naming the tensor, the count and the first bad value.
    """
    bad = ~np.isfinite(w)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ModelError(f"weight tensor {name!r} holds {int(bad.sum())} NaN or infinite value(s) (the first, "
                         f"{w.reshape(-1)[first]}, at flat index {first}); pruning and weight sharing need finite "
                         f"weights: store it exactly (--lossless, or a recipe rule with lossless = true)")


def check_finite_weights(plans: dict[int, WeightPlan],
                         read: Callable[[onnx.TensorProto], bytes] = tensor_raw_bytes) -> None:
    """:func:`check_finite` on every planned tensor (before calibration, which runs them)."""
    for plan in plans.values():
        proto = plan.candidate.ref.proto
        check_finite(tensor_array(proto, read(proto)), tensor_label(plan.candidate.ref))


