"""``onnxdc report``: the analysis (bits per weight against entropy), the self-contained HTML page
(automatic and manual containers, every layer, no network reference, the same bytes twice), the
error without matplotlib, and (when Chromium is installed) the page rendered headless."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from cli_helpers import assert_error, run
from model_builders import small_conv_model

import onnxdc
from onnxdc.api import analyze, decoded_weights, level_contexts, read_container_file, row_length

#: Anything that makes a browser fetch: a URL scheme, a protocol-relative or external reference,
#: scripts, stylesheets, imports, fonts, a url() that is not a fragment of the page.
NETWORK = re.compile(r"https?:|ftp:|//[a-z0-9]|<script|<link|<iframe|<img|@import|@font-face|src=|url\((?!#)",
                     re.IGNORECASE)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small conv model, its calibration data, and containers of the automatic and manual modes."""
    d = tmp_path_factory.mktemp("report")
    model, data = small_conv_model()
    onnx.save(model, str(d / "model.onnx"))
    np.savez(d / "calib.npz", **data)
    for name, opts in [("auto", ["--calib", d / "calib.npz"]),
                       ("manual", ["--sparsity", "0.8", "--bits", "4", "--min-elements", "16"]),
                       ("relative", ["--sparsity", "0.8", "--bits", "3", "--min-elements", "16", "--positions",
                                     "relative"]),
                       ("mask", ["--sparsity", "0.5", "--bits", "3", "--min-elements", "16", "--positions", "mask"]),
                       ("lossless", ["--lossless"])]:
        result = run("compress", d / "model.onnx", "-o", d / f"{name}.onnxdc", "-q", *opts)
        assert result.exit_code == 0, result.output
    return d


def _levels_from_values(values: np.ndarray, codebook: np.ndarray, *, dense: bool) -> np.ndarray:
    """The levels rebuilt from the decoded values alone: the codebook slot of each value (dense
    layout), or 0 for a zero and 1 + the slot otherwise."""
    flat = values.reshape(-1).astype(np.float64)
    slot = {float(v): i for i, v in enumerate(codebook.astype(np.float64))}
    if dense:
        return np.array([slot[float(v)] for v in flat], dtype=np.int64)
    return np.array([0 if v == 0 else 1 + slot[float(v)] for v in flat], dtype=np.int64)


def _h0(levels: np.ndarray) -> float:
    _, counts = np.unique(levels, return_counts=True)
    p = counts / levels.size
    return float(-(counts * np.log2(p)).sum())


@pytest.mark.parametrize("name", ["auto", "manual", "relative", "mask", "lossless"])
def test_bits_per_weight_match_independent_values(work: Path, name: str) -> None:
    container = read_container_file(work / f"{name}.onnxdc")
    seen: dict[int, np.ndarray] = {}
    result = analyze(container, on_values=lambda t, v: seen.__setitem__(t.slot, v))
    h = container.header
    for t in h.tensors:  # the values made from the levels are the decoder's, CRC-checked
        assert np.array_equal(seen[t.slot], decoded_weights(t, container)), t.name
    assert {t.name for t in result.tensors} == {t.name for t in h.tensors}
    for t in h.tensors:
        row = next(r for r in result.tensors if r.slot == t.slot)
        numel = int(np.prod(t.shape))
        levels_bytes = sum(h.streams[i].length for role, i in t.streams.items() if role != "codebook")
        assert row.coded_bpw == pytest.approx(8 * levels_bytes / numel, rel=1e-12)
        if t.encoding != "shared":
            assert row.entropy_bpw is None and row.quantizer == "exact"
            continue
        values = decoded_weights(t, container)
        cb_dtype = np.float16 if t.params["codebook_dtype"] == "float16" else np.float32
        codebook = np.frombuffer(container.stream_bytes(t.streams["codebook"]), dtype=cb_dtype)
        levels = _levels_from_values(values, codebook, dense=t.params["positions"] == "dense")
        assert row.entropy_bpw == pytest.approx(_h0(levels) / numel, abs=1e-9)
        assert row.sparsity == pytest.approx(float(np.mean(values == 0)), abs=1e-12)
        if row.context_bpw is not None:
            ctx = level_contexts(levels, row_length(t.shape, t.params["op"]))
            bits = sum(_h0(levels[ctx == c]) for c in np.unique(ctx))
            assert row.context_bpw == pytest.approx(bits / numel, abs=1e-9)
        if name != "auto":
            assert row.quantizer == "k-means" and row.step is None
    stored = sum(s.length for i, s in enumerate(h.streams) if i != h.skeleton)
    numel = sum(int(np.prod(t.shape)) for t in h.tensors)
    assert result.total_bpw() == pytest.approx(8 * stored / numel, rel=1e-12)
    size = (work / f"{name}.onnxdc").stat().st_size
    assert result.total_bpw(whole_file=True) == pytest.approx(8 * size / numel, rel=1e-12)


