"""The file paths (tensor by tensor, spooled streams, lazy external data) equal the in-memory ones."""

from __future__ import annotations

from pathlib import Path

import model_builders
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdc import CompressConfig, ConfigError, compress, decompress, load_model
from onnxdc.onnx_io.write import external_data_files
from onnxdc.pipeline.paths import compress_file, decompress_file
from onnxdc.pipeline.settings import SharingConfig

MODELS = Path(__file__).resolve().parent.parent / "models"
CONFIGS = [CompressConfig(), CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5), jobs=2),
           CompressConfig(sharing=SharingConfig(sparsity=0.5, global_prune=True, bits=4))]


@pytest.mark.parametrize("config", CONFIGS, ids=["lossless", "shared-j2", "global"])
@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-input"])
@pytest.mark.parametrize("spool_above", [0, 20_000, 1 << 30], ids=["spooled", "spills", "in-memory"])
def test_compress_file_equals_compress(tmp_path: Path, config: CompressConfig, external: bool, spool_above: int,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("onnxdc.pipeline.paths.SPOOL_ABOVE", spool_above)
    src = MODELS / "lenet5.onnx"
    if external:  # the same model with its weights in a data file, read one tensor at a time
        model = onnx.load(src)
        onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                        location="m.weights", size_threshold=0)
        src = tmp_path / "m.onnx"
    out = tmp_path / "out.onnxdc"
    compress_file(src, out, config=config)
    assert out.read_bytes() == compress(load_model(src), config=config).data
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.onnxdc"] + (["m.onnx", "m.weights"]
                                                                                  if external else []))


@pytest.mark.parametrize("external", [False, True])
def test_decompress_file_equals_decompress(tmp_path: Path, external: bool) -> None:
    data = compress(load_model(MODELS / "crnn.onnx"), config=CompressConfig(sharing=SharingConfig(sparsity=0.8))).data
    (tmp_path / "c.onnxdc").write_bytes(data)
    out = tmp_path / "m.onnx"
    assert decompress_file(tmp_path / "c.onnxdc", out, external_data=external) is external
    expected = decompress(data)
    if not external:
        assert out.read_bytes() == expected.SerializeToString(deterministic=True)
    else:
        assert [p.name for p in external_data_files(out)] == [p.name for p in tmp_path.glob("m.onnx.*.data")]
        assert len(external_data_files(out)) == 1
        got = {t.name: numpy_helper.to_array(t) for t in load_model(out).graph.initializer}
        for t in expected.graph.initializer:
            np.testing.assert_array_equal(got[t.name], numpy_helper.to_array(t))
        onnx.checker.check_model(str(out), full_check=True)


def test_compress_file_refuses_calibration(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        compress_file(MODELS / "lenet300.onnx", tmp_path / "x.onnxdc",
                      config=CompressConfig(sharing=SharingConfig(sparsity=0.5), calibration={}))


@pytest.mark.parametrize("build", [model_builders.control_flow_model, model_builders.function_model,
                                   model_builders.annotated_model, model_builders.dtype_zoo_model,
                                   model_builders.training_info_model])
def test_decompress_file_splices_exact_bytes(tmp_path: Path, build: object) -> None:
    # Tensors in subgraphs, functions, attributes and training graphs are spliced into the
    # serialized skeleton; the file must still be the filled model's deterministic serialization,
    # whatever the number of decoding threads.
    data = compress(build(), config=CompressConfig(min_tensor_bytes=0)).data
    (tmp_path / "c.onnxdc").write_bytes(data)
    expected = decompress(data).SerializeToString(deterministic=True)
    for jobs in (1, 2):
        out = tmp_path / f"m{jobs}.onnx"
        decompress_file(tmp_path / "c.onnxdc", out, external_data=False, jobs=jobs)
        assert out.read_bytes() == expected


def test_decoding_prefetches_bounded_batches_of_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Huffman streams of consecutive tensors decode together, in runs of at most BATCH_STREAMS
    streams and BATCH_SYMBOLS symbols, covering every stream once, with the same result."""
    from onnxdc.format.container import Container, read_container
    from onnxdc.format.registry import BATCH_STREAMS, BATCH_SYMBOLS

    rng = np.random.default_rng(4)
    names = [f"w{i}" for i in range(80)]
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i - 1}", n], [f"h{i}"]) for i, n in enumerate(names)]
    inits = [numpy_helper.from_array((rng.standard_normal((32, 32)) * 0.1).astype(np.float32), n) for n in names]
    g = helper.make_graph(nodes, "many", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info("h79", TensorProto.FLOAT, [1, 32])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    data = compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4, min_elements=0))).data
    calls: list[list[int]] = []
    real = Container.prefetch
    monkeypatch.setattr(Container, "prefetch", lambda self, idx: (calls.append(list(idx)), real(self, idx))[1])
    container = read_container(data)
    out = decompress(container)
    streams = container.header.streams
    assert len(calls) >= 160 / BATCH_STREAMS and all(len(c) <= BATCH_STREAMS for c in calls)
    assert all(sum(streams[i].count for i in c) <= BATCH_SYMBOLS for c in calls)
    assert [i for c in calls for i in c] == [i for t in container.header.tensors for i in t.streams.values()]
    assert not container._prefetched  # every prefetched stream was used
    got = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    monkeypatch.undo()
    again = {t.name: numpy_helper.to_array(t) for t in decompress(data).graph.initializer}
    assert all(np.array_equal(got[n], again[n]) for n in names)


def test_decompress_file_checks_each_stream_as_it_reads_it(tmp_path: Path) -> None:
    """decompress_file reads the payload once (no up-front checksum pass): a flipped payload byte
    still fails, naming the tensor or stream, and no output is left behind."""
    from onnxdc import ContainerError
    from onnxdc.format.container import read_container

    src = MODELS / "lenet5.onnx"
    data = bytearray(compress(load_model(src), config=CompressConfig()).data)
    c = read_container(bytes(data))
    last = len(c.header.streams) - 2  # a tensor stream late in the file: earlier tensors decode fine
    s = c.header.streams[last]
    data[c.header_size + s.offset + s.length // 2] ^= 0x40
    bad = tmp_path / "bad.onnxdc"
    bad.write_bytes(bytes(data))
    out = tmp_path / "out.onnx"
    # 3.0 streams have no CRC of their own: the stream's tensor fails its CRC-32 after decoding
    # (or the stream fails to decode), before anything is written.
    with pytest.raises(ContainerError, match=r"^(tensor '.*' checksum mismatch after decoding|stream \d+: .*)$"):
        decompress_file(bad, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnxdc"]
