"""The command line through click's CliRunner: exit codes, one-line errors, reports, safe outputs.

Exit codes: 0 success, 1 bad data (OnnxdcError), 2 bad usage or impossible settings, 3 an accuracy
drop over ``eval --max-drop``. click >= 8.2 keeps stderr apart from stdout: errors are checked on
``result.stderr``, reports on ``result.stdout``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import FullDisk, assert_error, run
from click.testing import CliRunner, Result

from onnxdc import __version__, read_container
from onnxdc.cli.main import main

MODELS = Path(__file__).parent.parent / "models"
LENET = MODELS / "lenet300.onnx"
TEST_DATA = MODELS / "lenet300.test.npz"
REPORT_LINES = ("original weights", "after pruning (values + positions)", "after weight sharing (fixed width)",
                "after entropy coding", "+ skeleton (graph, small tensors)", "+ container overhead (header)",
                "= file")






def assert_usage_error(result: Result, *fragments: str) -> None:
    """click's usage error: exit 2 and the complaint on stderr."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a copy of lenet300 and its containers, lossless and shared."""
    d = tmp_path_factory.mktemp("cli")
    shutil.copy(LENET, d / "lenet300.onnx")
    for name, opts in [("lossless", ["--lossless"]), ("shared", ["--sparsity", "0.9", "--bits", "5"]),
                       ("pruned", ["--sparsity", "0.99", "--bits", "2"])]:
        result = run("compress", d / "lenet300.onnx", "-o", d / f"{name}.onnxdc", *opts)
        assert result.exit_code == 0, result.output
    return d


# --------------------------------------------------------------------------- success paths