def test_uniform_step_is_the_codebooks_grid() -> None:
    from onnxdc.analysis import uniform_step

    step = np.float32(0.0173)
    levels = np.array([-7, -3, 2, 5, 300], dtype=np.float32)
    assert uniform_step(np.concatenate([[0.0], levels * step]).astype(np.float32)) == pytest.approx(step, rel=1e-6)
    assert uniform_step((np.array([4, 6, 10]) * step).astype(np.float32)) == pytest.approx(2 * step, rel=1e-6)
    assert uniform_step(np.array([-1.1317, -0.9319, 0.0801, 0.3133], dtype=np.float32)) is None  # k-means values
    assert uniform_step(np.zeros(1, np.float32)) is None


def test_text_report_shows_bits_per_weight(work: Path) -> None:
    result = run("report", work / "auto.onnxdc")
    assert result.exit_code == 0, result.output
    doc = json.loads(run("report", work / "auto.onnxdc", "--json").stdout)
    for row in doc["analysis"]:
        line = next(x for x in result.stdout.splitlines() if x.startswith(row["name"] + " "))
        assert f"{row['coded_bpw']:.3f}" in line and f"{row['entropy_bpw']:.3f}" in line
    assert f"tensors {doc['bpw']:.3f}" in result.stdout
    assert f"whole file {doc['file_bpw']:.3f}" in result.stdout
    assert "sensitivity curves: not recorded" in result.stdout


@pytest.mark.parametrize("name", ["auto", "manual", "lossless"])
def test_html_page_is_self_contained_and_lists_every_layer(work: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "page.html"
    result = run("report", work / f"{name}.onnxdc", "--html", out, "--model", work / "model.onnx")
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not NETWORK.search(page), NETWORK.search(page)
    container = read_container_file(work / f"{name}.onnxdc")
    for t in container.header.tensors:
        assert f"<h3>{html.escape(t.name)}</h3>" in page, t.name
    assert page.count("<svg") == 3 + len(container.header.tensors)  # stages, layers, bits; one per tensor
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # figures do not share ids
    assert "Histograms of the original weights" in page
    again = tmp_path / "again.html"
    assert run("report", work / f"{name}.onnxdc", "--html", again, "--model", work / "model.onnx").exit_code == 0
    assert again.read_bytes() == out.read_bytes()


def test_html_page_without_the_model_shows_decoded_weights(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    quiet = run("report", work / "manual.onnxdc", "--html", out, "--all", "-q")
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    page = out.read_text(encoding="utf-8")
    assert "Histograms of the decoded weights" in page and not NETWORK.search(page)


def test_html_needs_matplotlib(work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    out = tmp_path / "page.html"
    assert_error(run("report", work / "manual.onnxdc", "--html", out), 1,
                 "the html report needs matplotlib: pip install 'onnxdc[report]'")
    assert not out.exists()
    assert run("report", work / "manual.onnxdc").exit_code == 0  # the text report needs none


def test_report_options_are_checked(work: Path, tmp_path: Path) -> None:
    assert_error(run("report", work / "manual.onnxdc", "--model", work / "model.onnx"), 2, "--html")
    other = tmp_path / "other.onnx"
    model = onnx.load(str(work / "model.onnx"))
    model.graph.initializer[0].name = "renamed"
    onnx.save(model, str(other))
    assert_error(run("report", work / "manual.onnxdc", "--html", tmp_path / "p.html", "--model", other), 1,
                 "'conv.w'", "not in the model")
    existing = tmp_path / "exists.html"
    existing.write_text("keep")
    assert_error(run("report", work / "manual.onnxdc", "--html", existing), 2, "exists")  # usage, as the README says
    assert existing.read_text() == "keep"
    assert_error(run("report", work / "manual.onnxdc", "--html", work / "manual.onnxdc", "--force"), 2)


def test_report_from_python(work: Path, tmp_path: Path) -> None:
    result = onnxdc.html_report_file(work / "auto.onnxdc", tmp_path / "p.html")
    assert (tmp_path / "p.html").is_file() and result.report.file_bytes == (work / "auto.onnxdc").stat().st_size


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (CI does not need it)")
def test_chromium_renders_the_page(work: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    out = tmp_path / "page.html"
    assert run("report", work / "auto.onnxdc", "--html", out, "--model", work / "model.onnx").exit_code == 0
    shot = tmp_path / "shot.png"
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,1600",
                           out.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pixels = imread(str(shot))
    assert pixels.shape[:2] == (1600, 1280)
    dark = (pixels[..., :3].mean(axis=-1) < 0.5).mean()
    assert 0.005 < dark < 0.5  # text and bars drawn on a white page, not a blank or black one
