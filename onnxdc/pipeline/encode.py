"""The compression pipeline: model in, container bytes out, and back.

``compress`` walks every tensor of the model (subgraphs and functions too), stores each one either
losslessly (byte planes) or, for the selected weights, through the Deep Compression stages (prune,
share, code), strips the stored data from the ModelProto to form the *skeleton*, and lays out the
container. ``decompress`` reverses it and checks every tensor against its recorded checksum.
"""

from __future__ import annotations

import sys
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from onnxdc._version import __version__
from onnxdc.format.container import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RATIO,
    Container,
    ContainerWriter,
    Header,
    TensorInfo,
    check_output_size,
    read_container,
)
from onnxdc.errors import ConfigError, ContainerError, ModelError, Notice
from onnxdc.format.registry import RawBuffer, as_bytes, batched, decode_tensor
from onnxdc.onnx_io.tensors import (
    TensorRef,
    check_storable,
    clear_data,
    has_data,
    iter_tensors,
    le_bytes,
    parse_model,
    set_raw_data,
    tensor_numel,
    tensor_raw_bytes,
)
from onnxdc.pipeline.planes import ENCODING as PLANES
from onnxdc.pipeline.planes import encode_planes
from onnxdc.stages.prune import prune, prune_global
from onnxdc.threads import single_blas_thread
from onnxdc.onnx_io.candidates import Candidate, find_candidates
from onnxdc.pipeline.settings import SharingConfig, TensorSettings, resolve
from onnxdc.pipeline.shared import ENCODING as SHARED
from onnxdc.pipeline.shared import encode_shared
from onnxdc.dtypes import np_dtype
from onnxdc.pipeline.streams import encode_best

#: Progress callback: (tensors done, tensors total, name of the tensor just done).
Progress = Callable[[int, int, str], None]

SKELETON_LEVEL = 19
#: The smallest magnitude float16 rounds to infinity (its largest finite value is 65504).
FLOAT16_OVERFLOW = 65520.0


@dataclass(frozen=True)
class CompressConfig:
    """Settings of one compression run.

    Attributes:
        sharing: the Deep Compression settings; None stores every tensor losslessly.
        min_tensor_bytes: tensors smaller than this stay inside the skeleton, where the skeleton's
            zstd pass codes them together more cheaply than per-tensor streams would.
        calibration: calibration inputs (keyed by model input name) for calibration-aware
            pruning and sharing (:mod:`onnxdc.calibration.calibrate`); None for plain magnitude pruning.
        calib_samples: calibration samples used at most.
        zstd_level: zstd level tried for the lossless planes.
        jobs: tensors coded in parallel (threads); the output does not depend on it.
        metadata: free-form entries recorded in the container header.
    """

    sharing: SharingConfig | None = None
    calibration: dict[str, np.ndarray] | None = None
    calib_samples: int = 512
    min_tensor_bytes: int = 64
    zstd_level: int = 19
    jobs: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.min_tensor_bytes < 0:
            raise ConfigError(f"min_tensor_bytes must be >= 0, got {self.min_tensor_bytes}")
        if not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"zstd level must be in 1..22, got {self.zstd_level}")
        if self.jobs < 1:
            raise ConfigError(f"jobs must be >= 1, got {self.jobs}")


@dataclass(frozen=True)
class CompressResult:
    """The container bytes, the validated container, and the quantized weights by tensor name."""

    data: bytes
    container: Container
    quantized: dict[str, np.ndarray]


@dataclass(frozen=True)
class WeightPlan:
    """What the pipeline will do with one weight tensor."""

    candidate: Candidate
    settings: TensorSettings
    keep: np.ndarray | None  # precomputed mask (global pruning), else None
    #: Largest weight magnitude when it overflowed the float16 codebook asked for, so the tensor
    #: keeps a float32 codebook (its params record it); None otherwise.
    codebook_overflow: float | None = None


def tensor_label(ref: TensorRef) -> str:
    """The name reports and recipes use: the tensor name, or its path when it has none."""
    return ref.proto.name or ref.path


