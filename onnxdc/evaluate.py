"""Accuracy of a compressed model against its reference, measured with onnxruntime.

Both models run on the same inputs in batches. Against ``labels`` (when the data file has them):
top-1 and top-5 of each model on the first output. Between the two models: top-1 agreement, and per
output the cosine similarity, signal-to-noise ratio (dB) and max abs error — so that every size in a
report can be put next to an accuracy measured on data compression did not see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxdc.errors import DataError, ModelError, Notice
from onnxdc.threads import single_blas_thread


@dataclass(frozen=True)
class OutputMetrics:
    """Agreement of one output between reference and candidate."""

    name: str
    cosine: float
    snr_db: float
    max_abs_error: float


@dataclass(frozen=True)
class EvalResult:
    """Everything ``onnxdc eval`` reports."""

    samples: int
    reference_top1: float | None
    candidate_top1: float | None
    reference_top5: float | None
    candidate_top5: float | None
    agreement_top1: float | None
    outputs: list[OutputMetrics] = field(default_factory=list)

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
                "top1_drop_points": self.top1_drop_points,
                "outputs": [{"name": o.name, "cosine": o.cosine, "snr_db": _finite(o.snr_db),
                             "max_abs_error": o.max_abs_error} for o in self.outputs]}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def load_data(path: str | Path, *, model: onnx.ModelProto | None = None, max_samples: int | None = None,
              max_bytes: int | None = None, notice: Notice | None = None) -> dict[str, np.ndarray]:
    """Read an ``.npz`` of inputs (keyed by input name) and optional ``labels``; no pickles.

    Only the first ``max_samples`` samples are read (the file is never loaded whole: see
    :mod:`onnxdc.calibration.data`). With ``model``, the arrays are checked against its inputs (names,
    rank, feature sizes, dtype, finite values), float64 and other castable data are cast to the
    input's type (reported through ``notice``), and a plain ``.npy`` is accepted for a model with
    exactly one input.

    Raises:
        DataError: the file is missing, unreadable, not an npz of plain numeric arrays, or does
            not fit the model's inputs.
    """
    from onnxdc.calibration.data import MAX_DATA_BYTES, fit_to_model, input_specs, read_arrays

    specs = input_specs(model) if model is not None else []
    single = specs[0].name if len(specs) == 1 else None
    data = read_arrays(path, max_rows=max_samples, single_name=single,
                       max_bytes=MAX_DATA_BYTES if max_bytes is None else max_bytes)
    if model is None:
        return data
    data = fit_to_model(data, specs, notice=notice)
    model_inputs(data, [s.name for s in specs])  # names and sample counts, before any work
    return data


def session(model: onnx.ModelProto):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An onnxruntime CPU session for an in-memory model, with deterministic single-stream settings."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: a failed run is reported once, as our own one-line error
    opts.intra_op_num_threads = 0
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None


def run_model(sess, inputs: dict[str, np.ndarray], *, batch_size: int = 256) -> list[np.ndarray]:  # noqa: ANN001
    """Run ``sess`` over ``inputs`` in batches along the first axis; outputs concatenated."""
    names = [i.name for i in sess.get_inputs()]
    fixed = [i.shape[0] for i in sess.get_inputs() if i.shape and isinstance(i.shape[0], int) and i.shape[0] > 0]
    if fixed:  # a model with a fixed batch size runs in slices of exactly that size
        batch_size = min(fixed)
    n = len(next(iter(inputs.values())))
    outs: list[list[np.ndarray]] = []
    for start in range(0, n, batch_size):
        feed = {k: inputs[k][start:start + batch_size] for k in names}
        try:
            res = sess.run(None, feed)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"onnxruntime failed on the inputs: {str(exc).splitlines()[0]}") from None
        if not outs:
            outs = [[] for _ in res]
        for acc, r in zip(outs, res):
            acc.append(np.asarray(r))
    return [concat_batches(o) for o in outs]


def concat_batches(parts: list[np.ndarray]) -> np.ndarray:
    """Join per-batch outputs along their batch axis: the one axis whose size differs, else axis 0."""
    if len(parts) == 1:
        return parts[0]
    if parts[0].ndim == 0:
        return np.stack(parts)
    differ = [ax for ax in range(parts[0].ndim) if len({p.shape[ax] for p in parts}) > 1]
    return np.concatenate(parts, axis=differ[0] if len(differ) == 1 else 0)


def model_inputs(data: dict[str, np.ndarray], want: list[str]) -> dict[str, np.ndarray]:
    """The arrays of ``data`` for the model inputs ``want``, checked for names and batch sizes."""
    missing = [n for n in want if n not in data]
    if missing:
        raise DataError(f"data lacks model input(s) {', '.join(map(repr, missing))}; "
                        f"it has {', '.join(map(repr, sorted(data)))}")
    extra = sorted(set(data) - set(want) - {"labels"})
    if extra:
        raise DataError(f"data has array(s) {', '.join(map(repr, extra))} that are not model inputs "
                        f"({', '.join(map(repr, want))})")
    sizes = {len(data[n]) for n in want}
    if len(sizes) != 1:
        raise DataError(f"model inputs in the data have different sample counts: {sorted(sizes)}")
    return {n: data[n] for n in want}


@dataclass(frozen=True)
class Reference:
    """The reference model's outputs on a data set, computed once and compared against many candidates."""

    names: list[str]
    outputs: list[np.ndarray]
    data: dict[str, np.ndarray]
    labels: np.ndarray | None


