"""Hostile 4.0 containers: one test per defect the 4.0 fuzzer (``fuzz/sweep4.py``) found, and a
small seeded sweep of its mutations (``fuzz/mutate4.py``), where only a ContainerError or a decoded
model may come out."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import assert_error, run

import onnxdc
from onnxdc.errors import ContainerError
from onnxdc.format import binary
from onnxdc.format import container as container_mod
from onnxdc.format.container import read_container
from onnxdc.onnx_io.tensors import skeleton_tensors

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("onnxdc_fuzz_mutate4", ROOT / "fuzz" / "mutate4.py")
m4 = sys.modules.setdefault("onnxdc_fuzz_mutate4", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(m4)  # type: ignore[union-attr]

FIXTURES = ROOT / "tests" / "fixtures"
SHARED = m4.unpack((FIXTURES / "v4_0_shared.onnxdc").read_bytes())
NAMES = m4.unpack((FIXTURES / "v4_0_names.onnxdc").read_bytes())
NOT_UTF8 = b"\xff" * 9
MARKER = "\u2603" * 3  # nine UTF-8 bytes, replaced by NOT_UTF8 in the serialized skeleton
SHARED_MODEL = onnxdc.decompress(SHARED.data)


def _not_utf8(u: m4.Unpacked, edit: Callable[[onnx.ModelProto], None], *, marked: bool = False) -> bytes:
    """``u`` with a skeleton string set to MARKER by ``edit`` made invalid UTF-8."""
    m = onnx.ModelProto()
    m.ParseFromString(u.marked if marked else u.model)
    edit(m)
    return m4.with_skeleton(u, m.SerializeToString().replace(MARKER.encode(), NOT_UTF8), marked=marked)


# --------------------------------------------------------------------------- strings that are not UTF-8


def test_a_stored_tensor_name_not_utf8_is_refused_at_open() -> None:
    """Protobuf gives such a name as bytes, which the 1.0 checks refused as "name and path must be
    strings": the skeleton reader now says what is wrong."""
    def edit(m: onnx.ModelProto) -> None:
        m.graph.initializer[0].name = MARKER

    with pytest.raises(ContainerError, match="slot 0 has a name that is not valid UTF-8") as info:
        read_container(_not_utf8(SHARED, edit))
    assert info.value.code == "header-utf8"


@pytest.mark.parametrize("field", ["name", "input", "output", "op_type"])
def test_marked_names_not_utf8_are_one_error(field: str, tmp_path: Path) -> None:
    """Found by the 4.0 fuzzer: restoring marked names met a ``bytes`` name (protobuf's form of a
    string that is not UTF-8) and raised TypeError or AttributeError, a traceback from the CLI."""
    def edit(m: onnx.ModelProto) -> None:
        node = m.graph.node[1]
        if field in ("name", "op_type"):
            setattr(node, field, MARKER)
        else:
            getattr(node, field)[0] = MARKER

    data = _not_utf8(NAMES, edit, marked=True)
    with pytest.raises(ContainerError, match="not valid UTF-8") as info:
        onnxdc.decompress(data)
    assert info.value.code == "header-utf8"
    path = tmp_path / "bad.onnxdc"
    path.write_bytes(data)
    assert_error(run("decompress", path, "-o", tmp_path / "out.onnx"), 1, "not valid UTF-8")


# --------------------------------------------------------------------------- the skeleton's size at open


def _padded(u: m4.Unpacked, n: int) -> bytes:
    """``u``'s skeleton followed by ``n`` empty initializers (2 bytes each, which zstd stores in a few)."""
    return u.model + m4._field(7, m4._field(5, b"") * n)


