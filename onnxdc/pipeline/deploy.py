"""Deployable output: a container decoded to a model that runs smaller than the float32 one.

Three forms:

* ``float``: every tensor expanded to its dtype (what :func:`onnxdc.pipeline.decode.decompress`
  gives);
* ``qdq``: each weight whose shared values lie on a uniform grid (integer levels times one step,
  as the automatic mode's entropy-constrained quantizer writes them) becomes int8 levels and a
  per-tensor ``DequantizeLinear``;
* ``palettized``: each weight with at most 256 distinct values becomes uint8 indices, a codebook
  and a ``Gather``.

Either way the weight computed in the graph equals the float decompression: exactly for a palette
(the codebook holds the very values) and exactly or within one float32 rounding for a grid
(:func:`onnxdc.stages.grid.fit_grid`), so accuracy does not move. A tensor that cannot be expressed,
or would not be smaller, stays float and the result says why. Only tensors the container stores
weight-shared (``shared``) are candidates: a lossless tensor has its own values, too many for a
palette. The container records one codebook per tensor, hence one step: scales are per tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from onnxdc.errors import ConfigError, ContainerError, Progress
from onnxdc.fileio.atomic import regular_file_size
from onnxdc.fileio.oserrors import read_error
from onnxdc.format.container import (
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_MAX_RATIO,
    Container,
    TensorInfo,
    check_output_size,
    open_container,
    read_container,
)
from onnxdc.format.registry import as_bytes
from onnxdc.onnx_io.tensors import raw_array, set_raw_data
from onnxdc.onnx_io.weights import Replacement, apply, dequantize, find_site, gather, model_names
from onnxdc.onnx_io.write import EXTERNAL_DATA_THRESHOLD, write_model
from onnxdc.pipeline.decode import decode_in_order, matched_tensors
from onnxdc.stages.grid import fit_grid

#: The output forms, the first the default.
FORMS = ("float", "qdq", "palettized")
#: The first opset with ``DequantizeLinear``.
DQ_OPSET = 10
#: The first opset (and IR version) with int4 tensors: grids of levels -8..7 are packed two a byte
#: there. Models of older opsets keep int8: onnxdc does not raise a model's opset.
INT4_OPSET, INT4_IR = 21, 10
#: Float dtypes a palette may hold (ONNX element types: float, float16, double, bfloat16).
PALETTE_DTYPES = (1, 10, 11, 16)


@dataclass(frozen=True)
class TensorForm:
    """How one stored tensor was written.

    Attributes:
        name: the tensor.
        form: ``int8+DequantizeLinear``, ``uint8+Gather`` or ``float``.
        float_bytes: its bytes as a float tensor.
        stored_bytes: the bytes of what holds it now (levels or indices plus scale or codebook).
        note: for a float tensor, why it stayed float; otherwise how close the computed weight is
            to the float one (``exact``, ``within 1 float32 ulp``).
    """

    name: str
    form: str
    float_bytes: int
    stored_bytes: int
    note: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "form": self.form, "float_bytes": self.float_bytes,
                "stored_bytes": self.stored_bytes, "note": self.note}


@dataclass(frozen=True)
class DeployReport:
    """What a deployable decompression wrote, tensor by tensor (stored tensors, header order)."""

    form: str
    tensors: tuple[TensorForm, ...]

    @property
    def rewritten(self) -> tuple[TensorForm, ...]:
        return tuple(t for t in self.tensors if t.form != "float")

    @property
    def kept_float(self) -> tuple[TensorForm, ...]:
        """Weight-shared tensors left float (lossless ones are float in every form)."""
        return tuple(t for t in self.tensors if t.form == "float" and t.note != LOSSLESS)


@dataclass(frozen=True)
class Deployed:
    """A deployable model in memory and its report."""

    model: onnx.ModelProto
    report: DeployReport


#: The note of a tensor the container stores exactly.
LOSSLESS = "stored losslessly"


def check_form(form: str) -> str:
    """``form`` if it is one of :data:`FORMS` (raises ConfigError naming the choices otherwise)."""
    if form not in FORMS:
        raise ConfigError(f"unknown output form {form!r}; expected one of {', '.join(FORMS)}")
    return form


def deploy(data: bytes | Container, *, form: str, progress: Progress | None = None, jobs: int = 1,
           max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, max_ratio: float = DEFAULT_MAX_RATIO) -> Deployed:
    """Decode a container into the model of ``form`` (:data:`FORMS`), every tensor checked
    against its checksum first (on ``jobs`` threads; the output does not depend on it).

    Raises:
        ConfigError: ``form`` is not a known form.
        ContainerError: as :func:`onnxdc.pipeline.decode.decompress`.
    """
    check_form(form)
    container = data if isinstance(data, Container) else read_container(data)
    check_output_size(container, max_output_bytes=max_output_bytes, max_ratio=max_ratio)
    model, pairs = matched_tensors(container)
    decoded = decode_in_order(container, [info for _, info in pairs], jobs)
    for done, ((proto, info), raw) in enumerate(zip(pairs, decoded), 1):
        set_raw_data(proto, as_bytes(raw))
        if progress:
            progress(done, len(pairs), info.name)
    taken = model_names(model)
    opset = _default_opset(model)
    int4 = opset >= INT4_OPSET and model.ir_version >= INT4_IR
    forms, reps = [], []
    for proto, info in pairs:
        tf, rep = _one(model, proto, info, form=form, opset=opset, int4=int4, taken=taken)
        forms.append(tf)
        if rep is not None:
            reps.append(rep)
    apply(model, reps, taken)
    return Deployed(model, DeployReport(form, tuple(forms)))


def deploy_file(path: str | os.PathLike[str], out: str | os.PathLike[str], *, form: str,
                progress: Progress | None = None, jobs: int = 1, overwrite: bool = True,
                external_data: bool | None = None, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
                max_ratio: float = DEFAULT_MAX_RATIO) -> DeployReport:
    """Decode the container file ``path`` into the model of ``form``, written atomically to
    ``out``, with external data (:func:`onnxdc.onnx_io.write.write_model`) when ``external_data``
    is true, or when None and its tensors exceed what one protobuf message holds.

    The model is built in memory (its graph changes): use
    :func:`onnxdc.pipeline.paths.decompress_file` for the float form of a model too large for that.
    """
    check_form(form)
    regular_file_size(path, error=ContainerError, what="container")
    try:
        with open(path, "rb") as fh:
            container = open_container(fh, check_streams=False)
            deployed = deploy(container, form=form, progress=progress, jobs=jobs,
                              max_output_bytes=max_output_bytes, max_ratio=max_ratio)
    except OSError as exc:
        raise read_error(exc, path, cls=ContainerError) from None
    if external_data is None:
        external_data = deployed.model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    write_model(deployed.model, out, external_data=external_data, overwrite=overwrite)
    return deployed.report


def _default_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _one(model: onnx.ModelProto, proto: onnx.TensorProto, info: TensorInfo, *, form: str, opset: int,
         int4: bool, taken: set[str]) -> tuple[TensorForm, Replacement | None]:
    """One tensor's form in ``form`` and, when rewritten, its replacement (``int4``: the model
    may hold int4 tensors)."""
    nbytes = info.nbytes

    def keep(note: str) -> tuple[TensorForm, None]:
        return TensorForm(info.name, "float", nbytes, nbytes, note), None

    if info.encoding != "shared":
        return keep(LOSSLESS)
    if form == "float":
        return keep("float form")
    if form == "qdq" and info.dtype != 1:
        return keep("not float32 (DequantizeLinear of this opset gives float32)")
    if form == "qdq" and opset < DQ_OPSET:
        return keep(f"opset {opset} has no DequantizeLinear (needs {DQ_OPSET})")
    if info.dtype not in PALETTE_DTYPES:
        return keep(f"dtype {info.dtype} is not a float type")
    site, why = find_site(model, proto)
    if site is None:
        return keep(why)
    values = raw_array(proto.raw_data, info.dtype, info.shape).reshape(-1)
    if not np.all(np.isfinite(values)):
        return keep("holds NaN or infinite values")
    uniq, inverse = np.unique(values, return_inverse=True)
    numel = values.size
    if form == "qdq":
        grid = fit_grid(uniq) if uniq.size <= 255 else None
        if grid is None:
            return keep("its values are not on a uniform grid (k-means or refit values: --as palettized "
                        "takes them)")
        note = "exact" if grid.max_ulps == 0 else f"within {grid.max_ulps} float32 ulp"
        int4 = int4 and -8 <= int(grid.levels.min()) and int(grid.levels.max()) <= 7
        rep = dequantize(proto, output=site.output(proto), levels=grid.levels[inverse], scale=grid.scale,
                         taken=taken, int4=int4)
        kind, stored = ("int4+DequantizeLinear", (numel + 1) // 2 + 5) if int4 else ("int8+DequantizeLinear", numel + 5)
    else:
        if uniq.size > 256:
            return keep(f"{uniq.size} distinct values (a uint8 palette holds 256)")
        note = "exact"
        rep = gather(proto, output=site.output(proto), indices=inverse.astype(np.uint8), codebook=uniq, taken=taken)
        kind, stored = "uint8+Gather", numel + uniq.nbytes
    if _serialized(rep) >= proto.ByteSize():
        return keep("too small to gain")
    return TensorForm(info.name, kind, nbytes, stored, note), rep


def _serialized(rep: Replacement) -> int:
    """Bytes the replacement's tensors and nodes take in the model (each with its field header)."""
    return sum(m.ByteSize() + 4 for m in (*rep.tensors, *rep.nodes))
