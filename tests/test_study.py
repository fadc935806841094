"""The coder study's table (``compare-coders --study``) on a tiny model, and on the YOLO sample."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxdc import CompressConfig, compress, decompress, load_model, read_container
from onnxdc.cli import main
from onnxdc.pipeline.settings import SharingConfig
from onnxdc.study import BOUNDS, STUDY_CODERS, coder_study, format_study

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
sys.path.insert(0, str(ROOT / "benchmarks"))
from yolo_metric import box_f1, decode, nms, yolo_box_f1  # noqa: E402

SHARING = SharingConfig(sparsity=0.8, bits=4, min_elements=0)


def _tiny_model():  # noqa: ANN202 - a ModelProto
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array(rng.standard_normal((24, 40)).astype(np.float32), "fc1.w"),
             numpy_helper.from_array(rng.laplace(size=(10, 24)).astype(np.float32), "fc2.w")]
    nodes = [helper.make_node("Gemm", ["x", "fc1.w"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "fc2.w"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 40])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _stream_bytes(data: bytes, role: str) -> int:
    h = read_container(data).header
    return sum(h.streams[t.streams[role]].length for t in h.tensors if t.encoding == "shared")


def test_study_has_every_row_and_consistent_sizes() -> None:
    model = _tiny_model()
    study = coder_study(model, sharing=SHARING)
    assert [r.label for r in study.rows] == [c[0] for c in STUDY_CODERS] + list(BOUNDS)
    assert study.tensors == 2 and study.numel == 24 * 40 + 10 * 24
    assert study.original_bytes == 4 * study.numel
    assert study.weights == pytest.approx(0.2 * study.numel, abs=2)
    rows = {r.coder if r.layout == "sparse" else r.label: r for r in study.rows}
    for r in study.rows:
        assert r.coded_bytes == r.index_bytes + r.position_bytes > 0
        assert r.codebook_bytes == rows["raw"].codebook_bytes > 0
    # The fixed width: 4 bits per kept index plus the positions at their best gap width; the raw
    # row is that width; the dense levels take 5 bits (zero and 16 clusters).
    raw = rows["raw"]
    assert raw.index_bytes == sum((n * 4 + 7) // 8 for n in (192, 48))
    assert raw.coded_bytes == raw.fixed_bytes and raw.code_ratio == 1.0
    dense = [r for r in study.rows if r.layout == "dense"]
    assert all(r.fixed_bytes == sum((n * 5 + 7) // 8 for n in (960, 240)) for r in dense)
    # Index streams are what the container writes with the same coder named.
    for spec in ("huffman", "zstd", "huffman+zstd", "rans", "zstd-literals"):
        cfg = CompressConfig(sharing=SharingConfig(sparsity=0.8, bits=4, min_elements=0, coder=spec,
                                                   positions="relative"))
        data = compress(model, config=cfg).data
        assert _stream_bytes(data, "indices") == rows[spec].index_bytes, spec
        # The container picks the smallest position coding, at most the study's fixed width.
        assert _stream_bytes(data, "positions") <= min(rows[s].position_bytes
                                                       for s in ("raw", "huffman", "zstd", "rans"))
    # The order-0 entropy bounds every order-0 coder of the same streams, stream by stream.
    h0 = rows[BOUNDS[0]]
    for spec in ("huffman", "rans", "zstd-literals"):
        assert h0.index_bytes <= rows[spec].index_bytes and h0.position_bytes <= rows[spec].position_bytes
    assert rows[BOUNDS[1]].coded_bytes <= rows["rANS, dense levels"].coded_bytes
    assert rows[BOUNDS[2]].coded_bytes <= rows[BOUNDS[1]].coded_bytes
    text = format_study(study)
    assert all(c[0] in text for c in STUDY_CODERS) and "zstd level 19" in text


def test_study_cli_json() -> None:
    res = CliRunner().invoke(main, ["compare-coders", str(MODELS / "lenet300.onnx"), "--study", "--sparsity", "0.9",
                                    "--bits", "5", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["zstd_level"] == 19 and len(out["rows"]) == len(STUDY_CODERS) + len(BOUNDS)
    huff = next(r for r in out["rows"] if r["coder"] == "huffman")
    assert huff["model_ratio"] == pytest.approx(out["original_bytes"] / (huff["codebook_bytes"] + huff["coded_bytes"]),
                                                rel=1e-3)


def _head(boxes: list[tuple[int, int, float, float, float, float]], n: int = 1) -> np.ndarray:
    """A YOLO output that predicts exactly ``boxes`` (image, class, x0, y0, x1, y1), confidently."""
    from yolo_metric import ANCHORS

    s, b, c = 6, len(ANCHORS), 3
    out = np.zeros((n, b, 5 + c, s, s), np.float32)
    out[:, :, 4] = -20  # nothing anywhere
    for img, cls, x0, y0, x1, y1 in boxes:
        cx, cy, w, h = (x0 + x1) / 2 * s, (y0 + y1) / 2 * s, x1 - x0, y1 - y0
        img, cls, col, row = int(img), int(cls), int(cx), int(cy)
        fx, fy = cx - col, cy - row
        out[img, 0, :5, row, col] = (np.log(fx / (1 - fx)), np.log(fy / (1 - fy)), np.log(w / ANCHORS[0, 0]),
                                     np.log(h / ANCHORS[0, 1]), 20)
        out[img, 0, 5 + cls, row, col] = 20
    return out.reshape(n, b * (5 + c), s, s)


def test_yolo_box_f1_on_hand_made_boxes() -> None:
    targets = np.array([[0, 0, 0.10, 0.10, 0.30, 0.30], [0, 2, 0.55, 0.50, 0.80, 0.75],
                        [1, 1, 0.42, 0.05, 0.62, 0.25]], np.float32)
    perfect = _head([tuple(t) for t in targets.tolist()], n=2)  # type: ignore[misc]
    dets = [nms(d) for d in decode(perfect)]
    assert [len(d) for d in dets] == [2, 1]
    np.testing.assert_allclose(dets[1][0, 2:], targets[2, 2:], atol=1e-4)
    assert yolo_box_f1(perfect, targets) == pytest.approx(1.0)
    assert yolo_box_f1(_head([], n=2), targets) == 0.0
    assert box_f1([np.zeros((0, 6)), np.zeros((0, 6))], np.zeros((0, 6))) == 1.0  # nothing to find, nothing found
    # A wrong class and a box off by half its size: one hit of three objects, two false alarms.
    off = [(0, 1, 0.10, 0.10, 0.30, 0.30), (0, 2, 0.55, 0.50, 0.80, 0.75), (1, 1, 0.50, 0.15, 0.70, 0.35)]
    assert yolo_box_f1(_head(off, n=2), targets) == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))


@pytest.mark.skipif(not (MODELS / "yolo.onnx").exists(), reason="no YOLO sample model")
def test_yolo_sample_compresses_and_runs() -> None:
    model = load_model(MODELS / "yolo.onnx")
    data = compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5))).data
    assert len(data) * 10 < model.ByteSize()
    out = decompress(data)
    x = np.load(MODELS / "yolo.test.npz")["input"][:8]
    sess = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0]
    assert y.shape == (8, 16, 6, 6) and np.isfinite(y).all()
