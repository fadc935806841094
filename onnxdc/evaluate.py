"""Accuracy of a compressed model against its reference, measured with onnxruntime.

Both models run on the same inputs in batches. Against ``labels`` (when the data file has them):
top-1 and top-5 of each model on the first output. Between the two models: top-1 agreement, and per
output the cosine similarity (of the whole output, and per sample: mean and minimum), signal-to-noise
ratio (dB) and max abs error — so that every size in a report can be put next to an accuracy
measured on data compression did not see.

Running and comparing are apart: :func:`compare` builds an :class:`EvalResult` (the figures are
computed in :mod:`onnxdc.metrics`) from outputs already computed (an engine with its own onnxruntime session gets the same result as
:func:`evaluate_candidate`, which runs the candidate and calls it).

onnxruntime sessions (:func:`session`) run ``intra_op_num_threads`` threads (default: the usable
cores; :func:`set_session_threads` or :func:`session_threads` change it), one inter-op thread and
sequential execution: onnxdc's own linear algebra runs one BLAS thread (:mod:`onnxdc.threads`), so
the two never fight over the cores.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import onnx

from onnxdc.calibration.data import input_specs
from onnxdc.calibration.samples import PLAIN, Layout, layout_of, like
from onnxdc.errors import ConfigError, DataError, ModelError, Notice
from onnxdc.gates import Gate
from onnxdc.metrics import EvalResult, Metric, OutputFn, OutputMetrics, has_class_axis, output_metrics, topk_accuracy
from onnxdc.threads import single_blas_thread, usable_cores

__all__ = ["EvalResult", "Metric", "OutputFn", "OutputMetrics", "Reference", "compare", "evaluate", "evaluate_candidate",
           "has_class_axis", "load_data", "model_inputs", "output_metrics", "prepare_reference", "run_model",
           "session", "session_thread_count", "session_threads", "set_session_threads", "topk_accuracy"]

def load_data(source: Any, *, model: onnx.ModelProto | None = None, max_samples: int | None = None,
              max_bytes: int | None = None, layout: Layout | None = None,
              notice: Notice | None = None) -> Mapping[str, np.ndarray]:
    """Read inputs (keyed by input name) and optional ``labels``; no pickles.

    ``source`` is an ``.npz`` (or a plain ``.npy`` for a model with one input), a folder of them,
    or, from Python, a dict of arrays or an iterable of input dicts (an onnxruntime
    ``CalibrationDataReader`` as is): see :mod:`onnxdc.calibration.sources`. Only the first
    ``max_samples`` samples are read (a file is never loaded whole: see
    :mod:`onnxdc.calibration.data`). With ``model``, the arrays are checked against its inputs (names,
    rank, feature sizes, dtype, finite values), float64 and other castable data are cast to the
    input's type (reported through ``notice``), and the result is
    :class:`~onnxdc.calibration.samples.Samples`: samples on axis 0 whatever ``layout`` (the
    sample axis per input, the inputs shared by every sample) says the model takes.

    Raises:
        DataError: the source is missing, unreadable, not plain numeric arrays, or does not fit
            the model's inputs.
    """
    from onnxdc.calibration.data import MAX_DATA_BYTES, read_arrays
    from onnxdc.calibration.sources import load_samples

    cap = MAX_DATA_BYTES if max_bytes is None else max_bytes
    if model is None:
        return read_arrays(source, max_rows=max_samples, max_bytes=cap)
    data = load_samples(source, model=model, max_samples=max_samples, max_bytes=cap,
                        layout=layout if layout is not None else PLAIN, notice=notice)
    model_inputs(data, [s.name for s in input_specs(model)])  # names and sample counts, before any work
    return data


_session_threads: int | None = None  # None: usable_cores()


def set_session_threads(threads: int | None) -> None:
    """Set the intra-op threads of every later :func:`session` (None: the usable cores).

    A process-wide setting, since sessions are opened deep inside calibration and search; the CLI
    sets it from ``-j``. Results do not depend on it (tests compare the bytes written with 1 and 2).
    """
    global _session_threads
    if threads is not None and threads < 1:
        raise ConfigError(f"session threads must be >= 1, got {threads}")
    _session_threads = threads


@contextmanager
def session_threads(threads: int | None) -> Iterator[None]:
    """Run the body with :func:`set_session_threads` ``(threads)``, restoring the setting after."""
    before = _session_threads
    set_session_threads(threads)
    try:
        yield
    finally:
        set_session_threads(before)


def session_thread_count() -> int:
    """The intra-op threads a :func:`session` opened now runs."""
    return _session_threads if _session_threads is not None else usable_cores()


def session(model: onnx.ModelProto, *, threads: int | None = None,
            arena: bool = True):  # noqa: ANN201 - onnxruntime.InferenceSession
    """An onnxruntime CPU session for an in-memory model: ``threads`` intra-op threads (default
    :func:`session_thread_count`), one inter-op thread, sequential execution. ``arena=False``
    gives memory back after each run rather than keeping onnxruntime's arena at its peak: for
    the many short-lived sessions of the automatic mode, whose peaks would otherwise add up.

    ``intra_op_num_threads=0`` would let onnxruntime take every core of the machine, not the ones
    this process may use, and spin them against onnxdc's own threads: the count is always explicit.
    Its worker threads sleep between parallel sections instead of spinning: on a shared machine a
    spinning worker burns the core another process (or onnxdc's own numpy) needs (the 0.47M
    text detector's automatic run, with a benchmark on the other core: 63.3 s spinning, 55.9 s
    not; outputs are the same either way).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: a failed run is reported once, as our own one-line error
    opts.intra_op_num_threads = session_thread_count() if threads is None else threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = arena
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ModelError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0]}") from None


