"""One pass of layer statistics: every compressible layer's input second moment ``H = E[xxᵀ]``.

A candidate's layer error is then ``tr(ΔWᵀ H ΔW)`` in closed form, with no model run (see
:mod:`onnxdc.stages.ecq`). One onnxruntime session exposes every needed intermediate value at
once and runs over the calibration samples in batches; each batch's inputs are unrolled into the
layers' row matrices, accumulated into ``H`` and dropped, so memory is bounded by the ``H``
matrices and one batch of activations, not by activations × samples. A convolution contributes a
subsample of its output positions (at most :func:`onnxdc.stages.compensate.max_rows` rows in all),
gathered without unrolling the whole map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from onnxdc.calibration.calibrate import exposing, layer_of, weight_of
from onnxdc.calibration.linear import LinearForm, conv_output, input_matrices, weight_matrices
from onnxdc.calibration.samples import layout_of, select
from onnxdc.errors import ModelError
from onnxdc.evaluate import model_inputs, session
from onnxdc.stages.compensate import max_rows
from onnxdc.threads import single_blas_thread

#: Input bytes of one batch at most.
INPUT_BYTES = 8 << 20
#: Samples a layer's statistics use at least, however many rows one sample gives.
MIN_SAMPLES = 16
#: Bytes of intermediate values one batch may hold (the batch size follows from a one-sample probe).
BATCH_BYTES = 64 << 20
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True, eq=False)
class LayerStats:
    """One weight's linear form and the second moments of its inputs, per group (in × in)."""

    form: LinearForm
    h: list[np.ndarray]
    rows: int
    #: Per group ``E[x x_refᵀ]`` against the reference model's inputs (None without a reference).
    g: list[np.ndarray] | None = None
    #: Rows one sample gives before subsampling (a conv's output positions, a sequence's steps).
    per_sample: int = 1

    @property
    def samples_needed(self) -> int:
        """Samples that give this layer its row cap (:func:`stats_rows`), at least MIN_SAMPLES."""
        d = self.h[0].shape[0] if self.h else 1
        return max(MIN_SAMPLES, -(-stats_rows(d) // max(self.per_sample, 1)))


def model_feed(model: onnx.ModelProto, data: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The arrays of ``data`` that are model inputs (initializers that are also inputs excepted)."""
    inits = {t.name for t in model.graph.initializer}
    return model_inputs(data, [i.name for i in model.graph.input if i.name not in inits])


@single_blas_thread
def collect_stats(model: onnx.ModelProto, plans: dict, data: dict[str, np.ndarray], *, seed: int = 0,
                  reference: onnx.ModelProto | None = None, batch_bytes: int = BATCH_BYTES,
                  reference_cache: RowCache | None = None, progress: Progress | None = None,
                  replaced: Mapping[int, np.ndarray] | None = None) -> dict[int, LayerStats]:
    """``H`` of every planned weight that has a linear form (slot -> stats), in one session.

    With ``reference`` (the original of a partly compressed ``model``), the same rows are also
    taken from the reference's inputs and ``G = E[x x_refᵀ]`` is accumulated: the refit target
    ``W* = H⁻¹ G W0`` of a layer then absorbs the error the compressed layers before it introduce.
    Rows are subsampled where a layer gives more than its cap, with a generator seeded by ``seed``
    and the batch number: the result depends on the data and the settings only. The reference's
    values depend on the data only, so callers refreshing often pass a :class:`RowCache` that
    keeps the reference's picked rows between calls.

    ``replaced`` (slot -> array) sets those weights in the statistics pass's own trimmed copy of
    ``model``: the statistics of a partly compressed model without a whole copy of it besides.
    """
    forms = {}
    for slot, plan in plans.items():
        _, form = layer_of(model, plan)
        if form is not None:
            forms[slot] = (form, weight_matrices(form, weight_of(plan))[0].shape[0])
    if not forms:
        return {}
    feed = model_feed(model, data)
    layout, feed_names = layout_of(feed), list(feed)
    n = len(next(iter(feed.values())))
    names = list(dict.fromkeys(s for form, _ in forms.values() for s in form.sources))
    m, wanted = exposing(model, names)
    if replaced:
        _set_weights(model, m, replaced)
    sess = session(m, arena=False) if wanted else None
    del m  # onnxruntime holds its own copy: a model-sized proto less for the whole pass
    ref_run = None
    if reference is not None:
        ref_sessions: list = []  # opened on the first batch the cache cannot serve

        def ref_run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if not ref_sessions:
                ref_stats_model, ref_wanted = exposing(reference, names)
                ref_sessions.append((session(ref_stats_model, arena=False) if ref_wanted else None, ref_wanted))
                del ref_stats_model
            ref_sess, ref_wanted = ref_sessions[0]
            got = dict(zip(ref_wanted, ref_sess.run(ref_wanted, {i.name: batch[i.name] for i in ref_sess.get_inputs()}))
                       ) if ref_sess is not None else {}
            return {s: (got[s] if s in got else batch[s]) for s in names}

    def run(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        got = {}
        if sess is not None:
            try:
                got = dict(zip(wanted, sess.run(wanted, {i.name: batch[i.name] for i in sess.get_inputs()})))
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
                raise ModelError(f"onnxruntime failed on the calibration inputs: {str(exc).splitlines()[0]}") from None
        return {s: (got[s] if s in got else batch[s]) for s in names}

    probe = run(layout.feed(select(feed, slice(0, 1)), feed_names))
    per_sample = sum(v.nbytes for v in probe.values())
    per_input = sum(v[:1].nbytes for v in feed.values())
    fixed = layout.fixed_batch(sess.get_inputs()) if sess is not None else None
    # onnxruntime holds every activation of a batch, not just the exposed ones: large inputs
    # (a detector's images) run a few at a time.
    batch = fixed if fixed else max(1, min(n, batch_bytes // max(per_sample, 1), INPUT_BYTES // max(per_input, 1)))
    rows_per_sample = {slot: _rows(form, probe) for slot, (form, _) in forms.items()}
    caps = {slot: stats_rows(d) for slot, (_, d) in forms.items()}
    h: dict[int, list[np.ndarray] | None] = dict.fromkeys(forms)
    g: dict[int, list[np.ndarray] | None] = dict.fromkeys(forms)
    kept = dict.fromkeys(forms, 0)
    starts = range(0, n, batch)
    for b, start in enumerate(starts):
        part = layout.feed(select(feed, slice(start, start + batch)), feed_names)
        vals = probe if (start == 0 and batch == 1) else run(part)
        count = min(batch, n - start)
        # The reference's rows depend on the data, the layer and the rows picked only: cached
        # (as the picked rows, not whole activations) they are read once however often a caller
        # refreshes.
        ref_keys = {slot: (slot, n, start, batch, seed) for slot in forms}
        ref_vals = None
        if ref_run is not None and (reference_cache is None
                                    or any(reference_cache.get(k) is None for k in ref_keys.values())):
            ref_vals = ref_run(part)
        for slot, (form, _) in forms.items():
            total = rows_per_sample[slot] * count
            take = min(total, math.ceil(caps[slot] * count / n))
            rng = np.random.default_rng([seed, b, slot])
            pick = None if take >= total else np.sort(rng.choice(total, size=take, replace=False))
            mats = _rows_of(form, [vals[s] for s in form.sources], pick)
            acc = h[slot] or [np.zeros((x.shape[1], x.shape[1])) for x in mats]
            for a, x in zip(acc, mats):
                for s in range(0, x.shape[0], 65536):
                    xc = np.asarray(x[s:s + 65536], dtype=np.float64)
                    a += xc.T @ xc
            h[slot] = acc
            if ref_run is not None:
                key = ref_keys[slot]
                refs = reference_cache.get(key) if reference_cache is not None else None
                if refs is None:
                    refs = [np.ascontiguousarray(x, dtype=np.float32)
                            for x in _rows_of(form, [ref_vals[s] for s in form.sources], pick)]
                    if reference_cache is not None:
                        reference_cache.put(key, refs)
                acc_g = g[slot] or [np.zeros((x.shape[1], x.shape[1])) for x in mats]
                for a, x, xr in zip(acc_g, mats, refs):
                    for s in range(0, x.shape[0], 65536):
                        a += np.asarray(x[s:s + 65536], np.float64).T @ np.asarray(xr[s:s + 65536], np.float64)
                g[slot] = acc_g
            kept[slot] += mats[0].shape[0] if mats else 0
        # Dropped before the next batch runs: two batches' activations never coexist.
        del vals, ref_vals, part, mats
        if progress:
            progress(b + 1, len(starts), "statistics")
    out = {}
    for slot, (form, _) in forms.items():
        rows = max(kept[slot], 1)
        out[slot] = LayerStats(form, [a / rows for a in (h[slot] or [])], kept[slot],
                               None if g[slot] is None else [a / rows for a in g[slot]], rows_per_sample[slot])
    return out


def _set_weights(model: onnx.ModelProto, copy: onnx.ModelProto, weights: Mapping[int, np.ndarray]) -> None:
    """Set ``weights`` (slots of ``model``'s tensors) in ``copy``, a copy of ``model`` holding some
    of its main-graph initializers; tensors it does not hold are not needed by it."""
    from onnxdc.onnx_io.tensors import iter_tensors, le_bytes, set_raw_data

    refs = {r.slot: r for r in iter_tensors(model)}
    held = {t.name: t for t in copy.graph.initializer}
    main = {t.name for t in model.graph.initializer}
    for slot in weights:  # read one by one (a lazy mapping decodes each when asked)
        ref = refs[slot]
        if not (ref.path.startswith("graph.initializer[") and ref.proto.name in main):
            raise ModelError(f"tensor {ref.proto.name!r} is no main-graph initializer: its statistics need a replaced model")
        t = held.get(ref.proto.name)
        if t is not None:
            set_raw_data(t, le_bytes(np.asarray(weights[slot]).astype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))))


def settable(model: onnx.ModelProto, slots: list[int]) -> bool:
    """Whether every slot is a main-graph initializer, which ``replaced=`` of :func:`collect_stats`
    can set (Constant nodes and subgraph initializers need a replaced model instead)."""
    from onnxdc.onnx_io.tensors import iter_tensors

    main = {t.name for t in model.graph.initializer}
    paths = {r.slot: r for r in iter_tensors(model)}
    return all(paths[s].path.startswith("graph.initializer[") and paths[s].proto.name in main for s in slots)


#: Bytes of reference rows a :class:`RowCache` keeps at most. The cache saves the sample models
#: 8-9% of their automatic run (LeNet-5 8.1 -> 7.4 s, 18 MB of rows; the CRNN 7 MB) and nothing
#: measurable on large ones, where it only added to the peak: at 256 MB the text detector held
#: 251 MB of rows (peak 1,095 MB against 838 MB without; 31.0 s against 29.5 s) and the
#: 22M-parameter transformer 189 MB (1,471 MB against 1,283 MB; 137.8 s against 133.2 s), with the
#: same bytes either way.
ROW_CACHE_BYTES = 32 << 20


class RowCache:
    """The reference model's picked rows between :func:`collect_stats` calls, up to ``max_bytes``
    (beyond it rows are recomputed rather than kept: memory stays bounded on large models)."""

    def __init__(self, max_bytes: int = ROW_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._rows: dict[tuple, list[np.ndarray]] = {}

    def get(self, key: tuple) -> list[np.ndarray] | None:
        return self._rows.get(key)

    def put(self, key: tuple, rows: list[np.ndarray]) -> None:
        size = sum(r.nbytes for r in rows)
        if self.nbytes + size <= self.max_bytes:
            self._rows[key] = rows
            self.nbytes += size


def stats_rows(d: int) -> int:
    """Rows a layer of ``d`` inputs contributes at most: enough for a well-determined ``H``
    (16 per input, 8192 at least), and never more than :func:`onnxdc.stages.compensate.max_rows`.
    The cost of ``H`` is rows × d², so a wide convolution's millions of patches are subsampled."""
    return min(max_rows(d), max(16 * d, 8192))


def _rows(form: LinearForm, vals: dict[str, np.ndarray]) -> int:
    """Rows of the input matrix one sample gives."""
    if form.kind == "conv":
        _, oh, ow = conv_output(form, vals[form.activation].shape)
        return oh * ow
    return input_matrices(form, *(vals[s].astype(np.float32) for s in form.sources))[0].shape[0]


def _rows_of(form: LinearForm, srcs: list[np.ndarray], pick: np.ndarray | None) -> list[np.ndarray]:
    """The per-group input matrices of one batch, restricted to the rows ``pick`` (all if None)."""
    if form.kind == "conv":
        return conv_patches(srcs[0].astype(np.float32), form, pick)
    mats = input_matrices(form, *(s.astype(np.float32) for s in srcs))
    return mats if pick is None else [x[pick] for x in mats]


def conv_patches(x: np.ndarray, form: LinearForm, pick: np.ndarray | None) -> list[np.ndarray]:
    """Rows ``pick`` of :func:`onnxdc.calibration.linear.im2col_groups` (all if None), gathered
    directly: unrolling a high-resolution batch whole would cost kh·kw times its size."""
    from onnxdc.calibration.linear import im2col_groups, padded

    if pick is None:
        return im2col_groups(x, form)
    n, c, _, _ = x.shape
    xp, (kh, kw), (sh, sw), (dh, dw), oh, ow = padded(x, form)
    img, rest = np.divmod(pick, oh * ow)
    oy, ox = np.divmod(rest, ow)
    ys = (oy * sh)[:, None] + (np.arange(kh) * dh)[None, :]  # rows × kh
    xs = (ox * sw)[:, None] + (np.arange(kw) * dw)[None, :]  # rows × kw
    patches = xp[img[:, None, None, None], np.arange(c)[None, :, None, None], ys[:, None, :, None],
                 xs[:, None, None, :]]  # rows × c × kh × kw
    per = c // form.groups
    return [patches[:, g * per:(g + 1) * per].reshape(len(pick), per * kh * kw) for g in range(form.groups)]