def small_mlp(path: Path) -> Path:
    """A two-layer perceptron (64 -> 48 -> 10, tensors named like lenet300's) the automatic mode
    measures in a second or two; lenet300's 784x300 layer takes it twenty."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)
             for name, shape in (("fc1.weight", (48, 64)), ("fc1.bias", (48,)), ("fc2.weight", (10, 48)),
                                 ("fc2.bias", (10,)))]
    nodes = [helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("opts", [[], ["--lossless"], ["--sparsity", "0.9", "--bits", "5"]],
                         ids=["default", "lossless", "shared"])
def test_compress(tmp_path: Path, opts: list[str]) -> None:
    out = tmp_path / "out.onnxdc"
    model = LENET if opts else small_mlp(tmp_path / "mlp.onnx")  # default: the automatic mode
    result = run("compress", model, "-o", out, *opts)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    lines = result.stdout.splitlines()
    assert f"wrote {out}" in lines
    for label in REPORT_LINES:
        assert any(line.startswith(label) for line in lines), label
    assert any(line.startswith("fc1.weight") for line in lines)
    if opts:
        assert result.stderr == ""
    else:  # automatic mode without --calib: it says the settings come from synthetic inputs
        assert result.stderr.startswith("onnxdc: warning: no --calib data")
        assert "onnxdc: automatic mode: fitting" in result.stderr
        assert (tmp_path / "out.onnxdc.recipe.toml").is_file()  # fc1.weight was weight-shared
    if "--sparsity" in opts:
        row = next(line for line in lines if line.startswith("fc1.weight"))
        assert " shared " in row and "90.0%" in row
        assert os.path.getsize(out) < os.path.getsize(LENET) / 20
    elif "--lossless" in opts:
        assert " planes " in next(line for line in lines if line.startswith("fc1.weight"))


def test_compress_quiet_and_json(tmp_path: Path) -> None:
    quiet = run("compress", LENET, "-o", tmp_path / "q.onnxdc", "--lossless", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    result = run("compress", LENET, "-o", tmp_path / "j.onnxdc", "--sparsity", "0.5", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["output"] == str(tmp_path / "j.onnxdc")
    assert doc["file_bytes"] == os.path.getsize(tmp_path / "j.onnxdc")


@pytest.mark.parametrize("name", ["lossless", "shared"])
def test_decompress(work: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "model.onnx"
    result = run("decompress", work / f"{name}.onnxdc", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"wrote {out}"
    assert result.stderr == ""  # in particular, no checker warning
    onnx.checker.check_model(str(out), full_check=True)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with np.load(TEST_DATA) as data:
        x, labels = data["input"], data["labels"]
    logits = sess.run(None, {"input": x})[0]
    assert logits.shape == (len(x), 10)
    accuracy = float(np.mean(logits.argmax(1) == labels))
    if name == "lossless":
        original = onnx.load(str(LENET))
        restored = onnx.load(str(out))
        assert [t.SerializeToString() for t in restored.graph.initializer] == [
            onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t), t.name).SerializeToString()
            for t in original.graph.initializer]
        assert accuracy == pytest.approx(0.9725)
    else:
        assert accuracy > 0.85


def test_decompress_default_output_name(work: Path, tmp_path: Path) -> None:
    shutil.copy(work / "shared.onnxdc", tmp_path / "m.onnxdc")
    result = run("decompress", tmp_path / "m.onnxdc", "-q")
    assert (result.exit_code, result.stdout) == (0, ""), result.output
    assert (tmp_path / "m.decompressed.onnx").is_file()


@pytest.mark.parametrize("name", ["lossless", "shared"])
def test_report(work: Path, name: str) -> None:
    path = work / f"{name}.onnxdc"
    text = run("report", path)
    assert text.exit_code == 0, text.output
    assert text.stderr == ""
    for label in REPORT_LINES:
        assert label in text.stdout
    assert "bits per weight, all " in text.stdout and "H0 b/w" in text.stdout
    result = run("report", path, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    size = os.path.getsize(path)
    parts = doc["tensor_stored_bytes"] + doc["skeleton_stored_bytes"] + doc["overhead_bytes"]
    assert parts == doc["file_bytes"] == size
    assert sum(t["stored_bytes"] for t in doc["tensors"]) == doc["tensor_stored_bytes"]
    assert sum(t["stored_bytes"] for t in doc["analysis"]) == doc["tensor_stored_bytes"]
    # Every weight but fc3.bias (10 floats, small enough to stay in the skeleton) is a stored tensor.
    assert sum(t["original_bytes"] for t in doc["tensors"]) == doc["tensor_original_bytes"] == (266_610 - 10) * 4
    assert doc["bpw"] == pytest.approx(8 * doc["tensor_stored_bytes"] / (266_610 - 10), abs=1e-6)


@pytest.mark.parametrize("name", ["lossless", "shared"])
def test_inspect_shows_the_structure(work: Path, name: str) -> None:
    """inspect is the header's structure, not the report's analysis: no stage table, one entry per
    tensor with its streams, whose bytes with the header's and the skeleton's make up the file."""
    path = work / f"{name}.onnxdc"
    text = run("inspect", path)
    assert text.exit_code == 0, text.output
    assert text.stdout.startswith("onnxdc container 4.0, written by onnxdc ")
    assert "settings: " not in text.stdout and "streams (role coder symbols bytes)" in text.stdout  # 4.0: no run record
    assert not any(label in text.stdout for label in REPORT_LINES[1:4])
    doc = json.loads(run("inspect", path, "--json").stdout)
    assert doc["format_version"] == "4.0" and doc["producer"] == f"onnxdc {__version__}"
    stored = sum(s["bytes"] for t in doc["tensors"] for s in t["streams"])
    assert stored + doc["skeleton"]["bytes"] + doc["header_bytes"] == doc["file_bytes"] == os.path.getsize(path)
    assert sum(len(t["streams"]) for t in doc["tensors"]) + 1 == doc["streams"]


def test_inspect_all_lists_every_tensor(work: Path) -> None:
    result = run("inspect", work / "shared.onnxdc", "--all")
    assert result.exit_code == 0
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight"):
        assert any(line.startswith(name) for line in result.stdout.splitlines()), name


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.stdout


# --------------------------------------------------------------------------- eval


def test_eval_lossless_reports_top1(work: Path) -> None:
    result = run("eval", work / "lenet300.onnx", work / "lossless.onnxdc", "--data", TEST_DATA, "--max-drop", "0")
    assert result.exit_code == 0, result.output
    assert "samples: 400" in result.stdout
    assert "top-1: reference 97.25%  candidate 97.25%  (drop +0.00 points)" in result.stdout
    assert _row(result.stdout, "logits")[-1] == "100.00%"  # the agreement column


def _row(table: str, output: str) -> list[str]:
    """The cells of ``output``'s row in eval's per-output table."""
    return next(line.split() for line in table.splitlines() if line.split()[:1] == [output])


def test_eval_json(work: Path) -> None:
    result = run("eval", LENET, work / "shared.onnxdc", "--data", TEST_DATA, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["samples"] == 400 and doc["reference_top1"] == pytest.approx(0.9725)
    assert doc["top1_drop_points"] == pytest.approx(100 * (doc["reference_top1"] - doc["candidate_top1"]))


def test_eval_onnx_against_itself_without_labels(tmp_path: Path) -> None:
    with np.load(TEST_DATA) as data:
        np.savez(tmp_path / "unlabelled.npz", input=data["input"][:50])
    result = run("eval", LENET, LENET, "--data", tmp_path / "unlabelled.npz", "--max-drop", "0")
    assert result.exit_code == 0, result.output
    assert "samples: 50" in result.stdout and "top-1: reference" not in result.stdout
    assert _row(result.stdout, "logits")[-1] == "100.00%"  # the agreement column


def test_eval_refuses_pickled_data(work: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "evil.npz", input=np.array([{"x": 1}], dtype=object))
    assert_error(run("eval", LENET, work / "shared.onnxdc", "--data", tmp_path / "evil.npz"), 1,
                 "holds Python objects", "evil.npz")


def test_eval_max_drop_exceeded_exits_3(work: Path) -> None:
    result = run("eval", LENET, work / "pruned.onnxdc", "--data", TEST_DATA, "--max-drop", "0")
    assert result.exit_code == 3, result.output
    assert "top-1: reference 97.25%" in result.stdout
    assert result.stderr.startswith("onnxdc: output 'logits': top-1 drop ") and "exceeds --max-drop 0" in result.stderr


def test_eval_data_for_another_model(work: Path) -> None:
    result = run("eval", LENET, work / "shared.onnxdc", "--data", MODELS / "lenet5.test.npz")
    assert_error(result, 1, "input")


def test_eval_missing_data_file(work: Path, tmp_path: Path) -> None:
    assert_error(run("eval", LENET, work / "shared.onnxdc", "--data", tmp_path / "nope.npz"), 1,
                 "no such data file", "nope.npz")


def test_eval_data_with_wrong_input_name(work: Path, tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", pixels=np.zeros((2, 784), np.float32))
    assert_error(run("eval", LENET, work / "shared.onnxdc", "--data", tmp_path / "d.npz"), 1,
                 "'input'", "'pixels'")


# --------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("command", ["compress", "decompress", "inspect", "report"])
def test_missing_input_file(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "missing.onnx"
    msg = assert_error(run(command, missing), 1, "no such file", "missing.onnx")
    assert msg == f"onnxdc: error: no such file: {str(missing)!r}"
    assert list(tmp_path.iterdir()) == []


def test_eval_missing_model(work: Path, tmp_path: Path) -> None:
    assert_error(run("eval", tmp_path / "ref.onnx", work / "shared.onnxdc", "--data", TEST_DATA), 1,
                 "no such file", "ref.onnx")
    assert_error(run("eval", LENET, tmp_path / "cand.onnxdc", "--data", TEST_DATA), 1, "no such file", "cand.onnxdc")


def test_non_onnx_input(tmp_path: Path) -> None:
    bad = tmp_path / "notes.onnx"
    bad.write_text("these are not the weights you are looking for\n")
    assert_error(run("compress", bad, "-o", tmp_path / "out.onnxdc"), 1, "not an ONNX model", "notes.onnx")
    assert not (tmp_path / "out.onnxdc").exists()


def test_onnx_file_given_to_decompress(tmp_path: Path) -> None:
    assert_error(run("decompress", LENET, "-o", tmp_path / "out.onnx"), 1, "not an onnxdc container")
    assert_error(run("inspect", LENET), 1, "not an onnxdc container")


def test_empty_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert_error(run("compress", empty, "-o", tmp_path / "out.onnxdc"), 1, "empty", "empty.onnx")
    assert_error(run("decompress", empty, "-o", tmp_path / "out.onnx"), 1, "too short (0 bytes)")
    assert_error(run("report", empty), 1, "too short (0 bytes)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.onnx"]


@pytest.mark.parametrize("keep", [10, 100, 5000, -1])
def test_truncated_container(work: Path, tmp_path: Path, keep: int) -> None:
    cut = tmp_path / "cut.onnxdc"
    cut.write_bytes((work / "shared.onnxdc").read_bytes()[:keep])
    assert_error(run("decompress", cut, "-o", tmp_path / "out.onnx"), 1)
    assert_error(run("inspect", cut), 1)
    assert_error(run("eval", LENET, cut, "--data", TEST_DATA), 1)
    assert not (tmp_path / "out.onnx").exists()


def test_inspect_reads_the_header_only(work: Path, tmp_path: Path) -> None:
    """inspect reads the header alone: a corrupted stream is report's, decompress's and eval's to
    find (report decodes the levels), while a corrupted header is refused by all."""
    data = bytearray((work / "shared.onnxdc").read_bytes())
    stream_hit = tmp_path / "stream.onnxdc"
    container = read_container(bytes(data))
    first = container.header.streams[container.header.tensors[0].streams["indices"]]
    hit = container.header_size + first.offset + first.length // 2  # a tensor's stream, not the skeleton's
    stream_hit.write_bytes(bytes(data[:hit]) + bytes([data[hit] ^ 0xFF]) + bytes(data[hit + 1:]))
    assert run("inspect", stream_hit).exit_code == 0
    # 4.0 has no stream CRCs: report checks the payload's CRC-32 (as eval does when it opens the
    # file); decompress finds the byte as the stream decodes, or as its tensor's CRC-32 fails.
    assert_error(run("report", stream_hit), 1, "checksum mismatch")
    assert_error(run("decompress", stream_hit, "-o", tmp_path / "out.onnx"), 1, "stream")
    assert_error(run("eval", LENET, stream_hit, "--data", TEST_DATA), 1, "checksum mismatch")
    header_hit = tmp_path / "header.onnxdc"
    data[30] ^= 0xFF  # inside the binary header, after the prefix
    header_hit.write_bytes(bytes(data))
    for command in ("inspect", "report"):
        assert_error(run(command, header_hit), 1, "header checksum mismatch")


def test_input_is_a_directory(tmp_path: Path) -> None:
    for command in ("compress", "decompress", "inspect"):
        assert_usage_error(run(command, tmp_path), "is a directory")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- outputs


def test_existing_output_needs_force(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnxdc"
    out.write_bytes(b"precious")
    assert_error(run("compress", LENET, "-o", out, "--lossless"), 2, "exists", "--force", "out.onnxdc")
    assert out.read_bytes() == b"precious"
    model = tmp_path / "out.onnx"
    model.write_bytes(b"precious")
    assert_error(run("decompress", work / "shared.onnxdc", "-o", model), 2, "exists", "--force")
    assert model.read_bytes() == b"precious"

    assert run("compress", LENET, "-o", out, "--lossless", "--force").exit_code == 0
    assert out.read_bytes()[:8] == b"\x89ONNXDC\n"
    assert run("decompress", work / "shared.onnxdc", "-o", model, "--force").exit_code == 0
    onnx.checker.check_model(str(model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "out.onnxdc"]


def test_output_is_the_input(work: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copy(LENET, model)
    assert_error(run("compress", model, "-o", model, "--force"), 2, "is the input file")
    assert model.read_bytes() == LENET.read_bytes()
    container = tmp_path / "c.onnxdc"
    shutil.copy(work / "shared.onnxdc", container)
    before = container.read_bytes()
    assert_error(run("decompress", container, "-o", container, "--force"), 2, "is the input file")
    assert_error(run("decompress", container, "-o", tmp_path / "." / "c.onnxdc", "--force"), 2, "is the input file")
    (tmp_path / "link.onnxdc").symlink_to(container)
    assert_error(run("decompress", container, "-o", tmp_path / "link.onnxdc", "--force"), 2, "is the input file")
    assert container.read_bytes() == before


def test_output_directory_missing(work: Path, tmp_path: Path) -> None:
    assert_error(run("compress", LENET, "-o", tmp_path / "no" / "such" / "out.onnxdc", "--lossless"), 1,
                 "output directory", "does not exist")
    assert_error(run("decompress", work / "shared.onnxdc", "-o", tmp_path / "nodir" / "m.onnx"), 1,
                 "output directory", "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_output_is_a_directory(work: Path, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    assert_usage_error(run("decompress", work / "shared.onnxdc", "-o", tmp_path / "d", "--force"), "is a directory")
    assert_usage_error(run("compress", LENET, "-o", tmp_path / "d", "--force"), "is a directory")
    assert list((tmp_path / "d").iterdir()) == []


def test_interrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxdc.pipeline.paths

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(onnxdc.pipeline.paths, "encode_model", interrupted)
    result = run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--lossless")
    assert (result.exit_code, result.stdout, result.stderr) == (130, "", "onnxdc: interrupted\n")
    assert list(tmp_path.iterdir()) == []




@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_full_disk_leaves_nothing_behind(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         command: str) -> None:
    import onnxdc.fileio.atomic

    real_fdopen = os.fdopen
    monkeypatch.setattr(onnxdc.fileio.atomic.os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    out = tmp_path / ("out.onnxdc" if command == "compress" else "out.onnx")
    source = LENET if command == "compress" else work / "shared.onnxdc"
    result = run(command, source, "-o", out, "--force", *(["--lossless"] if command == "compress" else []))
    monkeypatch.undo()
    assert_error(result, 1, "cannot write", "out.onnx", os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


def test_full_disk_keeps_the_old_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxdc.fileio.atomic

    out = tmp_path / "out.onnxdc"
    out.write_bytes(b"old")
    real_fdopen = os.fdopen
    monkeypatch.setattr(onnxdc.fileio.atomic.os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    result = run("compress", LENET, "-o", out, "--lossless", "--force")
    monkeypatch.undo()
    assert_error(result, 1, "No space left")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnxdc"]


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("opts, fragment", [
    (["--sparsity", "1.5"], "--sparsity"),
    (["--sparsity", "-0.1"], "--sparsity"),
    (["--sparsity", "half"], "--sparsity"),
    (["--bits", "9"], "--bits"),
    (["--bits", "0"], "--bits"),
    (["--init", "kmeans++"], "--init"),
    (["--positions", "rle"], "--positions"),
    (["--codebook-dtype", "float64"], "--codebook-dtype"),
    (["--zstd-level", "23"], "--zstd-level"),
    (["--no-such-option"], "--no-such-option"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_option_values(tmp_path: Path, opts: list[str], fragment: str) -> None:
    assert_usage_error(run("compress", LENET, "-o", tmp_path / "o.onnxdc", *opts), fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("coder", ["lzma", "huffman+", "zstd:99", "raw:x"])
def test_unknown_coder_with_sharing(tmp_path: Path, coder: str) -> None:
    result = run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--sparsity", "0.5", "--coder", coder)
    msg = assert_error(result, 2)
    assert coder.split("+")[0].split(":")[0] in msg
    assert list(tmp_path.iterdir()) == []


def test_unknown_coder_alone(tmp_path: Path) -> None:
    assert_error(run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--coder", "lzma"), 2, "lzma")


def test_lossless_with_lossy_options(tmp_path: Path) -> None:
    for opts in (["--sparsity", "0.5"], ["--bits", "4"], ["--std-threshold", "0.5"]):
        assert_usage_error(run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--lossless", *opts),
                           "--lossless cannot be combined")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text, fragments", [
    ("[[rule]\nmatch = 'fc*'\n", ("not valid TOML",)),
    ("[[rule]]\nmatch = 'fc*'\nsparsity = 0.5\nbitz = 4\n", ("unknown key(s) bitz",)),
    ("[defaults]\nbits = 4\n", ("unknown top-level key(s) defaults",)),
    ("[[rule]]\nsparsity = 0.5\n", ("'match'",)),
    ("[[rule]]\nmatch = 'fc*'\nsparsity = 2.0\n", ("rule 0",)),
    ("[[rule]]\nmatch = 'fc*'\ncoder = 'lzma'\n", ("lzma",)),
], ids=["unparsable", "unknown-key", "unknown-table", "no-match", "bad-sparsity", "bad-coder"])
def test_bad_recipe(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(text)
    msg = assert_error(run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--recipe", recipe), 2, *fragments)
    assert "recipe.toml" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.toml"]


def test_missing_recipe(tmp_path: Path) -> None:
    assert_error(run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--recipe", tmp_path / "r.toml"), 2,
                 "cannot read recipe", "r.toml")


def test_good_recipe(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[[rule]]\nmatch = 'fc1*'\nsparsity = 0.9\nbits = 4\n"
                      "[[rule]]\nmatch = 'fc3*'\nlossless = true\n")
    result = run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--recipe", recipe, "--json")
    assert result.exit_code == 0, result.output
    rows = {t["name"]: t for t in json.loads(result.stdout)["tensors"]}
    assert (rows["fc1.weight"]["encoding"], rows["fc1.weight"]["bits"]) == ("shared", 4)
    assert rows["fc3.weight"]["encoding"] == "planes"


# --------------------------------------------------------------------------- --debug


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.onnxdc"
    result = CliRunner().invoke(main, ["--debug", "inspect", str(missing)])
    assert result.exit_code == 1
    assert type(result.exception).__name__ == "ContainerError"  # raised, not turned into one line
    assert "onnxdc: error:" not in result.output

    proc = subprocess.run([sys.executable, "-m", "onnxdc", "--debug", "inspect", str(missing)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Traceback (most recent call last):")
    assert "onnxdc.errors.ContainerError: no such file" in proc.stderr

    plain = subprocess.run([sys.executable, "-m", "onnxdc", "inspect", str(missing)],
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 1
    assert plain.stderr == f"onnxdc: error: no such file: {str(missing)!r}\n"


def test_decompress_with_external_data(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    result = run("decompress", work / "shared.onnxdc", "-o", out, "--external-data")
    assert result.exit_code == 0, result.output
    (data_file,) = tmp_path.glob("model.onnx.*.data")  # named by its content: see test_file_safety.py
    assert data_file.is_file() and os.path.getsize(out) < 10_000 < os.path.getsize(data_file)
    onnx.checker.check_model(str(out), full_check=True)
    from onnx import numpy_helper

    from onnxdc import decompress, load_model

    loaded = {t.name: numpy_helper.to_array(t) for t in load_model(out).graph.initializer}
    expected = {t.name: numpy_helper.to_array(t)
                for t in decompress((work / "shared.onnxdc").read_bytes()).graph.initializer}
    assert loaded.keys() == expected.keys()
    for name, arr in expected.items():
        np.testing.assert_array_equal(loaded[name], arr)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with np.load(TEST_DATA) as data:
        logits = sess.run(None, {"input": data["input"][:8]})[0]
    assert logits.shape == (8, 10)
    # a file at the name earlier versions used is not the output's: left as it is
    (tmp_path / "third.onnx.data").write_bytes(b"keep")
    again = run("decompress", work / "shared.onnxdc", "-o", tmp_path / "third.onnx", "--external-data")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "third.onnx.data").read_bytes() == b"keep" and (tmp_path / "third.onnx").is_file()


@pytest.mark.slow
def test_automatic_mode_on_lenet300_keeps_test_accuracy(tmp_path: Path) -> None:
    """The issue's command end to end: ``--calib --max-drop 0.5``, then ``eval`` on the test split
    (never seen by compression) with onnxruntime: at least 40x smaller than the float32 weights,
    within 0.5 points of the original top-1."""
    out = tmp_path / "auto.onnxdc"
    result = run("compress", LENET, "-o", out, "--calib", MODELS / "lenet300.calib.npz", "--max-drop", "0.5", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "auto.onnxdc.recipe.toml").is_file()
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(LENET)).graph.initializer)
    assert weights / os.path.getsize(out) >= 40
    result = run("eval", LENET, out, "--data", TEST_DATA, "--max-drop", "0.5", "--json")
    assert result.exit_code == 0, result.output
    ev = json.loads(result.stdout)
    assert ev["top1_drop_points"] <= 0.5 + 1e-9  # the tolerance eval --max-drop applies


def test_synthetic_inputs_the_model_cannot_run_name_the_dims(tmp_path: Path) -> None:
    """A Reshape that bakes in a sequence length fails on the default synthetic size: one line
    naming the defaulted dimension and --dim; with --dim it compresses."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((12, 64)) * 0.2).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, 12], dtype=np.int64), "shape")
    g = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["y"])],
                          "baked", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])], [w, shape])
    path = tmp_path / "baked.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = run("compress", path, "-o", tmp_path / "out.onnxdc", "-q")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    (line,) = result.stderr.strip().splitlines()  # -q: the error alone, no synthetic-inputs warning
    assert line.startswith("onnxdc: error: onnxruntime failed") and "seq to 16" in line and "--dim" in line
    assert not (tmp_path / "out.onnxdc").exists()
    result = run("compress", path, "-o", tmp_path / "out.onnxdc", "-q", "--dim", "seq=12")
    assert result.exit_code == 0, result.output


def test_python_dash_m_and_no_module_shadows_the_standard_library() -> None:
    """``python -m onnxdc`` is the CLI, and running a module's file directly (its folder first on
    sys.path) cannot pick up an onnxdc module in place of a standard one (``select.py`` did)."""
    import subprocess
    import sys

    pkg = Path(__file__).resolve().parent.parent / "onnxdc"
    out = subprocess.run([sys.executable, "-m", "onnxdc", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and __version__ in out.stdout
    names = {p.stem for p in pkg.rglob("*.py") if not p.stem.startswith("__")}
    names |= {p.name for p in pkg.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    assert not names & set(sys.stdlib_module_names)
