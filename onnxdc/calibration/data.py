"""Reading calibration and evaluation data safely: lazily, bounded, and checked against the model.

An ``.npz`` is a zip of ``.npy`` members, and a few megabytes of zip can deflate to gigabytes.
``np.load`` followed by slicing reads every member whole before a caller keeps its first 512
samples, so here each member's ``.npy`` header is read first (magic, then header 1.0 or 2.0,
never a pickle), its dtype and shape are checked, and only the rows used are read from the
decompressed member stream, under a cap on the total bytes read. Nothing is trusted from the
file before it has been checked: the declared size against the member's size, the dtype against
what a model input can take, the rank and feature sizes against the model's input spec.
"""

from __future__ import annotations

import lzma
import math
import os
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import onnx

from onnxdc.errors import DataError, Notice

#: Bytes of array data read from one data file at most (all members together).
MAX_DATA_BYTES = 4 << 30
#: Arrays one data file may hold: one per model input, plus labels.
MAX_ARRAYS = 1024
#: Bytes read from a member stream at a time.
_CHUNK = 1 << 20
#: dtype kinds a model input (or ``labels``) can take: bool, signed and unsigned integers, floats.
_KINDS = "biuf"
_NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` header declares, checked to be a plain numeric array."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def row_bytes(self) -> int:
        """Bytes of one sample (one index along the first axis)."""
        return math.prod(self.shape[1:]) * self.dtype.itemsize


#: Whether an array (by key and rank) holds its samples on axis 0: its first rows are read
#: alone; other arrays (a shared input, samples on another axis) are read whole, under the cap.
ByRows = Callable[[str, int], bool]


def read_arrays(path: str | os.PathLike[str], *, max_rows: int | None = None, max_bytes: int = MAX_DATA_BYTES,
                single_name: str | None = None, by_rows: ByRows | None = None,
                budget: ReadBudget | None = None) -> dict[str, np.ndarray]:
    """Read the first ``max_rows`` samples of every array in an ``.npz`` (or a plain ``.npy``).

    Args:
        path: the data file.
        max_rows: samples read at most per array (None: all).
        max_bytes: array bytes read at most, all arrays together.
        single_name: the key a plain ``.npy`` array gets (the model's only input); None refuses
            a plain ``.npy``.
        by_rows: which arrays count samples on axis 0 (default: all); the others are read whole
            and may be 0-d.
        budget: the bytes left to read, shared by the files of a folder (default: ``max_bytes``).

    Raises:
        DataError: the file is missing or unreadable, not an npz of plain numeric arrays with a
            sample axis, declares more data than it holds, or needs more than ``max_bytes``.
    """
    p = Path(path)
    budget = budget if budget is not None else ReadBudget(max_bytes, str(p))
    with _opened(p) as fh:
        is_npy = fh.read(len(_NPY_MAGIC)) == _NPY_MAGIC
        if is_npy:
            if single_name is None:
                raise DataError(f"data file {str(p)!r} is a single .npy array; give an .npz keyed by the "
                                f"model's input names (a plain .npy is taken only for a model with one input)")
            fh.seek(0)
            size = p.stat().st_size
            what = f"data file {str(p)!r}"
            try:
                arr, _ = _read_npy(fh, size, what, max_rows=max_rows, budget=budget,
                                   by_rows=_bound(by_rows, single_name))
            except (OSError, EOFError) as exc:
                raise DataError(f"cannot read {what}: {exc}") from None
            return {single_name: arr}
    try:
        with zipfile.ZipFile(p) as zf:
            return _read_zip(zf, str(p), max_rows=max_rows, budget=budget, by_rows=by_rows)
    except zipfile.BadZipFile as exc:
        raise DataError(f"data file {str(p)!r} is not an .npz (zip) file: {exc}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {str(p)!r}: {exc.strerror or exc}") from None


@contextmanager
def _opened(p: Path) -> Iterator[IO[bytes]]:
    from onnxdc.fileio.atomic import refuse_special_file

    refuse_special_file(p, error=DataError, what="data file")  # not /dev/zero, not a FIFO
    try:
        fh = open(p, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise DataError(f"no such data file: {str(p)!r}") from None
    except IsADirectoryError:
        raise DataError(f"data file {str(p)!r} is a directory") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read data file {str(p)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    with fh:
        yield fh


def _bound(by_rows: ByRows | None, key: str) -> Callable[[int], bool] | None:
    return None if by_rows is None else (lambda ndim: by_rows(key, ndim))


class ReadBudget:
    """The bytes a data file (or a folder of them) may still make us read (the cap on the total)."""

    def __init__(self, max_bytes: int, file: str) -> None:
        self.left = max_bytes
        self.max_bytes = max_bytes
        self.file = file

    def take(self, n: int, what: str) -> None:
        if n > self.left:
            raise DataError(f"{what} needs {n:,} bytes, over what one data file may make onnxdc read "
                            f"({self.max_bytes:,} bytes in all); use fewer samples (--calib-samples) or a "
                            f"smaller file")
        self.left -= n


def _read_zip(zf: zipfile.ZipFile, file: str, *, max_rows: int | None, budget: ReadBudget,
              by_rows: ByRows | None) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    declared: dict[str, int] = {}
    members = [i for i in zf.infolist() if not i.is_dir()]
    if not members:
        raise DataError(f"data file {file!r} holds no arrays")
    if len(members) > MAX_ARRAYS:
        raise DataError(f"data file {file!r} holds {len(members)} members; expected one array per model input "
                        f"(at most {MAX_ARRAYS})")
    for info in members:
        if not info.filename.endswith(".npy"):
            raise DataError(f"member {info.filename!r} of data file {file!r} is not a .npy array")
        key = info.filename[: -len(".npy")]
        if key in out:
            raise DataError(f"data file {file!r} holds array {key!r} twice")
        what = f"array {key!r} of data file {file!r}"
        try:
            with zf.open(info) as fh:
                out[key], hdr = _read_npy(fh, info.file_size, what, max_rows=max_rows, budget=budget,
                                          by_rows=_bound(by_rows, key))
        except DataError:
            raise
        except (OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, ValueError,
                zlib.error, lzma.LZMAError) as exc:  # a corrupt, encrypted or unsupported member
            raise DataError(f"cannot read {what}: {exc}") from None
        if hdr.shape and (by_rows is None or by_rows(key, len(hdr.shape))):
            declared[key] = hdr.shape[0]
    if len(set(declared.values())) > 1:
        counts = ", ".join(f"{k!r} {v}" for k, v in declared.items())
        raise DataError(f"arrays of data file {file!r} have different sample counts: {counts}")
    return out


def _parse_header(fh: IO[bytes], what: str, *, scalar_ok: bool = False) -> NpyHeader:
    """Read and check an ``.npy`` header (format 1.0 or 2.0), leaving ``fh`` at the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise DataError(f"{what} is .npy format {version[0]}.{version[1]}; onnxdc reads 1.0 and 2.0")
    except (ValueError, TypeError, SyntaxError, EOFError, UnicodeDecodeError, tokenize.TokenError) as exc:
        raise DataError(f"{what} has a malformed .npy header ({str(exc).splitlines()[0]})") from None
    if dtype.hasobject:
        raise DataError(f"{what} holds Python objects; onnxdc never unpickles data, save plain numeric arrays")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise DataError(f"{what} has dtype {dtype.str!r}; expected booleans, integers or floats")
    if len(shape) == 0 and not scalar_ok:
        raise DataError(f"{what} is a 0-d scalar; expected an array whose first axis counts samples")
    if any(d < 0 for d in shape):
        raise DataError(f"{what} declares a negative dimension in shape {shape}")
    return NpyHeader(tuple(int(d) for d in shape), dtype, bool(fortran))


def _read_npy(fh: IO[bytes], size: int, what: str, *, max_rows: int | None, budget: ReadBudget,
              by_rows: Callable[[int], bool] | None = None) -> tuple[np.ndarray, NpyHeader]:
    """Read one ``.npy`` stream of ``size`` bytes: its header, then the rows used only (all of
    an array whose axis 0 is not the samples, ``by_rows`` says)."""
    hdr = _parse_header(fh, what, scalar_ok=by_rows is not None)
    rowwise = by_rows is None or by_rows(len(hdr.shape))
    if rowwise and not hdr.shape:
        raise DataError(f"{what} is a 0-d scalar; expected an array whose first axis counts samples")
    if not rowwise:
        max_rows = None
        hdr = NpyHeader((1, *hdr.shape), hdr.dtype, hdr.fortran_order)  # read as one row, below
    start = fh.tell()
    n = hdr.shape[0]
    if n == 0:
        raise DataError(f"{what} holds zero samples (shape {hdr.shape})")
    if hdr.row_bytes == 0:
        raise DataError(f"{what} holds no values per sample (shape {hdr.shape})")
    total = n * hdr.row_bytes
    if total > size - start:
        raise DataError(f"{what} declares shape {hdr.shape} of {hdr.dtype} ({total:,} bytes) but holds "
                        f"{max(size - start, 0):,} bytes of data")
    rows = n if max_rows is None else min(n, max_rows)
    if hdr.fortran_order and len(hdr.shape) > 1 and rows < n:
        rows = n  # column-major data cannot be read row by row: read it whole (still under the cap)
    nbytes = rows * hdr.row_bytes
    budget.take(nbytes, f"reading {rows} sample(s) of {what}")
    buf = np.empty(nbytes, dtype=np.uint8)
    view = memoryview(buf)
    pos = 0
    while pos < nbytes:
        got = fh.readinto(view[pos:pos + _CHUNK])
        if not got:
            raise DataError(f"{what} is truncated: {pos:,} of {nbytes:,} bytes")
        pos += got
    if hdr.fortran_order and len(hdr.shape) > 1:
        arr = buf.view(hdr.dtype).reshape(hdr.shape[::-1]).transpose()
        arr = np.ascontiguousarray(arr[:max_rows] if max_rows is not None else arr)
    else:
        arr = buf.view(hdr.dtype).reshape((rows, *hdr.shape[1:]))
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not rowwise:
        arr, hdr = arr[0], NpyHeader(hdr.shape[1:], hdr.dtype, hdr.fortran_order)
    return arr, hdr


# --------------------------------------------------------------------------- against the model


@dataclass(frozen=True)
class InputSpec:
    """A model input as the data must fit it: name, numpy dtype, dims (None: symbolic or unknown)."""

    name: str
    dtype: np.dtype | None
    dims: tuple[int | None, ...] | None  # None: the model declares no shape
    #: The names of symbolic dimensions ('' where unnamed or fixed), None without a shape.
    params: tuple[str, ...] | None = None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The inputs a data file must feed: graph inputs that are not initializers."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)) if tt.elem_type else None
        except (KeyError, TypeError, ValueError):
            dtype = None
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                     for d in tt.shape.dim) if tt.HasField("shape") else None
        params = tuple(d.dim_param for d in tt.shape.dim) if tt.HasField("shape") else None
        specs.append(InputSpec(inp.name, dtype, dims, params))
    return specs


def fit_to_model(data: dict[str, np.ndarray], specs: list[InputSpec], *, notice: Notice | None = None
                 ) -> dict[str, np.ndarray]:
    """Check ``data`` against the model's inputs and cast what can be cast exactly enough.

    Floats of another width (float64 saved by default from numpy) become the input's float type,
    integers become floats or narrower integers when every value fits; each cast is reported
    through ``notice``. Rank and fixed feature sizes must match, float inputs must be finite.

    Raises:
        DataError: an input's data cannot feed it (rank, feature size, dtype, NaN/inf), or
            ``labels`` are not one non-negative integer per sample.
    """
    out = dict(data)
    notes: list[str] = []
    for spec in specs:
        if spec.name in out:
            out[spec.name] = _fit_input(out[spec.name], spec, notes)
    labels = out.get("labels")
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"'labels' must be one integer per sample, found shape {labels.shape} of {labels.dtype}")
        if labels.size and int(labels.min()) < 0:
            raise DataError(f"'labels' must be class numbers >= 0, found {int(labels.min())}")
    for note in notes:  # only once the data is known to be usable: an error stays one line
        if notice is not None:
            notice(note)
    return out


def _fit_input(arr: np.ndarray, spec: InputSpec, notes: list[str]) -> np.ndarray:
    name = spec.name
    if spec.dims is not None:
        shown = "[" + ", ".join("?" if d is None else str(d) for d in spec.dims) + "]"
        if arr.ndim != len(spec.dims):
            raise DataError(f"input {name!r} has rank {len(spec.dims)} in the model (shape {shown}), "
                            f"the data's array has shape {arr.shape}")
        for axis, (want, got) in enumerate(zip(spec.dims, arr.shape)):
            if axis and want is not None and want != got:
                raise DataError(f"input {name!r} has size {want} on axis {axis} in the model (shape {shown}), "
                                f"the data's array has shape {arr.shape}")
    _check_finite(arr, name, "")
    want = spec.dtype
    if want is not None and arr.dtype != want:
        arr, note = _cast(arr, want, name)
        _check_finite(arr, name, f" once cast to the model's {want}")
        notes.append(note)
    return arr


def _check_finite(arr: np.ndarray, name: str, how: str) -> None:
    """Refuse NaN/inf inputs: they would surface much later as a 'broken' compressed model."""
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.argmax(bad.reshape(len(arr), -1).any(axis=1)))
        raise DataError(f"input {name!r} holds {int(bad.sum())} NaN or infinite value(s){how} (first in sample "
                        f"{first}); calibration and evaluation need finite inputs")


def _cast(arr: np.ndarray, want: np.dtype, name: str) -> tuple[np.ndarray, str]:
    got = arr.dtype
    ok = (got.kind == want.kind == "f") or (got.kind in "biu" and want.kind == "f")
    if got.kind in "biu" and want.kind in "iu":
        info = np.iinfo(want)
        ok = arr.size == 0 or (int(arr.min()) >= info.min and int(arr.max()) <= info.max)
        if not ok:
            raise DataError(f"input {name!r} is {want} in the model; the data's {got} values "
                            f"({int(arr.min())}..{int(arr.max())}) do not fit it")
    if not ok:
        raise DataError(f"input {name!r} is {want} in the model, the data's array is {got}")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported as inf, below
        cast = arr.astype(want)
    return cast, f"input {name!r}: the data's {got} values were cast to {want}, the model's input type"
