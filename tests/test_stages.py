"""Deep Compression stages: pruning, weight sharing, positions, recipes, selection, the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdc import CompressConfig, ConfigError, compress, decompress, load_model
from onnxdc.compare import SPECS, compare_coders
from onnxdc.format.positions import decode_mask, decode_relative
from onnxdc.onnx_io.candidates import find_candidates
from onnxdc.pipeline.settings import SharingConfig, load_recipe, parse_rules, resolve
from onnxdc.report import build_report
from onnxdc.stages.positions import mask_symbols, relative_symbols
from onnxdc.stages.prune import PruneConfig, prune, prune_global
from onnxdc.stages.quantize import ShareConfig, inertia, kmeans_1d

MODELS = Path(__file__).resolve().parent.parent / "models"


def laplace(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0, 0.05, n).astype(np.float32)


# --------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("n", [1, 7, 1000, 12345])
def test_sparsity_rule_hits_target(sparsity: float, n: int) -> None:
    w = laplace(n, seed=n)
    keep = prune(w, config=PruneConfig(sparsity=sparsity))
    assert abs(int((~keep).sum()) - sparsity * n) <= 1
    # the dropped weights are the smallest ones
    if keep.any() and (~keep).any():
        assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()


@pytest.mark.parametrize("q", [0.0, 0.3, 0.7, 1.5])
def test_std_rule_hits_target(q: float) -> None:
    w = laplace(5000, seed=3)
    keep = prune(w, config=PruneConfig(std_threshold=q))
    expected = int((np.abs(w) < q * np.std(w.astype(np.float64))).sum())
    assert abs(int((~keep).sum()) - expected) <= 1


def test_global_rule_hits_overall_target_with_one_threshold() -> None:
    ws = [laplace(1000, 1), laplace(3000, 2) * 3, laplace(500, 3) * 0.2]
    masks = prune_global(ws, sparsity=0.8)
    dropped = sum(int((~m).sum()) for m in masks)
    assert abs(dropped - 0.8 * 4500) <= len(ws)
    kept_min = min(np.abs(w[m]).min() for w, m in zip(ws, masks) if m.any())
    dropped_max = max(np.abs(w[~m]).max() for w, m in zip(ws, masks) if (~m).any())
    assert dropped_max <= kept_min
    assert (~masks[2]).mean() > (~masks[1]).mean()  # the small-magnitude layer loses more


def test_existing_zeros_never_survive() -> None:
    w = np.array([0.0, 1.0, -2.0, 0.0], dtype=np.float32)
    assert prune(w, config=PruneConfig()).tolist() == [False, True, True, False]


@pytest.mark.parametrize("kwargs", [{"sparsity": 1.0}, {"sparsity": -0.1}, {"std_threshold": -1.0},
                                    {"sparsity": 0.5, "std_threshold": 0.5}, {"global_": True}])
def test_bad_prune_settings(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        PruneConfig(**kwargs)


# --------------------------------------------------------------------------- weight sharing


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("init", ["linear", "density", "forgy"])
def test_kmeans_bounds_and_no_zero(bits: int, init: str) -> None:
    v = laplace(4000, seed=bits)
    v = v[v != 0]
    c = kmeans_1d(v, config=ShareConfig(bits=bits, init=init))
    assert 1 <= c.codebook.size <= 2 ** bits
    assert not np.any(c.codebook == 0)
    assert np.all(np.diff(c.codebook.astype(np.float64)) > 0)
    assert c.indices.max() < c.codebook.size
    # every value goes to its nearest stored centroid
    d = np.abs(v[:, None].astype(np.float64) - c.codebook.astype(np.float64)[None, :])
    assert np.allclose(d[np.arange(v.size), c.indices], d.min(axis=1))


@pytest.mark.parametrize("init", ["linear", "density", "forgy"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_no_worse_than_sklearn_with_same_init(init: str, seed: int) -> None:
    from sklearn.cluster import KMeans

    from onnxdc.stages.quantize import init_centroids

    v = np.random.default_rng(seed).standard_normal(3000).astype(np.float32)
    cfg = ShareConfig(bits=4, init=init, seed=seed)
    ours = kmeans_1d(v, config=cfg)
    start = init_centroids(np.sort(v.astype(np.float64)), 16, init, seed=seed)
    sk = KMeans(n_clusters=start.size, init=start.reshape(-1, 1), n_init=1, algorithm="lloyd",
                max_iter=300, tol=0).fit(v.reshape(-1, 1).astype(np.float64))
    assert inertia(v, ours) <= sk.inertia_ * (1 + 1e-6) + 1e-9


def test_kmeans_few_distinct_values_and_float16_codebook() -> None:
    v = np.array([0.5, 0.5, -0.25, 0.5], dtype=np.float32)
    c = kmeans_1d(v, config=ShareConfig(bits=8))
    assert sorted(c.codebook.tolist()) == [-0.25, 0.5]
    np.testing.assert_array_equal(c.values(), v)
    tiny = np.array([1e-9, -1e-9, 2e-9], dtype=np.float32)  # underflows in float16
    c16 = kmeans_1d(tiny, config=ShareConfig(bits=2, codebook_dtype="float16"))
    assert c16.codebook.dtype == np.float16 and not np.any(c16.codebook == 0)


def test_bad_share_settings() -> None:
    for kwargs in ({"bits": 0}, {"bits": 9}, {"init": "kmeans++"}, {"codebook_dtype": "int8"}):
        with pytest.raises(ConfigError):
            ShareConfig(**kwargs)


# --------------------------------------------------------------------------- positions


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [np.zeros(0, bool), np.zeros(100, bool), np.ones(100, bool), np.eye(1, 1000, 999, dtype=bool)[0],
            np.eye(1, 1000, 0, dtype=bool)[0], rng.random(5000) < 0.1, rng.random(5000) < 0.9,
            rng.random(70000) < 0.001]


@pytest.mark.parametrize("mask", _masks(), ids=lambda m: f"n{m.size}-k{int(m.sum())}")
@pytest.mark.parametrize("bits", [1, 2, 5, 8])
def test_relative_positions_round_trip(mask: np.ndarray, bits: int) -> None:
    pos = np.flatnonzero(mask)
    syms = relative_symbols(pos, bits=bits)
    assert syms.max(initial=0) < 2 ** bits
    back = decode_relative(syms, bits=bits, numel=mask.size, nnz=pos.size, name="t")
    np.testing.assert_array_equal(back, pos)


@pytest.mark.parametrize("mask", _masks(), ids=lambda m: f"n{m.size}-k{int(m.sum())}")
def test_mask_positions_round_trip(mask: np.ndarray) -> None:
    pos = np.flatnonzero(mask)
    back = decode_mask(mask_symbols(mask), numel=mask.size, nnz=pos.size, name="t")
    np.testing.assert_array_equal(back, pos)


# --------------------------------------------------------------------------- recipes


def test_recipe_rules_later_wins_and_unknown_keys_rejected(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[rule]]\nmatch = "fc*"\nbits = 3\nsparsity = 0.5\n'
                      '[[rule]]\nmatch = "fc2*"\nbits = 6\ncoder = "huffman+zstd"\n')
    cfg = SharingConfig(sparsity=0.9, rules=load_recipe(recipe))
    s1, s2, s3 = (resolve(n, "fc", cfg) for n in ("fc1.weight", "fc2.weight", "conv1.weight"))
    assert (s1.share.bits, s1.prune.sparsity) == (3, 0.5)
    assert (s2.share.bits, s2.prune.sparsity, s2.coders[0]["id"]) == (6, 0.5, "chain")
    assert (s3.share.bits, s3.prune.sparsity) == (5, 0.9)
    with pytest.raises(ConfigError, match="unknown key.*sparsty"):
        parse_rules({"rule": [{"match": "*", "sparsty": 0.5}]})
    with pytest.raises(ConfigError, match="unknown top-level"):
        parse_rules({"rules": []})
    with pytest.raises(ConfigError, match="bits"):
        parse_rules({"rule": [{"match": "*", "bits": 12}]})
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_recipe(bad)


# --------------------------------------------------------------------------- selection


def _graph_model(nodes, inits, inputs, outputs) -> onnx.ModelProto:  # noqa: ANN001
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_selection_skips_shapes_and_indices_and_follows_passthrough() -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    wt = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "wt")
    emb = numpy_helper.from_array(rng.standard_normal((100, 32)).astype(np.float32), "emb")
    shape = numpy_helper.from_array(np.array([1, 4096], dtype=np.int64), "shape")
    scales = numpy_helper.from_array(rng.standard_normal(2048).astype(np.float32), "scales")
    const_w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "cw")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h1"]),
        helper.make_node("Transpose", ["wt"], ["wt_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["h1", "wt_t"], ["h2"]),
        helper.make_node("Constant", [], ["cw_out"], value=const_w),
        helper.make_node("MatMul", ["h2", "cw_out"], ["h3"]),
        helper.make_node("Reshape", ["h3", "shape"], ["h4"]),
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
        helper.make_node("Mul", ["scales", "scales"], ["s2"]),
    ]
    model = _graph_model(
        nodes, [w, wt, emb, shape, scales],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("h4", "e", "s2")])
    cands = find_candidates(model)
    names = {c.ref.proto.name or c.ref.path: c.kind for c in cands.values()}
    assert names == {"w": "fc", "wt": "fc", "emb": "embedding", "cw": "fc"}


def _fp_model(dtype: int, np_dtype: type) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((128, 64)).astype(np.float32)
    t = helper.make_tensor("w", dtype, w.shape, w.astype(np_dtype).tobytes(), raw=True)
    return _graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], [t],
                        [helper.make_tensor_value_info("x", dtype, [2, 128])],
                        [helper.make_tensor_value_info("y", dtype, [2, 64])])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_half_precision_weights_come_back_in_their_dtype(dtype: str) -> None:
    import ml_dtypes

    onnx_type = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
                 "bfloat16": TensorProto.BFLOAT16}[dtype]
    np_type = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    model = _fp_model(onnx_type, np_type)
    res = compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.5, bits=4)))
    out = decompress(res.data)
    t = out.graph.initializer[0]
    assert t.data_type == onnx_type
    arr = numpy_helper.to_array(t)
    assert arr.dtype == np.dtype(np_type)
    np.testing.assert_array_equal(arr.view(np.uint8), res.quantized["w"].view(np.uint8))
    assert len(np.unique(arr[arr != 0].astype(np.float64))) <= 16  # (np.unique mishandles float16)


# --------------------------------------------------------------------------- the pipeline


@pytest.mark.parametrize("positions", ["auto", "relative", "mask", "dense"])
@pytest.mark.parametrize("coder", ["auto", "raw", "huffman", "zstd", "huffman+zstd"])
def test_decoded_weights_equal_in_memory_quantized(positions: str, coder: str) -> None:
    model = load_model(MODELS / "lenet300.onnx")
    sharing = SharingConfig(sparsity=0.8, bits=4, positions=positions, coder=coder)
    res = compress(model, config=CompressConfig(sharing=sharing))
    out = {t.name: numpy_helper.to_array(t) for t in decompress(res.data).graph.initializer}
    assert set(res.quantized) == {"fc1.weight", "fc2.weight"}
    for name, q in res.quantized.items():
        np.testing.assert_array_equal(out[name], q)
        assert abs((q == 0).mean() - 0.8) < 1e-3
        assert len(np.unique(q[q != 0])) <= 16
    ref = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for name in ("fc3.weight", "fc1.bias"):  # small and bias tensors stay exact
        np.testing.assert_array_equal(out[name], ref[name])


@pytest.mark.parametrize("sharing", [
    SharingConfig(std_threshold=0.7, bits=5, init="density"),
    SharingConfig(sparsity=0.9, global_prune=True, bits=3, init="forgy", codebook_dtype="float16"),
    SharingConfig(bits=2, include_bias=True, min_elements=16),
    SharingConfig(sparsity=0.999, bits=1),
])
def test_pipeline_variants_round_trip(sharing: SharingConfig) -> None:
    model = load_model(MODELS / "lenet5.onnx")
    res = compress(model, config=CompressConfig(sharing=sharing))
    out = {t.name: numpy_helper.to_array(t) for t in decompress(res.data).graph.initializer}
    assert res.quantized
    for name, q in res.quantized.items():
        np.testing.assert_array_equal(out[name], q)


def test_lenet300_ratio_and_report_adds_up() -> None:
    model = load_model(MODELS / "lenet300.onnx")
    res = compress(model, config=CompressConfig(sharing=SharingConfig(sparsity=0.9, bits=5)))
    rep = build_report(res.container)
    assert rep.file_bytes == len(res.data)
    assert rep.tensor_stored_bytes + rep.skeleton_stored_bytes + rep.overhead_bytes == len(res.data)
    float_weight_bytes = 266_610 * 4
    assert sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer) == float_weight_bytes
    assert float_weight_bytes / len(res.data) >= 30.0
    assert rep.tensor_original_bytes > rep.tensor_pruned_bytes > rep.tensor_shared_bytes > rep.tensor_stored_bytes


def test_compare_coders_rows() -> None:
    model = load_model(MODELS / "lenet300.onnx")
    rows = compare_coders(model, sharing=SharingConfig(sparsity=0.9, bits=5))
    assert [r.coder for r in rows[1:-3]] == list(SPECS)
    assert [r.coder for r in rows[-3:]] == ["dense entropy", "dense ctx entropy", "dense rans-ctx"]
    dense_h0, dense_hctx, dense_ctx = rows[-3:]
    # The context entropy is at most the order-0 one; rans-ctx writes within 2% of it plus its models.
    assert dense_hctx.index_bytes <= dense_h0.index_bytes
    assert dense_hctx.index_bytes <= dense_ctx.index_bytes <= 1.02 * dense_hctx.index_bytes + 300
    assert dense_h0.position_bytes == dense_ctx.position_bytes == 0
    entropy = rows[0]
    huff = next(r for r in rows if r.coder == "huffman")
    raw = next(r for r in rows if r.coder == "raw")
    # Huffman is within 1 bit/symbol of order-0 entropy, and beats fixed width on these streams
    assert entropy.index_bytes <= huff.index_bytes <= entropy.index_bytes + huff.weights / 8 + 2048
    assert huff.total_bytes < raw.total_bytes
    assert raw.index_bytes >= (raw.weights * 5) // 8


@pytest.mark.parametrize("sharing", [None, SharingConfig(sparsity=0.9, bits=5)], ids=["lossless", "shared"])
def test_parallel_jobs_give_the_same_bytes(sharing: SharingConfig | None) -> None:
    model = load_model(MODELS / "lenet5.onnx")
    one = compress(model, config=CompressConfig(sharing=sharing, jobs=1)).data
    assert compress(model, config=CompressConfig(sharing=sharing, jobs=3)).data == one
    with pytest.raises(ConfigError):
        CompressConfig(jobs=0)


def test_stream_choice_prefers_the_compiled_decoder_within_the_margin() -> None:
    """Huffman (numpy decoder) must beat the compiled-decoder coders by SLOW_DECODE_MARGIN to win."""
    from onnxdc.pipeline.streams import PROBE_MIN_SYMBOLS, SLOW_DECODE_MARGIN, encode_best

    rng = np.random.default_rng(3)
    plane = np.minimum(rng.geometric(0.35, size=200_000) + 100, 255).astype(np.uint8)  # memoryless
    huff, lit = {"id": "huffman"}, {"id": "zstd-literals"}
    sizes = {c["id"]: len(encode_best(plane, [c]).data) for c in (huff, lit)}
    assert sizes["huffman"] < sizes["zstd-literals"] < (1 + SLOW_DECODE_MARGIN) * sizes["huffman"]
    for order in ([huff, lit], [lit, huff]):
        assert encode_best(plane, order).coder == lit
    # Below PROBE_MIN_SYMBOLS bytes alone decide.
    short = plane[:PROBE_MIN_SYMBOLS - 1]
    assert len(encode_best(short, [huff]).data) < len(encode_best(short, [lit]).data)
    assert encode_best(short, [lit, huff]).coder["id"] == "huffman"


def test_stream_choice_frees_its_candidates_without_the_cycle_collector() -> None:
    """Nothing encode_best builds may hold the symbols (or candidate outputs) in a reference cycle:
    on a large model the cyclic GC runs too late, and those pinned hundreds of MB."""
    import gc
    import weakref

    from onnxdc.pipeline.planes import plane_candidates
    from onnxdc.pipeline.settings import AUTO_INDEX_CODERS
    from onnxdc.pipeline.streams import encode_best

    rng = np.random.default_rng(4)
    gc.collect()
    gc.disable()
    try:
        for candidates in (plane_candidates(19), [{**c, "bits": 4} if c["id"] == "raw" else c
                                                  for c in AUTO_INDEX_CODERS]):
            symbols = rng.integers(0, 16, size=100_000).astype(np.uint8)
            alive = weakref.ref(symbols)
            stream = encode_best(symbols, candidates)
            del symbols
            assert alive() is None, "encode_best left the symbols referenced"
            assert stream.count == 100_000
    finally:
        gc.enable()
