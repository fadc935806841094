"""The compression pipeline: model in, container bytes out, and back.

``compress`` walks every tensor of the model (subgraphs and functions too), stores each one either
losslessly (byte planes) or, for the selected weights, through the Deep Compression stages (prune,
share, code), strips the stored data from the ModelProto to form the *skeleton*, and lays out the
container. ``decompress`` reverses it and checks every tensor against its recorded checksum.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxdc._version import __version__
from onnxdc.errors import ConfigError, ContainerError, Notice, Progress
from onnxdc.format.container import (
    Container,
    ContainerWriter,
    Header,
    TensorInfo,
    read_container,
    skeleton_ceiling,
)
from onnxdc.onnx_io.names import predict_names, restore_names
from onnxdc.onnx_io.tensors import (
    check_storable,
    clear_data,
    has_data,
    iter_tensors,
    le_bytes,
    raw_array,
    set_raw_data,
    tensor_raw_bytes,
)
from onnxdc.pipeline.jobs import ordered_map
from onnxdc.pipeline.plan import WeightPlan, check_finite, check_finite_weights, plan_sharing, tensor_label
from onnxdc.pipeline.planes import ENCODING as PLANES
from onnxdc.pipeline.planes import encode_planes
from onnxdc.pipeline.settings import SharingConfig
from onnxdc.pipeline.shared import ENCODING as SHARED
from onnxdc.pipeline.shared import encode_shared
from onnxdc.pipeline.streams import encode_best
from onnxdc.threads import single_blas_thread

SKELETON_LEVEL = 19
#: The coders the skeleton is tried with: zstd alone, and zstd primed with an ONNX dictionary
#: (smaller on small graphs, where the vocabulary is most of the stream): ``onnx-1`` from the ONNX
#: backend test graphs, ``onnx-2`` from those and exported PyTorch graphs, with derived names marked
#: (:mod:`onnxdc.onnx_io.names`; the 3.0 skeletons it was made for: a third smaller on the CRNN),
#: ``onnx-3`` from the same graphs with node names marked too (4.0's skeletons).
SKELETON_CODERS = ({"id": "zstd", "level": SKELETON_LEVEL},
                   {"id": "zstd-dict", "dictionary": "onnx-1", "level": SKELETON_LEVEL},
                   {"id": "zstd-dict", "dictionary": "onnx-2", "level": SKELETON_LEVEL},
                   {"id": "zstd-dict", "dictionary": "onnx-3", "level": SKELETON_LEVEL})
#: The skeleton coders each format version may name (``onnx-2`` came with 3.0, ``onnx-3`` with 4.0).
SKELETON_CODERS_OF = {1: 2, 2: 2, 3: 3, 4: 4}



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
        metadata: free-form entries recorded in the container header (a user's own; the run's
            record is not: on a small model its bytes were a third of the 3.0 header).
        record: what the caller knows of the run (the calibration data's source, the automatic
            mode's budget and trials), returned with the run's record
            (:attr:`CompressResult.record`), and kept in the header only by a 3.0 or older writer.
    """

    sharing: SharingConfig | None = None
    calibration: dict[str, np.ndarray] | None = None
    calib_samples: int = 512
    min_tensor_bytes: int = 64
    zstd_level: int = 19
    jobs: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)

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
    #: What the run did, in full (a 3.0 header kept :func:`brief_metadata` of it): the settings with
    #: every rule, each calibrated tensor's method and errors, the automatic mode's trials.
    record: dict[str, Any] = field(default_factory=dict)


@single_blas_thread
def compress(model: onnx.ModelProto, *, config: CompressConfig = CompressConfig(),
             progress: Progress | None = None, calibrated: dict[int, Any] | None = None,
             notice: Notice | None = None, keep_values: bool = True) -> CompressResult:
    """Compress a loaded model (external data already read) into container bytes.

    The input model is not modified. ``calibrated`` passes the result of
    :func:`onnxdc.calibration.calibrate.calibrate` already computed for exactly these settings and
    calibration data (the automatic mode has it), so it is not computed again. ``notice``
    receives one line per thing done on the user's behalf (a float32 codebook kept).
    ``keep_values=False`` leaves :attr:`CompressResult.quantized` empty: a model's worth of arrays
    less for callers that only want the bytes (the automatic mode).
    """
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    writer = ContainerWriter()
    header, quantized, record = encode_model(skeleton, writer=writer, config=config, original=model,
                                             progress=progress, calibrated=calibrated, notice=notice,
                                             keep_values=keep_values)
    del skeleton  # its arena still holds the stripped tensors' data
    data = writer.to_bytes(header)
    return CompressResult(data, read_container(data), quantized, record)


