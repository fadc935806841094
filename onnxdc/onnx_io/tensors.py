"""Reading ONNX models safely and walking every tensor they hold.

The container refers to each stored tensor by its *slot*: the position of its ``TensorProto`` in
one fixed traversal of the model (:func:`iter_tensors`). The traversal reaches every place a tensor
can live — graph initializers, sparse initializers, Constant-like node attributes, subgraphs of
If/Loop/Scan, function bodies and training graphs — so nothing is left behind, and the same order
is replayed on the skeleton when decompressing.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import AttributeProto, GraphProto, NodeProto, TensorProto, numpy_helper

from onnxdc.dtypes import expected_nbytes, np_dtype
from onnxdc.errors import ContainerError, ModelError, OnnxdcError
from onnxdc.fileio.atomic import read_regular_file
from onnxdc.fileio.oserrors import read_error
from onnxdc.onnx_io.graphs import attribute_graphs


@dataclass(frozen=True)
class TensorRef:
    """One tensor found by :func:`iter_tensors`.

    Attributes:
        slot: position in the traversal; stable for a given model structure.
        path: a human-readable location such as ``graph.node[3:Constant].attribute[value]``.
        proto: the ``TensorProto`` itself (mutable; callers may strip or fill its data).
        owner_ops: op types of the nodes that consume the tensor by name in the same graph
            (empty for attribute tensors, which belong to their node: see ``path``).
    """

    slot: int
    path: str
    proto: TensorProto
    owner_ops: tuple[str, ...] = ()


def iter_tensors(model: onnx.ModelProto) -> Iterator[TensorRef]:
    """Yield every ``TensorProto`` the model holds, in a fixed order, subgraphs included."""
    counter = iter(range(1 << 62))
    yield from _walk_graph(model.graph, "graph", counter)
    for f_i, func in enumerate(model.functions):
        for n_i, node in enumerate(func.node):
            yield from _walk_node(node, f"functions[{f_i}].node[{n_i}]", counter)
    for t_i, info in enumerate(model.training_info):
        yield from _walk_graph(info.initialization, f"training_info[{t_i}].initialization", counter)
        yield from _walk_graph(info.algorithm, f"training_info[{t_i}].algorithm", counter)


def _consumers(graph: GraphProto) -> dict[str, tuple[str, ...]]:
    users: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                users.setdefault(name, []).append(node.op_type)
    return {k: tuple(v) for k, v in users.items()}


def _walk_graph(graph: GraphProto, where: str, counter: Iterator[int]) -> Iterator[TensorRef]:
    users = _consumers(graph)
    for i, t in enumerate(graph.initializer):
        yield TensorRef(next(counter), f"{where}.initializer[{i}]", t, users.get(t.name, ()))
    for i, st in enumerate(graph.sparse_initializer):
        yield TensorRef(next(counter), f"{where}.sparse_initializer[{i}].values", st.values)
        yield TensorRef(next(counter), f"{where}.sparse_initializer[{i}].indices", st.indices)
    for i, node in enumerate(graph.node):
        yield from _walk_node(node, f"{where}.node[{i}]", counter)


def _walk_node(node: NodeProto, where: str, counter: Iterator[int]) -> Iterator[TensorRef]:
    for attr in node.attribute:
        at = f"{where}.attribute[{attr.name}]"
        if attr.type == AttributeProto.TENSOR:
            yield TensorRef(next(counter), at, attr.t, (node.op_type,))
        elif attr.type == AttributeProto.TENSORS:
            for j, t in enumerate(attr.tensors):
                yield TensorRef(next(counter), f"{at}[{j}]", t, (node.op_type,))
        elif attr.type == AttributeProto.SPARSE_TENSOR:
            yield TensorRef(next(counter), f"{at}.values", attr.sparse_tensor.values)
            yield TensorRef(next(counter), f"{at}.indices", attr.sparse_tensor.indices)
        elif attr.type == AttributeProto.SPARSE_TENSORS:
            for j, st in enumerate(attr.sparse_tensors):
                yield TensorRef(next(counter), f"{at}[{j}].values", st.values)
                yield TensorRef(next(counter), f"{at}[{j}].indices", st.indices)
        else:
            for suffix, g in attribute_graphs(attr):
                yield from _walk_graph(g, at + suffix, counter)


# --------------------------------------------------------------------------- tensor data


def tensor_raw_bytes(t: TensorProto) -> bytes:
    """Return the tensor's data as little-endian ``raw_data`` bytes, whatever field holds it.

    Accepts raw_data and every typed field (float_data, int32_data, ...), as
    ``onnx.numpy_helper`` does; external data must have been loaded first (:func:`load_model`).
    """
    if t.data_location == TensorProto.EXTERNAL:
        raise ModelError(f"tensor {t.name!r} still refers to external data")
    if t.HasField("raw_data"):
        raw = t.raw_data
    else:
        try:
            raw = numpy_helper.from_array(numpy_helper.to_array(t)).raw_data
        except (ValueError, TypeError) as exc:
            raise ModelError(f"tensor {t.name!r} has unreadable data ({exc})") from None
    return _checked_length(t, raw)


def _checked_length(t: TensorProto, raw: bytes) -> bytes:
    """``raw`` if its length is what the tensor's shape and dtype need (ModelError otherwise)."""
    want = expected_nbytes(t.data_type, tensor_numel(t))
    if want is not None and len(raw) != want:
        raise ModelError(f"tensor {t.name!r} holds {len(raw)} bytes of data, its shape and dtype need {want}")
    return raw