def test_a_skeleton_far_larger_than_its_stored_bytes_is_refused_before_decoding() -> None:
    """Found by the 4.0 fuzzer: the open's ceiling was 256 MiB for any file, so a 2 KB file whose
    skeleton held millions of empty tensors took gigabytes to open. Now 1 MiB plus 100 times the
    skeleton's stored bytes (real skeletons store 3 to 30 times smaller)."""
    data = m4.with_skeleton(SHARED, _padded(SHARED, 1 << 20))  # 2 MiB in some 500 bytes
    assert len(data) < 3000
    t = time.perf_counter()
    with pytest.raises(ContainerError, match=r"the skeleton declares \d+ bytes, over the limit \(\d+: 1 MiB and 100 "
                                             r"times its \d+ stored bytes\)") as info:
        read_container(data)
    assert info.value.code == "limits" and time.perf_counter() - t < 1


def test_the_skeleton_ceiling_is_free_bytes_plus_ratio_times_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    data = m4.with_skeleton(SHARED, _padded(SHARED, 1000))
    c = read_container(data)
    sk = c.header.streams[c.header.skeleton]
    monkeypatch.setattr(container_mod, "SKELETON_FREE_BYTES", sk.count - container_mod.SKELETON_RATIO * sk.length)
    assert onnxdc.decompress(data).graph.initializer[-1].name == ""
    monkeypatch.setattr(container_mod, "SKELETON_FREE_BYTES", container_mod.SKELETON_FREE_BYTES - 1)
    with pytest.raises(ContainerError, match="the skeleton declares"):
        read_container(data)


def test_the_writer_refuses_a_skeleton_no_reader_opens() -> None:
    """Tensors left in the skeleton (``min_tensor_bytes``) that zstd codes too well: 4 MiB of zeros."""
    from onnx import TensorProto, helper

    zeros = helper.make_tensor("z", TensorProto.FLOAT, [1 << 20], np.zeros(1 << 20, np.float32).tobytes(), raw=True)
    graph = helper.make_graph([helper.make_node("Identity", ["z"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20])], [zeros])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(ContainerError, match="over what a 4.0 reader opens"):
        onnxdc.compress(model, config=onnxdc.CompressConfig(min_tensor_bytes=1 << 30))
    assert onnxdc.decompress(onnxdc.compress(model).data).graph.initializer[0].raw_data == zeros.raw_data


# --------------------------------------------------------------------------- facts for the header's slots only


def test_the_skeleton_reader_reads_only_the_slots_it_is_given() -> None:
    """Found by the 4.0 fuzzer: the reader built facts for every tensor of the skeleton (a million
    empty initializers: seconds and hundreds of MB) though the header names a few; a tensor no
    slot names is not even looked at (here a name that is not UTF-8)."""
    m = onnx.ModelProto()
    m.ParseFromString(SHARED.model)
    m.graph.initializer[5].name = MARKER
    raw = m.SerializeToString().replace(MARKER.encode(), NOT_UTF8)
    facts = skeleton_tensors(raw, frozenset({0, 2}))
    assert sorted(facts) == [0, 2] and facts[2][1] == "fc2"
    assert skeleton_tensors(raw, frozenset()) == {}
    seen = []

    def reader(data: bytes, slots: frozenset[int]) -> binary.SkeletonTensors:
        seen.append(slots)
        return skeleton_tensors(data, slots)

    read_container(SHARED.data, skeleton_tensors=reader)
    assert seen == [frozenset(t["slot"] for t in SHARED.obj["tensors"])]


# --------------------------------------------------------------------------- dims


def _parsed_with(shape: tuple[int, ...]) -> tuple[binary.Parsed, dict[int, tuple[str, str, int, tuple[int, ...]]]]:
    parsed = binary.decode(SHARED.header)
    facts = skeleton_tensors(SHARED.model, frozenset(t[0] for t in parsed.tensors))
    slot = parsed.tensors[0][0]
    path, name, dtype, _ = facts[slot]
    facts[slot] = (path, name, dtype, shape)
    return parsed, facts


