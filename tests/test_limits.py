"""Bounded work on hostile input: every limit the reader enforces, each hit by a container built here.

Each class of hostile input is refused with one line on stderr and exit 1 (the CLI through
``CliRunner``), writes nothing, and stays under a peak allocation the test asserts (tracemalloc
sees Python objects and numpy's buffers alike).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import signal
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from cli_helpers import assert_error as assert_one_line_error
from cli_helpers import run
from click.testing import Result
from onnx import TensorProto, helper, numpy_helper

import onnxdc
import onnxdc.pipeline.settings
from onnxdc.coders import coder_from_spec, get_coder
from onnxdc.coders.base import write_varint
from onnxdc.coders.chain import MAX_CHAIN_STAGES, ChainCoder, intermediate_limit
from onnxdc.errors import CoderError, ConfigError, ContainerError
from onnxdc.format import container as container_mod
from onnxdc.format.container import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_MAX_RATIO, read_container
from onnxdc.format.header import MAX_HEADER_CONTAINERS, MAX_HEADER_DEPTH, MAX_HEADER_VALUES
from onnxdc.pipeline.paths import decompress_file

ROOT = Path(__file__).parent.parent
_spec = importlib.util.spec_from_file_location("onnxdc_fuzz_mutate", ROOT / "fuzz" / "mutate.py")
mutate = sys.modules.setdefault("onnxdc_fuzz_mutate", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(mutate)  # type: ignore[union-attr]


def tiny_model(name: str = "w", shape: tuple[int, int] = (32, 64), zeros: bool = False) -> onnx.ModelProto:
    """x -> Gemm(w, b) -> Gemm(w2): a few stored tensors (all zeros with ``zeros``)."""
    rng = np.random.default_rng(0)
    w, b, w2 = (np.zeros(s, np.float32) if zeros else rng.standard_normal(s).astype(np.float32)
                for s in (shape, shape[0], (8, shape[0])))
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", name, "b"], ["y"], transB=1),
         helper.make_node("Gemm", ["y", "w2"], ["z"], transB=1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shape[1]])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(w, name), numpy_helper.from_array(b, "b"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


SHARING = onnxdc.CompressConfig(sharing=onnxdc.pipeline.settings.SharingConfig(sparsity=0.5, bits=4, min_elements=16))
LOSSLESS = onnxdc.compress(tiny_model()).data
SHARED = onnxdc.compress(tiny_model(), config=SHARING).data


def edited(data: bytes, edit: Callable[[dict[str, Any], list[bytes]], object]) -> bytes:
    """``data`` with its header (and streams) changed by ``edit(obj, chunks)``, every checksum fixed."""
    obj, chunks = mutate.unpack(data)
    edit(obj, chunks)
    return mutate.pack(obj, chunks)


def with_metadata_text(data: bytes, metadata: str) -> bytes:
    """``data`` whose header's metadata is the JSON text ``metadata`` (too big to build as objects)."""
    obj, chunks = mutate.unpack(data)
    obj["metadata"] = "METADATA"
    text = json.dumps(obj, sort_keys=True, separators=(",", ":")).replace('"METADATA"', metadata).encode()
    stored = __import__("zstandard").ZstdCompressor(level=3, write_content_size=True).compress(text)
    return mutate._PREFIX.pack(container_mod.MAGIC, 1, 0, len(stored), zlib.crc32(stored)) + stored + b"".join(chunks)