def encode_model(skeleton: onnx.ModelProto, *, writer: ContainerWriter, config: CompressConfig,
                 original: onnx.ModelProto | None = None, read: Callable[[onnx.TensorProto], bytes] = tensor_raw_bytes,
                 keep_values: bool = True, progress: Progress | None = None,
                 calibrated: dict[int, Any] | None = None,
                 notice: Notice | None = None) -> tuple[Header, dict[str, np.ndarray], dict[str, Any]]:
    """Code every tensor of ``skeleton`` into ``writer`` (stripping their data) and build the header.

    Returns the header, the quantized weights (with ``keep_values``) and the run's full record,
    of which the header holds the user's ``config.metadata`` (a 3.0 or older header,
    :func:`brief_metadata` of the whole record).

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
    plans = plan_sharing(skeleton, config.sharing, read=read, notice=notice) if config.sharing is not None else {}
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
    results = ordered_map(lambda job: _encode_tensor(job, config), jobs(), config.jobs)
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
    stored = marked_skeleton(skeleton, skel_bytes, nodes=writer.major >= 4) if writer.major >= 3 else None
    coders = SKELETON_CODERS[:SKELETON_CODERS_OF[writer.major]]
    skel = encode_best(np.frombuffer(stored or skel_bytes, dtype=np.uint8), coders)
    if writer.major >= 4 and skel.count > skeleton_ceiling(len(skel.data)):  # never write what no reader opens
        raise ContainerError(
            f"the skeleton decodes to {skel.count} bytes from {len(skel.data)}, over what a 4.0 reader opens "
            f"({skeleton_ceiling(len(skel.data))}): tensors left in it (min_tensor_bytes) code too well", code="limits")
    skeleton_id = writer.add_stream(skel.data, count=skel.count, coder=skel.coder)
    metadata = {**config.record, **config.metadata}
    metadata["settings"] = config.sharing.to_json() if config.sharing is not None else {"lossless": True}
    if calibrated:
        metadata["calibration"] = {
            "samples": min(config.calib_samples, len(next(iter(config.calibration.values())))),
            # Errors only where they were measured: on small models every header byte counts.
            "tensors": {tensor_label(plans[s].candidate.ref): {"method": c.method, **(
                {"error_kmeans": c.error_kmeans, "error_refit": c.error_refit}
                if c.error_kmeans or c.error_refit else {})}
                        for s, c in calibrated.items()},
        }
    header = writer.header(producer=f"onnxdc {__version__}", metadata=(
        dict(config.metadata) if writer.major >= 4 else brief_metadata(metadata)), skeleton=skeleton_id,
                           skeleton_crc32=zlib.crc32(skel_bytes), tensors=entries, skeleton_names=stored is not None)
    return header, quantized, metadata


def marked_skeleton(skeleton: onnx.ModelProto, skel_bytes: bytes, *, nodes: bool = False) -> bytes | None:
    """The skeleton with its derived value names marked (:func:`predict_names`), or None when it
    has none, or when restoring the marks would not give back ``skel_bytes`` exactly (checked
    here, so a reader's restore is always the original)."""
    marked = predict_names(skeleton, nodes=nodes)
    if marked is None:
        return None
    data = marked.SerializeToString(deterministic=True)
    back = onnx.ModelProto()
    back.ParseFromString(data)
    restore_names(back, nodes=nodes)
    return data if back.SerializeToString(deterministic=True) == skel_bytes else None


def brief_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """What the header keeps of a run's record: how the file was made, not every detail of it.

    On a small model every header byte counts (the CRNN sample's full record was a third of its
    header), and what is left out is either in the tensors' own params (each tensor's sparsity and
    bits, which the automatic mode's rules only repeat) or in the recipe and the
    :class:`CompressResult` the run returns (each tensor's calibration method and errors, the
    automatic mode's trial counts).
    """
    out = dict(record)
    if "auto" in out:
        out["auto"] = {k: v for k, v in out["auto"].items() if k in ("engine", "budget", "budget_met")}
        out["settings"] = {k: v for k, v in out.get("settings", {}).items() if k != "rules"}
    if "calibration" in out:
        out["calibration"] = {k: v for k, v in out["calibration"].items() if k != "tensors"}
    return out


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
            keep = plan.mask(w)
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