def le_bytes(arr: np.ndarray) -> bytes:
    """An array's values as little-endian bytes (raw_data's byte order, and the container's)."""
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def has_data(t: TensorProto) -> bool:
    """Whether the tensor carries element data onnxdc may store (not strings, not empty)."""
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return False
    return t.HasField("raw_data") or t.data_location == TensorProto.EXTERNAL or any(
        len(getattr(t, f)) for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")
    )


def clear_data(t: TensorProto) -> None:
    """Remove every data field from ``t`` (keeping name, dims, type and doc string).

    An external reference goes too: a stored tensor's data live in the container.
    """
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
        t.ClearField(field)
    if t.data_location == TensorProto.EXTERNAL:
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


def set_raw_data(t: TensorProto, data: bytes) -> None:
    """Store ``data`` as the tensor's raw_data, the one form onnxdc writes."""
    clear_data(t)
    t.raw_data = data


#: Dims a stored tensor may have at most (the container reader's limit).
MAX_DIMS = 64


def check_storable(t: TensorProto) -> None:
    """Refuse a tensor a container could not describe: no ONNX dtype, negative dims, too many dims.

    The reader checks every tensor entry (dtype, shape) before decoding; writing what it will
    refuse would turn a bad input model into a container nobody can open.

    Raises:
        ModelError: naming the tensor and what it declares.
    """
    if t.data_type not in TensorProto.DataType.values() or t.data_type > 64:
        raise ModelError(f"tensor {t.name!r} has data_type {t.data_type}, which is no ONNX tensor type")
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise ModelError(f"tensor {t.name!r} has negative dims {dims}; expected sizes >= 0")
    if len(dims) > MAX_DIMS:
        raise ModelError(f"tensor {t.name!r} has {len(dims)} dims; at most {MAX_DIMS} are supported")


def tensor_numel(t: TensorProto) -> int:
    """Number of elements the tensor's dims declare."""
    return math.prod(int(d) for d in t.dims)


# --------------------------------------------------------------------------- loading


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX model and its external data, refusing anything that is not an ONNX model.

    External data is read only from regular files inside the model's own directory: absolute
    locations, ``..`` components and symbolic links that lead outside are refused, since a model
    file from elsewhere must not make onnxdc read arbitrary files.

    Raises:
        ModelError: the file is missing, unreadable, not an ONNX model, or its external data is
            unsafe or incomplete.
    """
    p = Path(path)
    model = parse_model(_read_model_file(p), name=str(p))
    load_external_data(model, p.parent)
    return model


def _read_model_file(p: Path) -> bytes:

    try:
        return read_regular_file(p, error=ModelError, what="model")
    except OSError as exc:
        raise read_error(exc, p, cls=ModelError, kind="an ONNX file") from None


def parse_model(data: bytes, *, name: str = "<bytes>") -> onnx.ModelProto:
    """Parse serialized ModelProto bytes, checking that they plausibly form an ONNX model."""
    if not data:
        raise ModelError(f"{name!r} is empty, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(f"{name!r} is not an ONNX model (protobuf parse failed: {exc})") from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ModelError(f"{name!r} is not an ONNX model (no ir_version or no graph)")
    return model


def skeleton_tensors(data: bytes, slots: frozenset[int]) -> dict[int, tuple[str, str, int, tuple[int, ...]]]:
    """A container skeleton's tensors in ``slots`` (a 4.0 header's): ``(path, name, dtype, dims)``
    by slot, what a 4.0 header leaves to the skeleton (:mod:`onnxdc.format.binary`). The walk
    stops after the last of them, and other tensors are not looked at: a hostile skeleton may hold
    millions.

    Raises:
        ModelError: the bytes are no ONNX model.
        ContainerError: a tensor of ``slots`` has a name that is not UTF-8 (protobuf then gives bytes).
    """
    model = parse_model(data, name="skeleton")
    out: dict[int, tuple[str, str, int, tuple[int, ...]]] = {}
    last = max(slots, default=-1)
    for r in iter_tensors(model):
        if r.slot > last:
            break
        if r.slot in slots:
            if not isinstance(r.proto.name, str):
                raise ContainerError(f"the skeleton's tensor in slot {r.slot} has a name that is not valid UTF-8",
                                     code="header-utf8")
            out[r.slot] = (r.path, r.proto.name, r.proto.data_type, tuple(int(d) for d in r.proto.dims))
    return out


@dataclass(frozen=True)
class ExternalRef:
    """Where one tensor's external data lives, checked to be inside the model's directory."""

    path: Path
    offset: int
    length: int


def external_ref(t: TensorProto, base: Path) -> ExternalRef:
    """Resolve and check a tensor's external data reference (location, offset, length).

    Raises:
        ModelError: the location leaves ``base``, the file is missing, or the range is outside it.
    """
    info = {e.key: e.value for e in t.external_data}
    target = _safe_external_path(base, info.get("location", ""), t.name)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ModelError(f"bad external data offset/length for tensor {t.name!r}") from None
    size = _stat_size(target, info.get("location", ""), t.name)
    if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
        raise ModelError(
            f"external data range (offset {offset}, length {length}) exceeds file size ({size}) "
            f"for tensor {t.name!r}"
        )
    return ExternalRef(target, offset, size - offset if length is None else length)


def read_external(ref: ExternalRef) -> bytes:
    """The bytes of one external tensor.

    Raises:
        ModelError: the file cannot be opened or read (permissions, I/O error), or shrank.
    """
    try:
        with open(ref.path, "rb") as fh:
            fh.seek(ref.offset)
            data = fh.read(ref.length)
    except OSError as exc:
        raise ModelError(f"cannot read external data file {ref.path.name!r}: {exc.strerror or exc}") from None
    if len(data) != ref.length:
        raise ModelError(f"external data file {ref.path.name!r} shrank while reading")
    return data


def load_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Read every external tensor of ``model`` from files under ``base_dir`` into raw_data."""
    base = base_dir.resolve()
    for ref in iter_tensors(model):
        t = ref.proto
        if t.data_location == TensorProto.EXTERNAL:
            t.raw_data = read_external(external_ref(t, base))
            t.data_location = TensorProto.DEFAULT
            del t.external_data[:]