def peak_of(fn: Callable[[], object]) -> int:
    """The peak traced allocation (bytes) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def cli_refuses(tmp_path: Path, data: bytes, command: str, *needles: str, peak_below: int = 64 << 20) -> str:
    """Write ``data`` to a file and assert ``command`` refuses it: one line, exit 1, nothing written,
    peak allocation under ``peak_below``."""
    path = tmp_path / "hostile.onnxdc"
    path.write_bytes(data)
    args = [command, path] + (["-o", tmp_path / "out.onnx"] if command == "decompress" else [])
    box: dict[str, Result] = {}
    peak = peak_of(lambda: box.setdefault("r", run(*args)))
    line = assert_one_line_error(box["r"], 1, *needles)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.onnxdc"]
    assert peak < peak_below, f"peak allocation {peak} bytes"
    return line


# --------------------------------------------------------------------------- chains


def test_chain_of_22_huffman_stages_is_refused_when_opened(tmp_path: Path) -> None:
    """The tester's 37 KB stream: a 22-stage chain now fails at the header, before any decoding."""
    def edit(obj: dict[str, Any], chunks: list[bytes]) -> None:
        s = obj["streams"][obj["tensors"][0]["streams"]["plane3"]]
        s["coder"] = {"id": "chain", "coders": [{"id": "huffman", "max_bits": 16, "block_size": 0}] * 22}
    line = cli_refuses(tmp_path, edited(LOSSLESS, edit), "decompress", "bad coder config",
                       f"chain has 22 stages, at most {MAX_CHAIN_STAGES} are allowed", peak_below=16 << 20)
    assert "stream 0" in line


def test_nested_chains_count_every_stage() -> None:
    inner = {"id": "chain", "coders": [{"id": "huffman"}, {"id": "zstd"}, {"id": "raw"}]}
    with pytest.raises(ConfigError, match=r"^chain has 5 stages counting nested chains, at most 4 are allowed$"):
        get_coder({"id": "chain", "coders": [inner, {"id": "huffman"}, {"id": "zstd"}]})
    assert ChainCoder([inner, {"id": "zstd"}]).depth == 4


def test_longest_chain_is_allowed_and_round_trips() -> None:
    """Four stages still code and decode; onnxdc itself writes two (compare-coders, --coder a+b)."""
    coder = coder_from_spec("raw:4+huffman+zstd+huffman")
    symbols = np.random.default_rng(1).integers(0, 16, 5000).astype(np.uint8)
    assert np.array_equal(coder.decode(coder.encode(symbols), count=symbols.size), symbols)
    from onnxdc.compare import SPECS
    assert max(getattr(coder_from_spec(s), "depth", 1) for s in SPECS) <= MAX_CHAIN_STAGES