@single_blas_thread
def compress(model: onnx.ModelProto, *, config: CompressConfig = CompressConfig(),
             progress: Progress | None = None, calibrated: dict[int, Any] | None = None,
             notice: Notice | None = None) -> CompressResult:
    """Compress a loaded model (external data already read) into container bytes.

    The input model is not modified. ``calibrated`` passes the result of
    :func:`onnxdc.calibration.calibrate.calibrate` already computed for exactly these settings and
    calibration data (the automatic mode has it), so it is not computed again. ``notice``
    receives one line per thing done on the user's behalf (a float32 codebook kept).
    """
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    writer = ContainerWriter()
    header, quantized = encode_model(skeleton, writer=writer, config=config, original=model, progress=progress,
                                     calibrated=calibrated, notice=notice)
    data = writer.to_bytes(header)
    return CompressResult(data, read_container(data), quantized)


def encode_model(skeleton: onnx.ModelProto, *, writer: ContainerWriter, config: CompressConfig,
                 original: onnx.ModelProto | None = None, read: Callable[[onnx.TensorProto], bytes] = tensor_raw_bytes,
                 keep_values: bool = True, progress: Progress | None = None,
                 calibrated: dict[int, Any] | None = None,
                 notice: Notice | None = None) -> tuple[Header, dict[str, np.ndarray]]:
    """Code every tensor of ``skeleton`` into ``writer`` (stripping their data) and build the header.

    Args:
        skeleton: the model to code; its stored tensors lose their data (it becomes the skeleton).
        original: the unmodified model, needed for calibration.
        read: returns a tensor's raw bytes (lets external data be read one tensor at a time).
        keep_values: also return the quantized weights by tensor name (for tests and callers).
        calibrated: calibration results already computed for these plans (see :func:`compress`).
        notice: receives a line for each tensor that keeps a float32 codebook.

    Raises:
        ModelError: a tensor has no ONNX dtype or negative dims (a container of it would not
            read back), or a tensor to prune and share holds NaN or infinite values.
    """
    refs = [r for r in iter_tensors(skeleton) if has_data(r.proto)]
    for ref in refs:  # before any work: what a reader refuses must not be written
        check_storable(ref.proto)
    plans = plan_sharing(skeleton, config.sharing, read=read) if config.sharing is not None else {}
    if calibrated is None:
        calibrated = {}
    elif set(calibrated) != set(plans) or config.calibration is None:
        raise ConfigError("precomputed calibration does not match the planned tensors")
    if plans and config.calibration is not None and not calibrated:
        from onnxdc.calibration.calibrate import calibrate

        if original is None:
            raise ConfigError("calibration needs the original model")
        check_finite_weights(plans, read)
        calibrated = calibrate(original, plans, config.calibration, max_samples=config.calib_samples)
    entries: list[TensorInfo] = []
    quantized: dict[str, np.ndarray] = {}

    def jobs() -> Iterator[_Job]:  # runs on the main thread, a few tensors ahead of the results
        for ref in refs:
            yield _Job(tensor_label(ref), ref.proto.data_type, tuple(int(d) for d in ref.proto.dims),
                       read(ref.proto), plans.get(ref.slot), calibrated.get(ref.slot))

    # Tensors are coded independently (numpy and zstd release the GIL), in parallel with --jobs;
    # results are consumed in traversal order, so the container bytes do not depend on jobs.
    results = _ordered_map(lambda job: _encode_tensor(job, config), jobs(), config.jobs)
    for done, (ref, enc) in enumerate(zip(refs, results), 1):
        plan = plans.get(ref.slot)
        if notice is not None and plan is not None and plan.codebook_overflow is not None:
            notice(f"tensor {tensor_label(ref)!r} has weights up to {plan.codebook_overflow:.6g}, beyond float16's "
                   f"range (65504): its codebook is stored as float32")
        if enc is not None:
            stream_ids = {role: writer.add_stream(c.data, count=c.count, coder=c.coder)
                          for role, c in enc.streams.items()}
            entries.append(TensorInfo(
                slot=ref.slot, path=ref.path, name=ref.proto.name, dtype=ref.proto.data_type,
                shape=tuple(int(d) for d in ref.proto.dims), nbytes=enc.nbytes, crc32=enc.crc32,
                encoding=enc.encoding, params=enc.params, streams=stream_ids,
            ))
            if enc.values is not None and keep_values:
                quantized[tensor_label(ref)] = enc.values
            clear_data(ref.proto)
        elif ref.proto.data_location == onnx.TensorProto.EXTERNAL:
            set_raw_data(ref.proto, read(ref.proto))  # a small tensor stays in the skeleton, inline
        if progress:
            progress(done, len(refs), ref.proto.name)
    skel_bytes = skeleton.SerializeToString(deterministic=True)
    skel = encode_best(np.frombuffer(skel_bytes, dtype=np.uint8), [{"id": "zstd", "level": SKELETON_LEVEL}])
    skeleton_id = writer.add_stream(skel.data, count=skel.count, coder=skel.coder)
    metadata = dict(config.metadata)
    metadata["settings"] = config.sharing.to_json() if config.sharing is not None else {"lossless": True}
    if calibrated:
        metadata["calibration"] = {
            "samples": min(config.calib_samples, len(next(iter(config.calibration.values())))),
            "tensors": {tensor_label(plans[s].candidate.ref): {"method": c.method,
                                                               "error_kmeans": c.error_kmeans,
                                                               "error_refit": c.error_refit}
                        for s, c in calibrated.items()},
        }
    header = writer.header(producer=f"onnxdc {__version__}", metadata=metadata, skeleton=skeleton_id,
                           skeleton_crc32=zlib.crc32(skel_bytes), tensors=entries)
    return header, quantized


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], jobs: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``jobs`` threads, in order, with at most ``2 * jobs`` results in flight.

    The bound keeps memory to a few tensors however many the model has.
    """
    if jobs <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


@dataclass(frozen=True)
class _Encoded:
    """One tensor's coded streams and the header facts about its decoded bytes."""

    encoding: str
    params: dict[str, Any]
    streams: dict[str, Any]
    nbytes: int
    crc32: int
    values: np.ndarray | None  # the quantized weights, for shared tensors