def run_model(sess, inputs: Mapping[str, np.ndarray], *, batch_size: int = 256,  # noqa: ANN001
              whole: dict[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Run ``sess`` over ``inputs`` in batches along the first axis; outputs concatenated.

    ``inputs`` are canonical (samples on axis 0); their :class:`~onnxdc.calibration.samples.Layout`
    turns each batch into the model's feed (samples moved to their axis, shared inputs given
    once) and says where the model fixes its batch size (a batch of 1: one sample per run).
    ``whole`` holds inputs given to every batch as they are (weights fed as inputs): they are not
    sliced, and their first axis is no batch size.
    """
    whole = whole or {}
    layout = layout_of(inputs)
    batched = [i for i in sess.get_inputs() if i.name not in whole]
    fixed = layout.fixed_batch(batched)
    if fixed:  # a model with a fixed batch size runs in slices of exactly that size
        batch_size = fixed
    names = [i.name for i in batched]
    n = len(next(iter(inputs.values())))
    outs: list[list[np.ndarray]] = []
    for start in range(0, n, batch_size):
        feed = layout.feed({k: inputs[k][start:start + batch_size] for k in names}, names)
        try:
            res = sess.run(None, {**feed, **whole})
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"onnxruntime failed on the inputs: {str(exc).splitlines()[0]}") from None
        if not outs:
            outs = [[] for _ in res]
        for acc, r in zip(outs, res):
            acc.append(np.asarray(r))
    symbols = {i.shape[layout.axis(i.name)] for i in batched if i.name not in layout.shared
               and layout.axis(i.name) < len(i.shape or ()) and isinstance(i.shape[layout.axis(i.name)], str)}
    return [concat_batches(o, axis=_sample_axis(out.shape, symbols)) for o, out in zip(outs, sess.get_outputs())]


def _sample_axis(shape: Any, symbols: set[str]) -> int | None:
    """The one axis of an output's declared shape that carries the inputs' batch symbol, if any."""
    hits = [k for k, d in enumerate(shape or ()) if isinstance(d, str) and d in symbols]
    return hits[0] if len(hits) == 1 else None


def concat_batches(parts: list[np.ndarray], *, axis: int | None = None) -> np.ndarray:
    """Join per-batch outputs along their batch axis: ``axis`` when the graph says it, else the
    one axis whose size differs, else axis 0."""
    if len(parts) == 1:
        return parts[0]
    if axis is not None and all(p.ndim > axis for p in parts):
        return np.concatenate(parts, axis=axis)
    if parts[0].ndim == 0:
        return np.stack(parts)
    differ = [ax for ax in range(parts[0].ndim) if len({p.shape[ax] for p in parts}) > 1]
    return np.concatenate(parts, axis=differ[0] if len(differ) == 1 else 0)


def model_inputs(data: Mapping[str, np.ndarray], want: list[str]) -> Mapping[str, np.ndarray]:
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
    return like(data, {n: data[n] for n in want})


@dataclass(frozen=True)
class Reference:
    """The reference model's outputs on a data set, computed once and compared against many candidates."""

    names: list[str]
    outputs: list[np.ndarray]
    data: dict[str, np.ndarray]
    labels: np.ndarray | None

    @property
    def samples(self) -> int:
        """How many samples the data hold."""
        return len(next(iter(v for k, v in self.data.items() if k != "labels"), ()))


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
def compare(ref: Reference, cand_outputs: list[np.ndarray], *, metric: Metric | None = None,
            gates: Sequence[Gate] = ()) -> EvalResult:
    """Compare a candidate's outputs on ``ref.data`` with the reference's (and each with the labels).

    Pure: no model runs, so an engine that computed the candidate's outputs itself gets the same
    result as :func:`evaluate_candidate`. Top-1, top-5 and agreement judge the first output, when
    it has a class axis (:func:`has_class_axis`); every output with a class axis gets its own
    agreement. ``metric``, a user's check, is called once on both lists of outputs and its verdict
    kept in ``metric_ok``; each gate of ``gates`` whose metric is a user's function
    (:data:`~onnxdc.metrics.OutputFn`) is called on each output it names, the figures kept in
    :attr:`OutputMetrics.custom`.

    Raises:
        ModelError: the candidate has another number of outputs, or an output another shape.
        ConfigError: a gate names no output, or a user's function returns no number.
    """
    if len(cand_outputs) != len(ref.outputs):
        raise ModelError(f"the candidate has {len(cand_outputs)} output(s), the reference {len(ref.outputs)}")
    n = ref.samples
    metrics = [_with_top1(output_metrics(name, r, c, samples=n), r, c, n, ref.labels if i == 0 else None)
               for i, (name, r, c) in enumerate(zip(ref.names, ref.outputs, cand_outputs))]
    metrics = _with_custom(metrics, ref, cand_outputs, gates)
    first = metrics[0]
    return EvalResult(
        samples=n,
        reference_top1=first.reference_top1,
        candidate_top1=first.candidate_top1,
        reference_top5=topk_accuracy(ref.outputs[0], ref.labels, 5) if first.reference_top1 is not None else None,
        candidate_top5=topk_accuracy(cand_outputs[0], ref.labels, 5) if first.reference_top1 is not None else None,
        agreement_top1=first.agreement,
        outputs=metrics,
        metric_ok=None if metric is None else bool(metric(list(ref.outputs), list(cand_outputs))),
    )


def _with_top1(m: OutputMetrics, r: np.ndarray, c: np.ndarray, n: int, labels: np.ndarray | None) -> OutputMetrics:
    """``m`` with its agreement (an output with a class axis) and top-1 against ``labels``."""
    if not has_class_axis(r, n):
        return m
    return replace(m, agreement=float(np.mean(r.argmax(1) == c.argmax(1))),
                   reference_top1=topk_accuracy(r, labels, 1) if labels is not None else None,
                   candidate_top1=topk_accuracy(c, labels, 1) if labels is not None else None)


def _with_custom(metrics: list[OutputMetrics], ref: Reference, cand_outputs: list[np.ndarray],
                 gates: Sequence[Gate]) -> list[OutputMetrics]:
    """``metrics`` with the figures of the gates' user functions on the outputs each names."""
    custom: list[dict[str, float]] = [{} for _ in metrics]
    for gate in gates:
        if not callable(gate.metric):
            continue
        for i in gate.outputs(ref.names):
            got = gate.metric(ref.outputs[i], cand_outputs[i])
            try:
                custom[i][gate.metric_name] = float(got)
            except (TypeError, ValueError):
                raise ConfigError(f"metric {gate.metric_name!r} returned {type(got).__name__} {got!r} for output "
                                  f"{ref.names[i]!r}, not a number") from None
    return [replace(m, custom=c) if c else m for m, c in zip(metrics, custom)]


@single_blas_thread
def evaluate_candidate(ref: Reference, candidate: onnx.ModelProto, *, batch_size: int = 256,
                       metric: Metric | None = None, gates: Sequence[Gate] = ()) -> EvalResult:
    """Run ``candidate`` on the reference's data and :func:`compare` its outputs."""
    cand_sess = session(candidate)
    cand_out = run_model(cand_sess, model_inputs(ref.data, [i.name for i in cand_sess.get_inputs()]),
                         batch_size=batch_size)
    return compare(ref, cand_out, metric=metric, gates=gates)


def evaluate(reference: onnx.ModelProto, candidate: onnx.ModelProto, data: dict[str, np.ndarray], *,
             batch_size: int = 256, metric: Metric | None = None, gates: Sequence[Gate] = ()) -> EvalResult:
    """Run both models on ``data`` and compare them (and each with ``labels``, if present); the
    user functions of ``gates`` are measured (:func:`compare`), the gates judged by
    :func:`onnxdc.gates.judge`."""
    return evaluate_candidate(prepare_reference(reference, data, batch_size=batch_size), candidate,
                              batch_size=batch_size, metric=metric, gates=gates)