def prepare_reference(reference: onnx.ModelProto, data: dict[str, np.ndarray], *,
                      batch_size: int = 256) -> Reference:
    """Run the reference model once on ``data`` (inputs checked against the model)."""
    sess = session(reference)
    inputs = model_inputs(data, [i.name for i in sess.get_inputs()])
    outputs = run_model(sess, inputs, batch_size=batch_size)
    n = len(next(iter(inputs.values())))
    labels = data.get("labels")
    if labels is not None and (labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"labels must be {n} integers, found shape {labels.shape} of {labels.dtype}")
    first = outputs[0] if outputs else None
    if labels is not None and n and first is not None and first.ndim == 2 and first.shape[0] == n:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= first.shape[1]:
            raise DataError(f"labels must be classes 0..{first.shape[1] - 1} of the model's first output "
                            f"{sess.get_outputs()[0].name!r}, found {lo}..{hi}")
    return Reference([o.name for o in sess.get_outputs()], outputs, data, labels)


@single_blas_thread
def evaluate_candidate(ref: Reference, candidate: onnx.ModelProto, *, batch_size: int = 256) -> EvalResult:
    """Run ``candidate`` on the reference's data and compare (and each with the labels)."""
    cand_sess = session(candidate)
    cand_out = run_model(cand_sess, model_inputs(ref.data, [i.name for i in cand_sess.get_inputs()]),
                         batch_size=batch_size)
    return compare(ref, cand_out)


@single_blas_thread
def compare(ref: Reference, cand_out: list[np.ndarray]) -> EvalResult:
    """The :class:`EvalResult` of a candidate's outputs on the reference's data, however they were
    computed (an engine may run its own session)."""
    metrics = [output_metrics(n, r, c) for n, r, c in zip(ref.names, ref.outputs, cand_out)]
    r0, c0 = ref.outputs[0], cand_out[0]
    classify = r0.ndim == 2 and r0.shape[1] > 1 and c0.shape == r0.shape
    labels = ref.labels if classify else None
    return EvalResult(
        samples=len(r0),
        reference_top1=topk_accuracy(r0, labels, 1) if labels is not None else None,
        candidate_top1=topk_accuracy(c0, labels, 1) if labels is not None else None,
        reference_top5=topk_accuracy(r0, labels, 5) if labels is not None else None,
        candidate_top5=topk_accuracy(c0, labels, 5) if labels is not None else None,
        agreement_top1=float(np.mean(r0.argmax(1) == c0.argmax(1))) if classify else None,
        outputs=metrics,
    )


def evaluate(reference: onnx.ModelProto, candidate: onnx.ModelProto, data: dict[str, np.ndarray], *,
             batch_size: int = 256) -> EvalResult:
    """Run both models on ``data`` and compare them (and each with ``labels``, if present)."""
    return evaluate_candidate(prepare_reference(reference, data, batch_size=batch_size), candidate,
                              batch_size=batch_size)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` largest logits."""
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


@single_blas_thread
def output_metrics(name: str, ref: np.ndarray, cand: np.ndarray) -> OutputMetrics:
    """Cosine similarity, SNR (dB) and max abs error of ``cand`` against ``ref``."""
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    c = np.asarray(cand, dtype=np.float64).reshape(-1)
    if r.shape != c.shape:
        raise ModelError(f"output {name!r} has shape {ref.shape} in the reference but {cand.shape} in the candidate")
    err = r - c
    nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
    cos = float(r @ c / (nr * nc)) if nr and nc else (1.0 if nr == nc else 0.0)
    noise = float(err @ err)
    snr = math.inf if noise == 0 else 10 * math.log10(max(float(r @ r), 1e-300) / noise)
    return OutputMetrics(name, cos, snr, float(np.max(np.abs(err))) if err.size else 0.0)