@dataclass(frozen=True)
class _Job:
    """What a worker needs to code one tensor: plain values, read on the main thread.

    Workers never touch the protobuf tree, which the main thread keeps stripping as results come.
    """

    name: str
    data_type: int
    dims: tuple[int, ...]
    raw: bytes
    plan: WeightPlan | None
    cal: Any


def _encode_tensor(job: _Job, config: CompressConfig) -> _Encoded | None:
    """Code one tensor (None: it stays in the skeleton)."""
    raw, plan, cal = job.raw, job.plan, job.cal
    if plan is not None:
        w = raw_array(raw, job.data_type, job.dims)
        check_finite(w, job.name)
        if cal is not None:
            keep, clustering = cal.keep, cal.clustering
        else:
            keep = plan.keep if plan.keep is not None else prune(w, config=plan.settings.prune)
            clustering = None
        st = encode_shared(w, keep, share=plan.settings.share, index_coders=plan.settings.coders,
                           positions=plan.settings.positions, op=plan.candidate.op,
                           kind=plan.candidate.kind, clustering=clustering)
        decoded = le_bytes(st.values)
        return _Encoded(SHARED, st.params, st.streams, len(decoded), zlib.crc32(decoded), st.values)
    if len(raw) < config.min_tensor_bytes:
        return None
    params, coded = encode_planes(raw, data_type=job.data_type, level=config.zstd_level)
    return _Encoded(PLANES, params, coded, len(raw), zlib.crc32(raw), None)


def tensor_array(t: onnx.TensorProto, raw: bytes) -> np.ndarray:
    """The tensor's little-endian raw bytes as a native-order array of its shape (a view if possible)."""
    return raw_array(raw, t.data_type, tuple(t.dims))


def raw_array(raw: bytes, data_type: int, dims: tuple[int, ...]) -> np.ndarray:
    """Little-endian raw bytes of an ONNX float type as a native-order array of shape ``dims``."""
    native = np_dtype(data_type)
    arr = np.frombuffer(raw, dtype=native.newbyteorder("<"))
    # numpy mis-sorts float16 arrays whose dtype is labelled '<' instead of native: relabel.
    arr = arr.view(native) if sys.byteorder == "little" else arr.astype(native)
    return arr.reshape(dims)