def load_model_lazy(path: str | os.PathLike[str]) -> tuple[onnx.ModelProto, Callable[[TensorProto], bytes]]:
    """Load a model whose external data stay on disk, and a reader for any tensor's raw bytes.

    Every external reference is checked up front (as :func:`load_model` does); the reader then
    reads one tensor at a time, so a model far larger than memory can be processed tensor by tensor.
    """
    p = Path(path)
    model = parse_model(_read_model_file(p), name=str(p))
    base = p.parent.resolve()
    for r in iter_tensors(model):  # refuse unsafe or missing external data before any work
        if r.proto.data_location == TensorProto.EXTERNAL:
            external_ref(r.proto, base)

    def read(t: TensorProto) -> bytes:
        if t.data_location != TensorProto.EXTERNAL:
            return tensor_raw_bytes(t)
        return _checked_length(t, read_external(external_ref(t, base)))

    return model, read


def _safe_external_path(base: Path, location: str, tensor: str) -> Path:
    if not location:
        raise ModelError(f"tensor {tensor!r} has external data without a location")
    if "\0" in location:
        raise ModelError(f"external data location {_short(location)!r} of tensor {tensor!r} contains a NUL byte")
    rel = Path(location)
    if rel.is_absolute() or ".." in rel.parts or location.startswith(("/", "\\")) or ":" in location:
        raise ModelError(f"external data location {_short(location)!r} of tensor {tensor!r} leaves the model directory")
    try:
        target = (base / rel).resolve()
        if base not in target.parents:
            raise ModelError(f"external data location {_short(location)!r} of tensor {tensor!r} leaves the model directory")
        if not target.exists():
            raise ModelError(f"external data file {_short(location)!r} of tensor {tensor!r} not found")
        if not target.is_file():
            raise ModelError(f"external data location {_short(location)!r} of tensor {tensor!r} is not a regular file")
    except (OSError, RuntimeError, ValueError) as exc:  # a name too long, a symlink loop, ...
        raise ModelError(f"cannot use external data location {_short(location)!r} of tensor {tensor!r}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    return target


def _stat_size(target: Path, location: str, tensor: str) -> int:
    try:
        return target.stat().st_size
    except OSError as exc:
        raise ModelError(f"cannot read external data file {_short(location)!r} of tensor {tensor!r}: "
                         f"{exc.strerror or exc}") from None


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, so that an error about a huge name stays one short line."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def model_input_files(model: str | os.PathLike[str], *others: str | os.PathLike[str] | None) -> list[Path]:
    """Every file a command reads, for :func:`check_output_path`: the model, the external data
    files it refers to, and ``others`` (a calibration file, a recipe; None for one not given).

    A model that cannot be read counts as itself alone: the command reports what is wrong with it.
    """
    files = [Path(model)] + [Path(o) for o in others if o is not None]
    try:
        skeleton, _ = load_model_lazy(model)
        base = Path(model).parent.resolve()
        files += [external_ref(r.proto, base).path for r in iter_tensors(skeleton)
                  if r.proto.data_location == r.proto.EXTERNAL]
    except OnnxdcError:
        pass
    return files


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
