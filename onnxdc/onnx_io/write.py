"""Writing decoded models: inline (spliced, never built whole) or with their tensors in a data file.

With external data, the model and its data file must change as one: the data file gets a name
from its content, is complete before the model that names it is renamed into place, and the
previous model's data file goes only after that rename. See :func:`write_model`.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import onnx
from onnx import TensorProto

from onnxdc.errors import OutputError
from onnxdc.fileio.atomic import check_name_fits, commit, finish, temporary_beside, write_atomic
from onnxdc.fileio.oserrors import write_error
from onnxdc.format.registry import RawBuffer, as_bytes
from onnxdc.onnx_io.splice import splice_layout
from onnxdc.onnx_io.tensors import iter_tensors

#: Models whose tensor data exceed this are written with external data (protobuf caps a message at 2 GiB).
EXTERNAL_DATA_THRESHOLD = 1800 * 1024 * 1024
#: Tensors at least this large go to the external data file.
EXTERNAL_MIN_BYTES = 1024


#: Hex digits of the data's SHA-256 in an external data file's name (``OUT.<digest>.data``).
_DIGEST_CHARS = 16
#: A previous model at the output larger than this is not read to find its data file (models that
#: keep their tensors outside are small; a large one keeps them inline and has none).
_OLD_MODEL_MAX_BYTES = 64 << 20


def external_data_name(out: str | os.PathLike[str], digest: str) -> str:
    """The name :func:`write_model` gives the external data of ``out``: ``<name>.<digest>.data``.

    The name comes from the data's content, so a model and the data it was written with change
    together: the model's rename is the only commit point, a model on disk always refers to its
    own data, and the same container always decompresses to the same bytes.
    """
    return f"{Path(out).name}.{digest[:_DIGEST_CHARS]}.data"


def external_data_files(model_path: str | os.PathLike[str]) -> list[Path]:
    """The external data files a model file refers to that onnxdc wrote for it (beside it).

    That is ``<name>.<digest>.data`` as :func:`write_model` writes, and only plain regular files in
    the model's directory. ``<name>.data`` (what earlier versions wrote) is not counted: it is also
    the name onnx users give their own data files, which other models may share. A missing,
    unparsable or large file yields none.
    """
    path = Path(model_path)
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _OLD_MODEL_MAX_BYTES:
            return []
        model = onnx.ModelProto()
        model.ParseFromString(path.read_bytes())
    except Exception:  # noqa: BLE001 - not a model we wrote: nothing of ours to find
        return []
    ours = re.compile(re.escape(path.name) + rf"\.[0-9a-f]{{{_DIGEST_CHARS}}}\.data")
    found: list[Path] = []
    for ref in iter_tensors(model):
        location = {e.key: e.value for e in ref.proto.external_data}.get("location", "")
        if not ours.fullmatch(location):
            continue
        candidate = path.with_name(location)
        if candidate not in found and _is_regular(candidate):
            found.append(candidate)
    return found


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def write_model(model: onnx.ModelProto, path: str | os.PathLike[str], *, external_data: bool,
                tensors: Iterable[tuple[TensorProto, RawBuffer]] | None = None, overwrite: bool = True) -> None:
    """Write a model atomically; with ``external_data``, large tensors go to a data file beside it.

    ``tensors`` (proto, raw bytes) pairs fill the model's tensors as they come — lazily decoded,
    so only one needs to be in memory when writing external data; without it, the tensors already
    holding raw_data are the ones moved out. The data file gets a fresh name from its content
    (:func:`external_data_name`) and is complete before the model that refers to it is renamed
    into place, so the model and its data change as one: an interrupt, a full disk or a second
    writer leaves the old model with its old data or the new model with its new data, never a
    mix. The previous model's data file (if onnxdc wrote it) is removed after the commit.
    ``model`` is modified.

    Raises:
        OutputError: a file cannot be written (nothing half-written is left behind, and the
            previous model and its data are untouched).
    """
    if tensors is None:
        tensors = [(r.proto, r.proto.raw_data) for r in iter_tensors(model) if r.proto.HasField("raw_data")]
    target = Path(path)
    if not external_data:
        for proto, raw in tensors:
            proto.raw_data = as_bytes(raw)
        replace_model(target, [model.SerializeToString(deterministic=True)], overwrite=overwrite)
        return
    check_name_fits(target.with_name(external_data_name(target, "0" * _DIGEST_CHARS)))
    locations: list[onnx.StringStringEntryProto] = []  # filled in once the data's digest is known

    def chunks() -> Iterator[RawBuffer]:
        offset = 0
        for t, data in tensors:
            if len(data) < EXTERNAL_MIN_BYTES:
                t.raw_data = as_bytes(data)
                continue
            pad = (-offset) % 64  # aligned, as onnx's own writer can be asked to do
            if pad:
                yield b"\0" * pad
                offset += pad
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", ""), ("offset", str(offset)), ("length", str(len(data)))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
                if key == "location":
                    locations.append(entry)
            yield data
            offset += len(data)

    created: list[tuple[Path, int, int]] = []  # the data file this call makes: path, device, inode
    try:
        data_path = _write_data_file(target, chunks(), overwrite=overwrite, created=created)
        for entry in locations:
            entry.value = data_path.name
        replace_model(target, [model.SerializeToString(deterministic=True)], overwrite=overwrite)
    except BaseException:  # an error or an interrupt: the old model keeps its old data
        _remove_unused(created, target)
        raise


def replace_model(target: Path, data: Iterable[RawBuffer], *, overwrite: bool) -> None:
    """Commit the model bytes ``data`` at ``target``, then remove the data file onnxdc wrote for
    the model it replaced (read before the commit; kept if the new model refers to it too)."""
    previous = external_data_files(target)
    write_atomic(target, data, overwrite=overwrite)
    still_used = set(external_data_files(target))
    for old in previous:
        if old not in still_used:
            old.unlink(missing_ok=True)


def _write_data_file(model_path: Path, chunks: Iterable[RawBuffer], *, overwrite: bool,
                     created: list[tuple[Path, int, int]]) -> Path:
    """Write ``chunks`` to the content-named data file of ``model_path`` and return its path.

    A file already there with the same content (the same container decompressed again) is kept.
    The new file's identity is appended to ``created`` before it is committed, so that an
    interrupt at any point after can tell the file is this call's to remove.
    """
    digest = hashlib.sha256()
    size = 0
    with temporary_beside(model_path.with_name(model_path.name + ".data")) as (fh, tmp):
        try:
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                size += memoryview(chunk).nbytes
            finish(fh, tmp)
            target = model_path.with_name(external_data_name(model_path, digest.hexdigest()))
            if _holds(target, size, digest.hexdigest()):
                return target
            st = os.fstat(fh.fileno())
            created.append((target, st.st_dev, st.st_ino))
            try:
                commit(tmp, target, overwrite=overwrite)
            except OutputError:
                if not _holds(target, size, digest.hexdigest()):  # another writer of the same data won
                    raise
            return target
        except OSError as exc:
            raise write_error(exc, model_path.with_name(model_path.name + ".data")) from None


def _remove_unused(created: list[tuple[Path, int, int]], model_path: Path) -> None:
    """Remove the data file this write made (still the same inode), unless the model now refers to it."""
    in_use = set(external_data_files(model_path))
    for path, dev, ino in created:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (dev, ino) and path not in in_use:
            path.unlink(missing_ok=True)


def _holds(path: Path, size: int, hexdigest: str) -> bool:
    """Whether ``path`` is a regular file of exactly these ``size`` bytes with this SHA-256."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode) or os.path.getsize(path) != size:
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 24):
                digest.update(block)
    except OSError:
        return False
    return digest.hexdigest() == hexdigest


def write_model_inline(model: onnx.ModelProto, path: str | os.PathLike[str],
                       tensors: Sequence[tuple[TensorProto, int]],
                       data: Callable[[list[int]], Iterable[RawBuffer]], *, overwrite: bool = True) -> None:
    """Write a model atomically with every tensor of ``tensors`` (proto, byte length) inline.

    ``data(order)`` yields the raw bytes of the tensors at those indices of ``tensors``, in that
    order: the order their data sit in the file, so each is written as it comes (see
    :mod:`onnxdc.onnx_io.splice`) and the filled model is never built in memory. The bytes equal
    ``SerializeToString(deterministic=True)`` of the filled model. ``model`` is modified.

    Raises:
        OutputError: the file cannot be written (nothing half-written is left behind).
    """
    pieces = splice_layout(model, tensors)
    if pieces is None:  # fill the model and serialize it whole
        protos = [proto for proto, _ in tensors]
        write_model(model, path, external_data=False, tensors=zip(protos, data(list(range(len(tensors))))),
                    overwrite=overwrite)
        return
    filled = iter(data([p for p in pieces if isinstance(p, int)]))
    replace_model(Path(path), (p if isinstance(p, bytes) else next(filled) for p in pieces), overwrite=overwrite)
