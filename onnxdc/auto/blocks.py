"""How much each gate of a recurrent weight matters: per-output weights of its layer error.

A tensor's sensitivity (:func:`onnxdc.auto.engine.sensitivities`) maps its layer error
``tr(ΔWᵀ H ΔW)`` to output fidelity with one factor, as if every output column of the layer
mattered alike. For a Conv or a Gemm that is what one step and one λ assume, and their columns
feed the same next layer. A GRU's or an LSTM's W and R are not one layer but three or four, one
per gate, stacked: on the CRNN sample's GRU, noise of one size in W's candidate-gate block (h)
moved the logits 12x more than in its update-gate block (z) and 640x more than in its reset-gate
block (r); in R, the reset block's noise did not move them measurably. One step for the whole
tensor then spends the same bits on gates that barely matter as on the one that does.

:func:`gate_weights` measures it: deterministic noise of one size in each gate's rows, one
whole-model run per gate, and each gate's share of the outputs' cosine deficit becomes a weight
of its output columns (mean 1, clamped to ``[1/MAX_RATIO, MAX_RATIO]``). The curves then weigh
each column's error by it (:func:`onnxdc.stages.ecq.layer_error`) and round each column at
``λ / weight`` (:func:`onnxdc.stages.ecq.ec_sweep`): one step, one codebook and one stream as
before, so the container is unchanged; only which levels the columns take moves, the insensitive
gates' toward zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from onnxdc.calibration.linear import LinearForm

#: Gates stacked along a recurrent weight's rows, by op (ONNX order: GRU z r h, LSTM i o f c).
GATES = {"GRU": 3, "LSTM": 4}
#: Noise of this fraction of the tensor's standard deviation: small enough that the deficit is
#: quadratic in it, large enough to move float32 outputs measurably.
NOISE = 0.05
#: Largest ratio of a gate's weight to the mean (and of the mean to a gate's).
MAX_RATIO = 64.0
#: Deficits below this are no measurement (float32 outputs): the tensor keeps uniform weights.
MIN_DEFICIT = 1e-9


def gate_count(form: LinearForm | None, shape: tuple[int, ...]) -> int:
    """Gates stacked in a recurrent W or R (``[directions, gates·hidden, in]``); 0 otherwise."""
    if form is None or form.kind not in ("rnn_w", "rnn_r") or len(shape) != 3:
        return 0
    gates = GATES.get(form.node.op_type, 0)
    return gates if gates and shape[1] % gates == 0 else 0


def gate_weights(slot: int, w: np.ndarray, gates: int,
                 deficit: Callable[[dict[int, np.ndarray]], float]) -> np.ndarray | None:
    """One weight per output column of ``w``'s ``(in × out)`` matrices (out = gates·hidden), from
    one ``deficit`` run (replaced weights -> outputs' cosine deficit) per gate; None when the
    tensor's gates cannot be told apart (every deficit below :data:`MIN_DEFICIT`)."""
    w32 = np.asarray(w, dtype=np.float32)
    sigma = NOISE * float(np.std(w32))
    if gates < 2 or not np.isfinite(sigma) or sigma == 0.0:
        return None
    hidden = w32.shape[1] // gates
    deficits, per_gate = [], []
    for g in range(gates):
        rng = np.random.default_rng([slot, g])
        noise = rng.standard_normal((w32.shape[0], hidden, w32.shape[2])).astype(np.float32) * np.float32(sigma)
        noisy = w32.copy()
        noisy[:, g * hidden:(g + 1) * hidden] += noise
        deficits.append(max(deficit({slot: noisy}), 0.0))
        per_gate.append(deficits[-1] / float(np.sum(noise.astype(np.float64) ** 2)))
    if max(deficits) < MIN_DEFICIT:
        return None
    s = np.array(per_gate)
    ratio = np.clip(s / s.mean(), 1.0 / MAX_RATIO, MAX_RATIO)
    return np.repeat(ratio / ratio.mean(), hidden)