def plan_sharing(model: onnx.ModelProto, sharing: SharingConfig,
                 read: Callable[[onnx.TensorProto], bytes] = tensor_raw_bytes) -> dict[int, WeightPlan]:
    """Choose the tensors to weight-share and resolve their settings (and global pruning masks).

    A tensor asked to have a float16 codebook whose weights overflow float16 keeps a float32
    codebook instead (recorded in its params): shared values would otherwise decode as ±inf.
    """
    plans: dict[int, WeightPlan] = {}
    for slot, cand in find_candidates(model).items():
        if tensor_numel(cand.ref.proto) < max(sharing.min_elements, 1) or not has_data(cand.ref.proto):
            continue
        ts = resolve(tensor_label(cand.ref), cand.kind, sharing)
        if not ts.lossless:
            plans[slot] = _fit_codebook_dtype(WeightPlan(cand, ts, None), read)
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


def decompress(data: bytes | Container, *, progress: Progress | None = None,
               max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_ratio: float = DEFAULT_MAX_RATIO
               ) -> onnx.ModelProto:
    """Rebuild the ModelProto a container holds, every tensor checked against its checksum.

    A container declaring more output than ``max_output_bytes``, or more than ``max_ratio`` times
    its size (beyond 256 MiB), is refused before anything is decoded
    (:func:`onnxdc.format.container.check_output_size`).

    Raises:
        ContainerError: the container is malformed, corrupted, does not match its skeleton, or
            declares more output than the ceilings allow.
    """
    container = data if isinstance(data, Container) else read_container(data)
    check_output_size(container, max_output_bytes=max_output_bytes, max_ratio=max_ratio)
    model, tensors = decoded_tensors(container, progress=progress)
    for proto, raw in tensors:
        set_raw_data(proto, raw)
    return model


def decoded_tensors(container: Container, *, progress: Progress | None = None
                    ) -> tuple[onnx.ModelProto, Iterator[tuple[onnx.TensorProto, bytes]]]:
    """The skeleton model and a lazy sequence of (its tensor, decoded raw bytes) for every stored tensor.

    Each tensor is checked against the skeleton (slot, name, dtype, shape) before anything is
    decoded, and against its checksum as it is decoded.
    """
    model, pairs = matched_tensors(container)

    def tensors() -> Iterator[tuple[onnx.TensorProto, bytes]]:
        decoded = decode_in_order(container, [info for _, info in pairs])
        for done, ((t, info), raw) in enumerate(zip(pairs, decoded), 1):
            if progress:  # before the yield: a consumer may stop after the last tensor
                progress(done, len(pairs), info.name)
            yield t, as_bytes(raw)

    return model, tensors()


def decode_in_order(container: Container, infos: list[TensorInfo], jobs: int = 1) -> Iterator[RawBuffer]:
    """The decoded raw bytes of ``infos``' tensors, in that order: streams prefetched in bounded
    batches (:func:`onnxdc.format.registry.batched`), tensors decoded on ``jobs`` threads (at most
    ``2 * jobs`` ahead of the consumer)."""
    return _ordered_map(lambda k: decode_tensor(infos[k], container), batched(container, infos), jobs)


def matched_tensors(container: Container) -> tuple[onnx.ModelProto, list[tuple[onnx.TensorProto, TensorInfo]]]:
    """The skeleton model and, for every stored tensor in header order, its proto and header entry.

    Raises:
        ContainerError: the skeleton does not decode, or a tensor entry does not match the
            skeleton's tensor in its slot (name, dtype, shape), or that tensor already holds data.
    """
    header = container.header
    skel_bytes = container.decode_stream(header.skeleton).tobytes()
    if zlib.crc32(skel_bytes) != header.skeleton_crc32:
        raise ContainerError("skeleton checksum mismatch after decoding")
    try:
        model = parse_model(skel_bytes, name="skeleton")
    except ModelError as exc:
        raise ContainerError(f"the skeleton stream does not hold a model: {exc}") from None
    by_slot = {r.slot: r for r in iter_tensors(model)}
    pairs = []
    for info in header.tensors:
        ref = by_slot.get(info.slot)
        if ref is None:
            raise ContainerError(f"tensor {info.name!r} refers to slot {info.slot}, which the model lacks")
        t = ref.proto
        if t.name != info.name or t.data_type != info.dtype or tuple(t.dims) != info.shape:
            raise ContainerError(
                f"tensor {info.name!r} (slot {info.slot}) does not match the skeleton's tensor {t.name!r}"
            )
        if has_data(t):
            raise ContainerError(f"slot {info.slot} ({t.name!r}) already holds data in the skeleton")
        pairs.append((t, info))
    return model, pairs