@pytest.mark.parametrize("shape, message", [
    ((1 << 62,) * 100_000, "has 100000 dims, more than 64"),
    ((1,) * 65, "has 65 dims, more than 64"),
    ((1 << 62, 1 << 62), "2\\*\\*124 elements or more, more than 2\\*\\*63"),
    ((4, -1), "has a negative dim"),
])
def test_a_shape_is_refused_before_its_product(shape: tuple[int, ...], message: str) -> None:
    """Found by the 4.0 fuzzer: ``resolve`` took the product of a skeleton's 60,000 dims of 2**62
    (11 s) before the 1.0 checks refused the shape."""
    parsed, facts = _parsed_with(shape)
    t = time.perf_counter()
    with pytest.raises(ContainerError, match=message):
        binary.resolve(parsed, facts, {})
    assert time.perf_counter() - t < 0.5


def test_a_long_name_from_the_skeleton_makes_no_long_error() -> None:
    """Found by the 4.0 fuzzer: a skeleton tensor named with a million characters came back whole
    in the error line (a 4.0 name comes from the skeleton, which zstd stores in a few bytes)."""
    m = onnx.ModelProto()
    m.ParseFromString(SHARED.model)
    m.graph.initializer[0].name = "x" * 1_000_000
    m.graph.initializer[0].data_type = 0
    with pytest.raises(ContainerError, match=r"^tensor 'xxx.*\.\.\. \(1000043 characters\)$") as info:
        read_container(m4.with_skeleton(SHARED, m.SerializeToString()))
    assert len(str(info.value)) < 600


# --------------------------------------------------------------------------- metadata


def _with_metadata(text: bytes) -> bytes:
    import zlib

    import zstandard

    from onnxdc.coders.dictionaries import dictionary

    frame = zstandard.ZstdCompressor(level=1, dict_data=dictionary("header-3"), write_content_size=True,
                                     write_dict_id=False).compress(text)
    obj = dict(SHARED.obj, payload_crc32=zlib.crc32(SHARED.payload))
    header = binary.encode(obj, frame)
    return container_mod.prefix4(4, 0, header) + header + SHARED.payload


def test_metadata_over_1_mib_is_refused_before_it_is_parsed() -> None:
    """Found by the 4.0 fuzzer: 16 MiB of metadata JSON within the header's caps (3.3 million
    two-character strings) stores in 3 KB and took 500 MB and 2 s to parse. A user's metadata is a
    few entries: 1 MiB is the limit now (the writer refuses more)."""
    data = _with_metadata(b'{"a":[' + b",".join([b'"ab"'] * 3_300_000) + b"]}")
    assert len(data) < 4000
    t = time.perf_counter()
    with pytest.raises(ContainerError, match=r"header metadata declares 16500007 bytes, over the limit \(1 MiB\)") as info:
        read_container(data)
    assert info.value.code == "limits" and time.perf_counter() - t < 0.5
    assert read_container(_with_metadata(b'{"a":"' + b"x" * ((1 << 20) - 8) + b'"}')).header.metadata["a"][:1] == "x"
    with pytest.raises(ContainerError, match="metadata"):
        onnxdc.compress(SHARED_MODEL, config=onnxdc.CompressConfig(metadata={"a": "x" * (1 << 20)}))


# --------------------------------------------------------------------------- a seeded sweep


@pytest.mark.parametrize("kind", sorted(m4.KINDS))
def test_mutants_decode_or_raise_the_container_error(kind: str) -> None:
    """A few of ``fuzz/sweep4.py``'s mutants of each kind (it runs thousands): a decoded model or
    one ContainerError of one line, nothing else."""
    rng = np.random.default_rng(4)
    for k in range(12):
        u = (SHARED, NAMES)[k % 2]
        mutant = m4.mutant(kind, u, rng)
        try:
            onnxdc.decompress(mutant, max_output_bytes=1 << 26)
        except ContainerError as exc:
            assert str(exc) and "\n" not in str(exc), (kind, k, exc)
