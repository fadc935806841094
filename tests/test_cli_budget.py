"""The budget, thread and progress options of ``compress`` and ``eval``, through CliRunner (not a tty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from cli_helpers import assert_error, run
from click.testing import CliRunner

from onnxdc.cli.progress import progress_callback

MODELS = Path(__file__).parent.parent / "models"
LENET = MODELS / "lenet300.onnx"
TEST_DATA = MODELS / "lenet300.test.npz"
PHASE_LINE = re.compile(r"^onnxdc: (?P<phase>.+): (?P<steps>\d+( of \d+)?) steps in \d+\.\d s$")


@pytest.mark.parametrize("flag", [["--max-drop", "1"], ["--min-agreement", "0.99"]])
def test_compress_top1_rule_on_a_hidden_state_is_an_error(hidden: tuple[Path, Path], tmp_path: Path,
                                                          flag: list[str]) -> None:
    model, data = hidden
    rule = flag[0][2:].replace("-", "_")
    result = run("compress", model, "--calib", data, "-o", tmp_path / "o.onnxdc", "-q", *flag)
    assert_error(result, 2, f"budget rule {rule} cannot be judged", "'state' has shape (16, 4, 32)")
    assert not (tmp_path / "o.onnxdc").exists()


def test_compress_default_budget_on_a_hidden_state_warns_and_judges_cosine(hidden: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    model, data = hidden
    out = tmp_path / "o.onnxdc"
    result = run("compress", model, "--calib", data, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert ("onnxdc: warning: the default budget's top-1 agreement rule is not judged: top-1 agreement needs "
            "(samples, classes) logits, but output 'state' has shape (16, 4, 32)") in result.stderr
    doc = json.loads(result.stdout)
    assert doc["budget_met"] and doc["calibration_eval"]["agreement_top1"] is None
    assert doc["calibration_eval"]["outputs"][0]["cosine_mean"] >= 0.999
    quiet = run("compress", model, "--calib", data, "-o", out, "--force", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")


def test_budget_options_refused_outside_the_automatic_mode(tmp_path: Path) -> None:
    result = run("compress", LENET, "-o", tmp_path / "o.onnxdc", "--lossless", "--min-sample-cosine", "0.99")
    assert result.exit_code == 2 and "--min-sample-cosine set the automatic mode's budget" in result.stderr


def test_eval_prints_per_sample_cosines_and_gates_them(tmp_path: Path) -> None:
    result = run("eval", LENET, LENET, "--data", TEST_DATA, "--min-sample-cosine", "0.999999", "-j", "1")
    assert result.exit_code == 0, result.output
    head, row = result.stdout.splitlines()[3:5]
    assert head.split() == ["output", "shape", "cosine", "mean", "cos", "min", "cos", "SNR", "dB", "max", "abs",
                            "agreement"]
    assert row.split()[:5] == ["logits", "400x10", "1.000000", "1.000000", "1.000000"]
    assert ("pass  output 'logits': lowest per-sample cosine 1.000000 meets --min-sample-cosine 0.999999"
            in result.stdout)
    as_json = json.loads(run("eval", LENET, LENET, "--data", TEST_DATA, "--json").stdout)
    assert as_json["outputs"][0]["per_sample"] and as_json["outputs"][0]["cosine_min"] == pytest.approx(1.0)
    pruned = tmp_path / "pruned.onnxdc"
    assert run("compress", LENET, "-o", pruned, "--sparsity", "0.95", "-q").exit_code == 0
    gated = run("eval", LENET, pruned, "--data", TEST_DATA, "--min-cosine", "0.9999", "--min-sample-cosine", "0.9999")
    assert gated.exit_code == 3, gated.output
    doc = json.loads(run("eval", LENET, pruned, "--data", TEST_DATA, "--json").stdout)["outputs"][0]
    assert doc["cosine_min"] < doc["cosine_mean"] < 0.9999
    assert gated.stderr.splitlines() == [
        f"onnxdc: output 'logits': mean per-sample cosine {doc['cosine_mean']:.6f} is below --min-cosine 0.9999",
        f"onnxdc: output 'logits': lowest per-sample cosine {doc['cosine_min']:.6f} is below --min-sample-cosine 0.9999"]
    assert "FAIL  output 'logits': mean per-sample cosine" in gated.stdout


def test_eval_max_drop_on_a_hidden_state_fails_by_name(hidden: tuple[Path, Path]) -> None:
    model, data = hidden
    result = run("eval", model, model, "--data", data, "--max-drop", "1")
    assert result.exit_code == 3, result.output
    assert result.stdout.splitlines()[2].split()[:5] == ["state", "64x4x32", "1.000000", "1.000000", "1.000000"]
    assert result.stderr == ("onnxdc: --max-drop 1 cannot be judged: top-1 drop needs (samples, classes) logits, but "
                             "output 'state' has shape (64, 4, 32) for 64 samples\n")
    assert run("eval", model, model, "--data", data).exit_code == 0  # no gate asked, nothing to fail


def test_jobs_is_documented() -> None:
    text = " ".join(run("compress", "--help").stdout.split())
    assert "-j, --jobs INTEGER RANGE" in text and "onnxruntime's intra-op threads" in text
    assert "[default: (usable cores)" in text and "Default budget: mean per-sample output cosine >= 0.999" in text


# --------------------------------------------------------------------------- progress


@click.command()
@click.option("--quiet", is_flag=True)
def _phases(quiet: bool) -> None:
    """Report three phases as the automatic mode does; the middle one restarts with another total."""
    with progress_callback(quiet, log=True) as progress:
        def cb(done: int, total: int, label: str) -> None:
            if progress is not None:
                progress(done, total, label)

        for i in range(1, 4):
            cb(i, 3, "statistics")
        cb(1, 2, "curves")
        cb(2, 2, "curves")
        cb(2, 2, "curves")  # the last step again: no new phase
        cb(0, 4, "allocation")
        cb(1, 4, "allocation")
        cb(1, 5, "allocation")  # another total: a new phase, cut short by the end of the command
        cb(2, 5, "allocation")


def test_one_line_per_phase_in_a_log() -> None:
    result = CliRunner().invoke(_phases, [])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    got = [(m["phase"], m["steps"]) for m in map(PHASE_LINE.match, lines)]
    assert got == [("statistics", "3"), ("curves", "2"), ("allocation", "1 of 4"), ("allocation", "2 of 5")]
    quiet = CliRunner().invoke(_phases, ["--quiet"])
    assert (quiet.exit_code, quiet.stderr) == (0, "")


def test_automatic_compress_logs_its_phases(tmp_path: Path) -> None:
    from test_cli import small_mlp

    result = run("compress", small_mlp(tmp_path / "mlp.onnx"), "-o", tmp_path / "o.onnxdc", "-j", "1")
    assert result.exit_code == 0, result.output
    phases = [PHASE_LINE.match(line) for line in result.stderr.splitlines() if not line.startswith("onnxdc: warning")
              and not line.startswith("onnxdc: automatic mode")]
    assert phases and all(phases), result.stderr
    for manual in (["--lossless"], ["--sparsity", "0.5"]):  # a single short phase: nothing in the log
        quiet = run("compress", LENET, "-o", tmp_path / "m.onnxdc", "--force", *manual)
        assert (quiet.exit_code, quiet.stderr) == (0, "")
