"""The command line's conventions through CliRunner: an example in every help, ``-q`` prints only
errors, the exit codes the README documents, and the automatic recipe's reuse command."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import assert_error, run
from model_builders import hidden_state_model, small_conv_model

from onnxdc.api import SharingConfig, load_recipe, reuse_command
from onnxdc.cli.main import EXAMPLES, main

MODELS = Path(__file__).parent.parent / "models"
LENET = MODELS / "lenet300.onnx"


# --------------------------------------------------------------------------- help examples


@pytest.mark.parametrize("name", sorted(main.commands))
def test_every_command_help_has_an_example_that_parses(name: str) -> None:
    result = run(name, "--help")
    assert result.exit_code == 0, result.output
    example = EXAMPLES[name]
    assert re.search(r"\n\n *Example:\n +" + re.escape(example) + r"\n", result.stdout), result.stdout
    words = shlex.split(example)
    assert words[:2] == ["onnxdc", name]
    with main.make_context("onnxdc", words[1:], resilient_parsing=False) as ctx:  # every option exists
        main.commands[name].make_context(name, words[2:], parent=ctx)


def test_main_help_lists_one_example_per_command() -> None:
    result = run("--help")
    assert result.exit_code == 0, result.output
    examples = result.stdout.split("Examples (one per command; COMMAND --help for its options):\n")[1]
    lines = [line.strip() for line in examples.splitlines() if line.strip()]
    assert sorted(shlex.split(line)[1] for line in lines) == sorted(main.commands)
    assert lines == [EXAMPLES[n] for n in EXAMPLES]  # unwrapped, in workflow order


# --------------------------------------------------------------------------- -q


@pytest.fixture
def hidden(tmp_path: Path) -> Path:
    model = tmp_path / "hidden.onnx"
    onnx.save(hidden_state_model(), str(model))
    return model


def test_quiet_automatic_mode_prints_no_warning(hidden: Path, tmp_path: Path) -> None:
    """Synthetic inputs and a default top-1 rule that cannot judge a hidden state: two warnings,
    none of them under -q."""
    loud = run("compress", hidden, "-o", tmp_path / "a.onnxdc")
    assert loud.exit_code == 0, loud.output
    warnings = [line for line in loud.stderr.splitlines() if line.startswith("onnxdc: warning: ")]
    assert any("no --calib data" in w for w in warnings) and any("agreement rule is not judged" in w for w in warnings)
    quiet = run("compress", hidden, "-o", tmp_path / "b.onnxdc", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    assert (tmp_path / "a.onnxdc").read_bytes() == (tmp_path / "b.onnxdc").read_bytes()


def test_quiet_manual_mode_prints_no_unmatched_rule_warning(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text("[[rule]]\nmatch = 'fc1*'\nbits = 4\n[[rule]]\nmatch = 'fc9*'\nbits = 2\n"
                      "[[rule]]\nop_type = 'Conv'\nbits = 6\n")
    loud = run("compress", LENET, "--recipe", recipe, "-o", tmp_path / "a.onnxdc")
    assert loud.exit_code == 0, loud.output
    assert loud.stderr.splitlines() == [
        'onnxdc: warning: recipe rule 1 (match = "fc9*") matches no weight tensor',
        'onnxdc: warning: recipe rule 2 (op_type = "Conv") matches no weight tensor',  # LeNet-300-100: Gemm only
    ]
    quiet = run("compress", LENET, "--recipe", recipe, "-o", tmp_path / "b.onnxdc", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_quiet_decompress_prints_no_checker_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxdc.api

    container = tmp_path / "m.onnxdc"
    assert run("compress", LENET, "--lossless", "-o", container, "-q").exit_code == 0
    monkeypatch.setattr(onnxdc.api, "check_model_quietly", lambda path: "a made-up checker failure")
    loud = run("decompress", container, "-o", tmp_path / "a.onnx")
    assert loud.stderr == "onnxdc: warning: onnx.checker rejects the output: a made-up checker failure\n"
    quiet = run("decompress", container, "-o", tmp_path / "b.onnx", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_quiet_still_prints_errors(tmp_path: Path) -> None:
    out = tmp_path / "o.onnxdc"
    out.write_bytes(b"precious")
    assert_error(run("compress", LENET, "--lossless", "-o", out, "-q"), 2, "exists", "--force")
    assert_error(run("decompress", tmp_path / "missing.onnxdc", "-q"), 1, "missing.onnxdc")


# --------------------------------------------------------------------------- exit codes


@pytest.fixture
def container(tmp_path: Path) -> Path:
    path = tmp_path / "lenet.onnxdc"
    assert run("compress", LENET, "--sparsity", "0.5", "--bits", "8", "-o", path, "-q").exit_code == 0
    return path


def _cases(tmp: Path, container: Path) -> list[tuple[str, list, int, str]]:
    """(case, arguments, exit code, a fragment of the message); the files are made by :func:`_files`."""
    truncated, not_onnx, taken = tmp / "truncated.onnxdc", tmp / "text.onnx", tmp / "taken.onnx"
    data = MODELS / "lenet300.test.npz"
    return [
        # 1: bad data — a missing, truncated, corrupted or non-ONNX input
        ("missing model", ["compress", tmp / "none.onnx", "-o", tmp / "o.onnxdc"], 1, "none.onnx"),
        ("non-ONNX model", ["compress", not_onnx, "-o", tmp / "o.onnxdc"], 1, "text.onnx"),
        ("truncated container", ["decompress", truncated, "-o", tmp / "o.onnx"], 1, "exceeds file size"),
        ("truncated container, inspect", ["inspect", truncated], 1, "exceeds file size"),
        ("bad eval data", ["eval", LENET, container, "--data", not_onnx], 1, "text.onnx"),
        # 2: bad usage or impossible settings
        ("unknown option", ["compress", LENET, "--bitz", "4"], 2, "--bitz"),
        ("out-of-range option", ["compress", LENET, "--bits", "12"], 2, "--bits"),
        ("contradictory options", ["compress", LENET, "--lossless", "--bits", "4"], 2, "--lossless"),
        ("existing output without --force", ["decompress", container, "-o", taken], 2, "--force"),
        ("output is the input", ["compress", LENET, "-o", LENET, "--force"], 2, "input file"),
        ("eval without data", ["eval", LENET, container], 2, "--data"),
        # 3: an eval gate failed
        ("eval gate", ["eval", LENET, container, "--data", data, "--min-cosine", "0.9999999"], 3, "--min-cosine"),
    ]


def _files(tmp: Path, container: Path) -> None:
    (tmp / "truncated.onnxdc").write_bytes(container.read_bytes()[:100])
    (tmp / "text.onnx").write_text("not a model")
    (tmp / "taken.onnx").write_bytes(b"x")


CASE_IDS = [c[0] for c in _cases(Path("tmp"), Path("c.onnxdc"))]


@pytest.mark.parametrize("case", CASE_IDS)
def test_documented_exit_codes(tmp_path: Path, container: Path, case: str) -> None:
    """README: errors are one line on stderr, exit 1 for bad data, 2 for bad usage; eval gates 3."""
    _files(tmp_path, container)
    _, args, code, fragment = next(c for c in _cases(tmp_path, container) if c[0] == case)
    result = run(*args)
    assert result.exit_code == code, (result.exit_code, result.output)
    if code == 3:
        assert result.stderr.startswith("onnxdc: ") and fragment in result.stderr
    elif result.stderr.startswith("onnxdc: error: "):
        assert_error(result, code, fragment)
    else:  # click's own usage errors: "Usage: ..." and "Error: ..." naming the option
        assert code == 2 and "Usage:" in result.stderr and fragment in result.stderr
    assert not (tmp_path / "o.onnxdc").exists() and not (tmp_path / "o.onnx").exists()


# --------------------------------------------------------------------------- reuse command


def test_reuse_command_names_what_decided_the_result() -> None:
    auto = SharingConfig(min_elements=16, include_bias=True)
    assert reuse_command(model="m dir/m.onnx", recipe="m.onnxdc.recipe.toml", base=auto, calib="c.npz") == (
        "onnxdc compress 'm dir/m.onnx' --recipe m.onnxdc.recipe.toml --calib c.npz --min-elements 16 "
        "--include-bias -o OUT.onnxdc")
    other = SharingConfig(min_elements=16, coder="huffman", positions="mask", seed=3, codebook_dtype="float16")
    assert reuse_command(model="m.onnx", recipe="r.toml", base=other, calib="c.npz", calib_samples=64,
                         zstd_level=5) == (
        "onnxdc compress m.onnx --recipe r.toml --calib c.npz --calib-samples 64 --min-elements 16 "
        "--codebook-dtype float16 --coder huffman --positions mask --seed 3 --zstd-level 5 -o OUT.onnxdc")
    assert "--calib" not in reuse_command(model="m.onnx", recipe="r.toml", base=auto, calib=None)


def test_the_printed_reuse_command_runs_the_recipe_as_written(tmp_path: Path) -> None:
    """The automatic mode on calibration data prints, and writes in the recipe, a command with
    ``--calib FILE``; run as printed, it shares exactly the tensors the recipe names, at the
    recipe's bits (without its --min-elements both tensors of this model would stay exact)."""
    model, data = small_conv_model()
    path, calib = tmp_path / "conv.onnx", tmp_path / "calib.npz"
    onnx.save(model, str(path))
    np.savez(calib, **data)
    out = tmp_path / "auto.onnxdc"
    result = run("compress", path, "--calib", calib, "-o", out)
    assert result.exit_code == 0, result.output
    printed = [line for line in result.stdout.splitlines() if line.startswith("reuse with: ")]
    assert len(printed) == 1
    command = printed[0].removeprefix("reuse with: ")
    recipe = Path(str(out) + ".recipe.toml")
    assert f"# {command}\n" in recipe.read_text()
    words = shlex.split(command)
    assert words[words.index("--calib") + 1] == str(calib) and words[words.index("--recipe") + 1] == str(recipe)
    assert words[-2:] == ["-o", "OUT.onnxdc"]
    again = run(*words[1:-1], tmp_path / "again.onnxdc", "--json", "-q")
    assert again.exit_code == 0, again.output
    rows = {t["name"]: t for t in json.loads(again.stdout)["tensors"]}
    rules = load_recipe(recipe)
    assert {r.match for r in rules if not r.settings.get("lossless")} == {
        n for n, t in rows.items() if t["encoding"] == "shared"}
    for r in rules:
        if not r.settings.get("lossless"):
            assert rows[r.match]["bits"] <= r.settings["bits"]  # k-means may leave a level unused


def test_reuse_command_without_calibration_data_has_no_calib(hidden: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.onnxdc"
    result = run("compress", hidden, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    command = json.loads(result.stdout)["reuse_command"]
    text = Path(str(out) + ".recipe.toml").read_text()
    assert f"# {command}\n" in text and "synthetic inputs" in text
    assert shlex.split(command)[:5] == ["onnxdc", "compress", str(hidden), "--recipe", f"{out}.recipe.toml"]
    assert "--calib" not in shlex.split(command)