def test_cli_refuses_a_five_stage_coder_as_bad_usage(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(tiny_model(), model)
    result = run("compress", model, "--bits", "4", "--coder", "huffman+zstd+huffman+zstd+raw", "-o", tmp_path / "o.onnxdc")
    assert_one_line_error(result, 2, "chain has 5 stages")
    assert not (tmp_path / "o.onnxdc").exists()


@pytest.mark.parametrize("over", [0, 1])
def test_intermediate_lengths_are_bounded_by_count_and_stream_size(over: int) -> None:
    """Each Huffman stage's own bound doubles the one before (2 * count + a header), so a chain of
    them could declare ever longer intermediate streams; every intermediate length is also capped at
    2 * count + stream size + 4 KiB, which binds from the third stage on."""
    count = 1200
    coder = ChainCoder([{"id": "huffman", "max_bits": 16}] * 4)
    stage = coder.stages[0]
    tail = bytes([0, 7])  # a one-symbol Huffman stream: it decodes to any count of 7s
    size = 3 * 2 + len(tail)  # three 2-byte varints
    limit = intermediate_limit(count, size)
    first = stage.max_encoded_size(count)
    second = stage.max_encoded_size(first)
    assert limit == 2 * count + size + 4096 and first < second < limit < stage.max_encoded_size(second)
    buf = write_varint(first) + write_varint(second) + write_varint(limit + over) + tail
    assert len(buf) == size
    box: dict[str, Exception] = {}

    def attempt() -> None:
        try:
            coder.decode(buf, count=count)
        except CoderError as exc:
            box["e"] = exc

    peak = peak_of(attempt)
    assert isinstance(box.get("e"), CoderError)
    if over:
        assert str(box["e"]) == (f"chain stage 'huffman' output of {limit + 1} bytes exceeds its bound {limit} "
                                 f"for {second} symbols")
    else:
        assert "exceeds its bound" not in str(box["e"])
    assert peak < 4 * (2 << 20) + 16 * limit, peak  # a few Huffman tables and a few times the limit


# --------------------------------------------------------------------------- header size


@pytest.mark.parametrize("item, needle", [
    ("{}", "JSON objects and arrays, more than the limit"),
    ("[]", "JSON objects and arrays, more than the limit"),
    ("0", "JSON values, more than the limit"),
])
def test_metadata_bombs_are_refused_before_parsing(tmp_path: Path, item: str, needle: str) -> None:
    """Millions of tiny JSON values in a header of a few KB: counted and refused, never built."""
    n = (MAX_HEADER_VALUES if item == "0" else MAX_HEADER_CONTAINERS) + 10
    data = with_metadata_text(LOSSLESS, '{"m":[' + ",".join([item] * n) + "]}")
    assert len(data) < 64 << 10
    for command in ("inspect", "decompress"):
        cli_refuses(tmp_path, data, command, needle, peak_below=48 << 20)


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    depth = MAX_HEADER_DEPTH + 1
    data = with_metadata_text(LOSSLESS, '{"m":' + "[" * depth + "]" * depth + "}")
    cli_refuses(tmp_path, data, "inspect", "header nests JSON", f"more than the limit ({MAX_HEADER_DEPTH})")


def test_metadata_just_under_the_caps_is_read() -> None:
    """Free-form metadata stays free-form below the caps."""
    data = with_metadata_text(LOSSLESS, '{"m":[' + ",".join(["{}"] * 20000) + "]," + '"d":' + "[" * 20 + "]" * 20 + "}")
    assert len(read_container(data).header.metadata["m"]) == 20000


def test_real_headers_are_far_below_the_caps() -> None:
    """A header onnxdc writes holds ~13 objects and ~43 values per tensor: the caps allow 75,000 tensors."""
    for data in (LOSSLESS, SHARED):
        header = read_container(data).header
        text = header.to_json_bytes().decode()
        per_tensor_containers = (text.count("{") + text.count("[")) / len(header.tensors)
        per_tensor_values = (text.count("{") + text.count("[") + text.count(",")) / len(header.tensors)
        assert 75_000 * per_tensor_containers < MAX_HEADER_CONTAINERS
        assert 75_000 * per_tensor_values < MAX_HEADER_VALUES


def test_writer_refuses_a_header_no_reader_opens() -> None:
    config = onnxdc.CompressConfig(metadata={"m": [{}] * (MAX_HEADER_CONTAINERS + 1)})
    with pytest.raises(ContainerError, match="JSON objects and arrays, more than the limit"):
        onnxdc.compress(tiny_model(), config=config)
    deep: list[Any] = []  # 4.0's metadata object and 33 nested lists: 34 levels
    for _ in range(MAX_HEADER_DEPTH):
        deep = [deep]
    with pytest.raises(ContainerError, match=f"header nests JSON {MAX_HEADER_DEPTH + 2} levels deep"):
        onnxdc.compress(tiny_model(), config=onnxdc.CompressConfig(metadata={"m": deep}))


# --------------------------------------------------------------------------- output ceilings


def _two_gib_tensor(obj: dict[str, Any], chunks: list[bytes]) -> None:
    """Tensor 'w' declares 2 GiB of float32 zeros, its four byte planes one-symbol Huffman streams."""
    t = obj["tensors"][0]
    old = sorted(t["streams"].values())
    numel = 1 << 29
    t.update(shape=[numel], nbytes=4 * numel, params={"itemsize": 4, "raw_planes": [], "rotate": 0})
    t["streams"] = {f"plane{j}": old[0] + j for j in range(4)}
    # Replace the tensor's streams by four 2-byte streams (the streams after them keep their places).
    new_streams = [{"count": numel, "coder": {"id": "huffman", "max_bits": 15, "block_size": 0}}
                   for _ in range(4)]
    first, n_old = old[0], len(old)
    obj["streams"][first:first + n_old] = new_streams
    chunks[first:first + n_old] = [b"\x00\x00"] * 4
    shift = 4 - n_old
    obj["skeleton"] += shift if obj["skeleton"] > first else 0
    for other in obj["tensors"][1:]:
        other["streams"] = {r: i + shift if i > first else i for r, i in other["streams"].items()}


TWO_GIB = edited(LOSSLESS, _two_gib_tensor)


def test_a_few_hundred_bytes_declaring_2_gib_is_refused_before_writing(tmp_path: Path) -> None:
    assert len(TWO_GIB) < 2048
    read_container(TWO_GIB)  # a legal container: only the ceilings refuse it
    out = container_mod.output_size(read_container(TWO_GIB).header)
    assert out > 1 << 31
    cli_refuses(tmp_path, TWO_GIB, "decompress", f"container of {len(TWO_GIB)} bytes declares {out} bytes of output",
                f"over the limit of {DEFAULT_MAX_RATIO:g} times (--max-ratio", peak_below=16 << 20)
    # The library refuses it the same way, in memory and file to file.
    with pytest.raises(ContainerError, match="--max-ratio / max_ratio raises it"):
        onnxdc.decompress(TWO_GIB)
    (tmp_path / "hostile.onnxdc").write_bytes(TWO_GIB)
    with pytest.raises(ContainerError, match="max_ratio"):
        decompress_file(tmp_path / "hostile.onnxdc", tmp_path / "out.onnx")
    with pytest.raises(ContainerError, match="--max-output-bytes / max_output_bytes raises it"):
        onnxdc.decompress(TWO_GIB, max_ratio=1e12, max_output_bytes=1 << 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostile.onnxdc"]


def test_max_output_bytes_flag(tmp_path: Path) -> None:
    src = tmp_path / "c.onnxdc"
    src.write_bytes(LOSSLESS)
    out_size = container_mod.output_size(read_container(LOSSLESS).header)
    line = assert_one_line_error(run("decompress", src, "-o", tmp_path / "a.onnx", "--max-output-bytes", out_size - 1),
                                 1, f"declares {out_size} bytes of output, over the limit of {out_size - 1}",
                                 "--max-output-bytes")
    assert not (tmp_path / "a.onnx").exists(), line
    result = run("decompress", src, "-o", tmp_path / "b.onnx", "--max-output-bytes", out_size, "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b.onnx").exists()


def test_max_ratio_flag_and_defaults_never_refuse_constant_models(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MiB of zeros store in ~210 bytes (ratio ~5,000; 2 MiB, ~10,000, as 4.0 shrank the
    header): under the default ratio even without the 256 MiB ratio-free allowance, refused by
    --max-ratio 1000."""
    data = onnxdc.compress(tiny_model(shape=(256, 1024), zeros=True)).data
    monkeypatch.setattr(container_mod, "RATIO_FREE_BYTES", 0)
    src = tmp_path / "zeros.onnxdc"
    src.write_bytes(data)
    ratio = container_mod.output_size(read_container(data).header) / len(data)
    assert 1000 < ratio < DEFAULT_MAX_RATIO
    assert_one_line_error(run("decompress", src, "-o", tmp_path / "a.onnx", "--max-ratio", 1000), 1,
                          "times its size, over the limit of 1000 times", "--max-ratio")
    assert not (tmp_path / "a.onnx").exists()
    assert run("decompress", src, "-o", tmp_path / "b.onnx", "-q").exit_code == 0
    assert run("decompress", src, "-o", tmp_path / "c.onnx", "--max-ratio", 0).exit_code == 2  # click: usage


def test_library_limits_have_the_cli_defaults() -> None:
    import inspect

    for fn in (onnxdc.decompress, decompress_file, container_mod.check_output_size):
        params = inspect.signature(fn).parameters
        assert params["max_output_bytes"].default == DEFAULT_MAX_OUTPUT_BYTES == 1 << 40
        assert params["max_ratio"].default == DEFAULT_MAX_RATIO == 10_000
    with pytest.raises(ConfigError):
        onnxdc.decompress(LOSSLESS, max_ratio=-1)


# --------------------------------------------------------------------------- inputs that are not files


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging if a command blocks on a FIFO."""
    def expired(*_: Any) -> None:
        raise TimeoutError("the command blocked on its input")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _commands(special: Path, good_model: Path, good_container: Path, out: Path) -> list[tuple[list[Any], int, str]]:
    data = ROOT / "models" / "lenet300.test.npz"
    return [
        (["decompress", special, "-o", out], 1, "container"),
        (["inspect", special], 1, "container"),
        (["report", special], 1, "container"),
        (["compress", special, "--lossless", "-o", out], 1, "model"),
        (["compress", special, "--bits", "4", "-o", out], 1, "model"),
        (["compare-coders", special], 1, "model"),
        (["sensitivity", special], 1, "model"),
        (["eval", special, good_container, "--data", data], 1, "model"),
        (["eval", good_model, special, "--data", data], 1, "container"),
        (["eval", good_model, good_container, "--data", special], 1, "data file"),
        (["compress", good_model, "--bits", "4", "--recipe", special, "-o", out], 2, "recipe"),
        (["compress", good_model, "--bits", "4", "--calib", special, "-o", out], 1, "data file"),
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_input_is_refused_without_blocking(tmp_path: Path, alarm: None) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    model, cont = tmp_path / "m.onnx", tmp_path / "m.onnxdc"
    onnx.save(tiny_model(), model)
    cont.write_bytes(LOSSLESS)
    for args, code, what in _commands(fifo, model, cont, tmp_path / "out"):
        assert_one_line_error(run(*args), code, f"{what} {str(fifo)!r} is a FIFO, expected a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnxdc", "pipe"]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_input_is_refused_without_reading(tmp_path: Path, alarm: None) -> None:
    model, cont = tmp_path / "m.onnx", tmp_path / "m.onnxdc"
    onnx.save(tiny_model(), model)
    cont.write_bytes(LOSSLESS)
    for args, code, what in _commands(Path("/dev/zero"), model, cont, tmp_path / "out"):
        box: dict[str, Result] = {}
        peak = peak_of(lambda a=args, box=box: box.setdefault("r", run(*a)))
        assert_one_line_error(box["r"], code, f"{what} '/dev/zero' is a character device, expected a regular file")
        assert peak < 64 << 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnxdc"]


def test_regular_file_helpers_read_at_most_the_size(tmp_path: Path) -> None:
    from onnxdc.fileio.atomic import read_regular_file, regular_file_size

    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert regular_file_size(p, error=ContainerError, what="container") == 3
    assert read_regular_file(p, error=ContainerError, what="container") == b"abc"
    with pytest.raises(ContainerError, match=r"^no such file: "):
        read_regular_file(tmp_path / "nope", error=ContainerError, what="container")
    with pytest.raises(ContainerError, match=r"is a directory, expected a regular file$"):
        read_regular_file(tmp_path, error=ContainerError, what="container")


# --------------------------------------------------------------------------- terminal escapes


ESCAPES = ["\x1b[2J", "\x1b]0;owned\x07", "\x9b31m", "\u202e", "\r"]


def test_inspect_and_report_escape_control_characters(tmp_path: Path) -> None:
    name = "w" + "".join(ESCAPES)
    data = onnxdc.compress(tiny_model(name=name), config=SHARING).data

    def edit(obj: dict[str, Any], chunks: list[bytes]) -> None:
        obj["producer"] = "onnxdc\x1b[31m 9"
        obj["metadata"]["evil"] = "\x1b[5m"
        for t in obj["tensors"]:
            if t["encoding"] == "shared":
                t["params"]["op"] = "Gemm\x1b[8m"
    src = tmp_path / "c.onnxdc"
    src.write_bytes(edited(data, edit))
    for command in ("inspect", "report"):
        result = run(command, src, "--all")
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert not any(ch in out for ch in "\x1b\x07\x9b\u202e\r"), repr(out)
        assert "w\\x1b[2J" in out and "\\u202e" in out
        if command == "inspect":
            assert "onnxdc\\x1b[31m 9" in out and "\\u001b[5m" in out  # producer; metadata as JSON escapes
        assert "Gemm\\x1" in out  # the op column, clipped
        as_json = run(command, src, "--json")
        assert as_json.exit_code == 0 and "\x1b" not in as_json.stdout
        assert any(t["name"] == name for t in json.loads(as_json.stdout)["tensors"])


def test_printable_keeps_real_names() -> None:
    from onnxdc.report import printable

    for text in ["fc1.weight", "encoder/layer.0/attn[q]", "poids_é", "重み", "back\\slash", "a b"]:
        assert printable(text) == text
    assert printable("a\tb\x00\x7f") == "a\\x09b\\x00\\x7f"


# --------------------------------------------------------------------------- structure-aware fuzzing


def _limited(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


_FUZZ = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("mutate", {mutate!r})
mutate = sys.modules["mutate"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(mutate)
containers = mutate.sample_containers()
out = {{}}
for name, count in {counts!r}.items():
    o = mutate.run(containers[name], count=count, seed={seed})
    out[name] = [o.decoded, o.refused, o.peak_bytes]
print(json.dumps(out))
"""


def _fuzz_in_child(template: str, counts: dict[str, int], seed: int) -> dict[str, Any]:
    """Run a fuzz script (``template`` formatted with the mutator's path, ``counts`` and ``seed``)
    in a child under RLIMIT_AS of 1.5 GiB; its JSON result."""
    code = template.format(mutate=str(ROOT / "fuzz" / "mutate.py"), counts=counts, seed=seed)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limited(3 << 29), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("seed", [1])
def test_structure_aware_fuzz_smoke(seed: int) -> None:
    """A fixed number of header and stream mutants (fixed seed), CRCs fixed up so they reach the
    decoders: each decodes or raises ContainerError, and allocates a bounded amount (tracemalloc in
    the child; RLIMIT_AS of 1.5 GiB as the backstop)."""
    counts = {"lossless": 120, "shared": 90, "chain": 90}
    result = _fuzz_in_child(_FUZZ, counts, seed)
    for name, count in counts.items():
        decoded, refused, peak = result[name]
        assert decoded + refused == count
        assert refused > count // 2 and decoded > 0  # mutants reach both outcomes
        assert peak < 48 << 20, (name, peak)


_FUZZ3 = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("mutate", {mutate!r})
mutate = sys.modules["mutate"] = importlib.util.module_from_spec(spec); spec.loader.exec_module(mutate)
containers = mutate.sample_containers(derived_names=True, major=3)
out = {{}}
for name, count in {counts!r}.items():
    o = mutate.run(containers[name], count=count, seed={seed}, major=3)
    out[name] = [o.decoded, o.refused, o.peak_bytes, dict(o.codes)]
print(json.dumps(out))
"""


@pytest.mark.parametrize("seed", [1])
def test_structure_aware_fuzz_smoke_3_0(seed: int) -> None:
    """The same for 3.0's own paths (``fuzz/mutate.py --major 3``): the compact header and the
    skeleton's marks mutated, the skeleton recoded and ``c``/``s`` fixed up, on a tiny model with
    derived names; the mutants reach the names' restore and the decoders behind it."""
    counts = {"lossless": 100, "shared": 100, "chain": 80}
    result = _fuzz_in_child(_FUZZ3, counts, seed)
    codes: dict[str, int] = {}
    for name, count in counts.items():
        decoded, refused, peak, by_code = result[name]
        assert decoded + refused == count
        assert refused > count // 2 and decoded > 0
        assert peak < 48 << 20, (name, peak)
        for k, v in by_code.items():
            codes[k] = codes.get(k, 0) + v
    assert {"skeleton-crc", "schema", "stream-decode"} <= codes.keys(), codes  # restore, header, decoders
