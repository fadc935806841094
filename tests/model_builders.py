"""Small ONNX models built with ``onnx.helper``, each holding things a lossless round trip must keep.

Every builder is deterministic (seeded) and returns a fresh ``ModelProto``. The runnable ones use
opset 21 / IR 10, which onnxruntime executes; :func:`dtype_zoo_model` holds a tensor of every data
type in every storage form and is only meant to be stored, checked and compared.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
IR_VERSION = 10
#: Element counts of the dtype zoo: small (below the 64-byte extraction threshold for every type)
#: and large (above it even for 2-bit types); both odd, so packed types end in a padded byte.
SMALL, LARGE = 5, 301
#: Bit patterns the float tensors of the zoo start with: NaN payloads (quiet and signalling), -0.0,
#: infinities, the smallest subnormal.
FLOAT_SPECIALS = {
    TensorProto.FLOAT: np.array([0x7FC00123, 0x7F800001, 0xFFC00000, 0x80000000, 0x7F800000, 0xFF800000, 0x00000001],
                                dtype="<u4"),
    TensorProto.DOUBLE: np.array([0x7FF8000000000123, 0x7FF0000000000001, 0x8000000000000000, 0x0000000000000001],
                                 dtype="<u8"),
    TensorProto.FLOAT16: np.array([0x7E01, 0x7C01, 0x8000, 0xFC00, 0x0001], dtype="<u2"),
    TensorProto.BFLOAT16: np.array([0x7FC1, 0x7F81, 0x8000, 0xFF80, 0x0001], dtype="<u2"),
}


def _model(graph: onnx.GraphProto, *, opsets: dict[str, int] | None = None, **kwargs: object) -> onnx.ModelProto:
    imports = [helper.make_opsetid(domain, version) for domain, version in (opsets or {"": OPSET}).items()]
    return helper.make_model(graph, opset_imports=imports, ir_version=IR_VERSION, producer_name="onnxdc-tests",
                             **kwargs)


def _floats(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _const(output: str, value: np.ndarray, name: str) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], name=name, value=numpy_helper.from_array(value, name))


# --------------------------------------------------------------------------- runnable models


def control_flow_model(seed: int = 1) -> onnx.ModelProto:
    """An If whose branches, and a Loop whose body, have their own initializers and big Constants.

    Inputs ``x`` float [2, 4], ``cond`` bool [], ``trip`` int64 []; output ``y`` float [2, 64].
    """
    rng = np.random.default_rng(seed)
    branch_out = helper.make_tensor_value_info("branch_y", TensorProto.FLOAT, [2, 64])

    def branch(tag: str, op: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", f"w_{tag}"], [f"xw_{tag}"]),
             _const(f"c_{tag}", _floats(rng, 64), f"const_{tag}"),
             helper.make_node(op, [f"xw_{tag}", f"c_{tag}"], ["branch_y"])],
            f"{tag}_branch", [], [branch_out],
            initializer=[numpy_helper.from_array(_floats(rng, 4, 64), f"w_{tag}"),
                         numpy_helper.from_array(_floats(rng, 2), f"unused_small_{tag}")])

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["v_in", "scale"], ["scaled"]),
         _const("shift", _floats(rng, 64), "body_const"),
         _const("steps", np.arange(100, dtype=np.int64), "body_int_const"),
         helper.make_node("Add", ["scaled", "shift"], ["v_out"])],
        "loop_body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2, 64])],
        initializer=[numpy_helper.from_array(_floats(rng, 64) * 0.5, "scale")])
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["branch_out"], then_branch=branch("then", "Add"),
                          else_branch=branch("else", "Sub")),
         helper.make_node("Loop", ["trip", "", "branch_out"], ["y"], body=body)],
        "control_flow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("trip", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 64])])
    return _model(graph)


def function_model(seed: int = 2) -> onnx.ModelProto:
    """A model-local function (with a Constant node inside) called twice, several opset domains."""
    rng = np.random.default_rng(seed)
    func = helper.make_function(
        "onnxdc.test", "AffineRelu", ["x", "w"], ["y"],
        [helper.make_node("MatMul", ["x", "w"], ["xw"]),
         _const("b", _floats(rng, 32), "bias_const"),
         helper.make_node("Add", ["xw", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        opset_imports=[helper.make_opsetid("", OPSET)], doc_string="affine map then relu")
    graph = helper.make_graph(
        [helper.make_node("AffineRelu", ["x", "w1"], ["h"], domain="onnxdc.test", name="call1"),
         helper.make_node("Identity", ["h"], ["h2"]),
         helper.make_node("AffineRelu", ["h2", "w2"], ["y"], domain="onnxdc.test", name="call2")],
        "with_function",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 32])],
        initializer=[numpy_helper.from_array(_floats(rng, 32, 32), "w1"),
                     numpy_helper.from_array(_floats(rng, 32, 32), "w2")])
    return _model(graph, opsets={"": OPSET, "onnxdc.test": 1, "ai.onnx.ml": 3, "com.microsoft": 1},
                  functions=[func])


def annotated_model(seed: int = 3) -> onnx.ModelProto:
    """Metadata, doc strings everywhere, value_info, a sparse initializer and a sparse Constant."""
    rng = np.random.default_rng(seed)
    dense = np.zeros((8, 16), dtype=np.float32)
    flat = np.sort(rng.choice(dense.size, size=40, replace=False)).astype(np.int64)
    dense.flat[flat] = _floats(rng, flat.size)
    sparse_init = helper.make_sparse_tensor(numpy_helper.from_array(dense.flat[flat].copy(), "s"),
                                            numpy_helper.from_array(flat, "s_indices"), [8, 16])
    small_values = np.array([1.5, -2.0], dtype=np.float32)
    sparse_const = helper.make_sparse_tensor(numpy_helper.from_array(small_values, "sc"),
                                             numpy_helper.from_array(np.array([3, 70], dtype=np.int64), "sc_idx"),
                                             [8, 16])
    w = numpy_helper.from_array(_floats(rng, 16, 16), "w")
    w.doc_string = "a weight with a doc string"
    # Sparse values are unused: no standard operator takes a sparse input, and the checker refuses
    # one where a dense tensor is expected (onnxruntime would densify it).
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["sc"], name="sparse_const", sparse_value=sparse_const),
         helper.make_node("MatMul", ["x", "w"], ["xw"], name="matmul", doc_string="node doc"),
         helper.make_node("Relu", ["xw"], ["y"], name="relu")],
        "annotated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16], doc_string="input doc")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 16])],
        initializer=[w], doc_string="graph doc",
        value_info=[helper.make_tensor_value_info("xw", TensorProto.FLOAT, ["rows", 16])],
        sparse_initializer=[sparse_init])
    model = _model(graph, doc_string="model doc", model_version=7, domain="org.onnxdc.tests")
    helper.set_model_props(model, {"author": "onnxdc tests", "license": "MIT", "note": "ünïcode ✓"})
    return model


def external_weights_model(seed: int = 4) -> onnx.ModelProto:
    """A two-layer MLP whose weights are big enough to go to an external data file."""
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
        initializer=[numpy_helper.from_array(_floats(rng, 48, 24), "w1"),
                     numpy_helper.from_array(_floats(rng, 48), "b1"),
                     numpy_helper.from_array(_floats(rng, 10, 48), "w2"),
                     numpy_helper.from_array(_floats(rng, 10), "b2"),
                     numpy_helper.from_array(np.arange(3, dtype=np.int64), "tiny")])
    return _model(graph)


# --------------------------------------------------------------------------- the dtype zoo


def zoo_dtypes() -> list[int]:
    """Every numeric ``TensorProto.DataType`` this onnx version can turn into numpy."""
    out = []
    for value in TensorProto.DataType.values():
        if value in (TensorProto.UNDEFINED, TensorProto.STRING):
            continue
        try:
            helper.tensor_dtype_to_np_dtype(value)
        except (KeyError, ValueError):
            continue
        out.append(value)
    return out


def raw_tensor(name: str, data_type: int, numel: int, rng: np.random.Generator) -> TensorProto:
    """A ``raw_data`` tensor of random values, float types starting with NaN payloads, -0.0 and infs.

    Packed sub-byte types get zero padding bits, as the checker requires.
    """
    nbytes = len(numpy_helper.from_array(np.zeros(numel, helper.tensor_dtype_to_np_dtype(data_type))).raw_data)
    if data_type == TensorProto.BOOL:
        raw = rng.integers(0, 2, nbytes, dtype=np.uint8).tobytes()
    else:
        raw = rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    specials = FLOAT_SPECIALS.get(data_type)
    if specials is not None:
        head = specials[:numel].tobytes()
        raw = head + raw[len(head):]
    t = helper.make_tensor(name, data_type, [numel], raw, raw=True)
    return numpy_helper.from_array(numpy_helper.to_array(t), name)


def typed_tensor(name: str, like: TensorProto) -> TensorProto:
    """The values of ``like`` stored in the typed field ONNX assigns to its type, not raw_data.

    ``float_data`` and ``double_data`` are packed fixed-width fields whose wire bytes are the
    little-endian values, so they are written as bytes: going through Python floats would quiet
    signalling NaNs.
    """
    field = helper.tensor_dtype_to_field(like.data_type)
    if field in ("float_data", "double_data"):
        t = TensorProto(name=name, data_type=like.data_type, dims=like.dims)
        t.MergeFromString(_packed_field(TensorProto.DESCRIPTOR.fields_by_name[field].number, like.raw_data))
        return t
    values = numpy_helper.to_array(like).flatten()
    return helper.make_tensor(name, like.data_type, like.dims, values, raw=False)


def _packed_field(number: int, payload: bytes) -> bytes:
    """Wire bytes of a length-delimited (packed) protobuf field."""
    out = bytearray([number << 3 | 2])
    n = len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def dtype_zoo_model(seed: int = 5) -> onnx.ModelProto:
    """Initializers of every data type, as raw_data and as typed fields, small and large, plus strings.

    Also a custom-domain node with a TENSORS attribute. The initializers are not consumed: the
    model is for storing and comparing, not for running.
    """
    rng = np.random.default_rng(seed)
    inits = []
    for data_type in zoo_dtypes():
        for numel in (SMALL, LARGE):
            raw = raw_tensor(f"{_dname(data_type)}_raw_{numel}", data_type, numel, rng)
            inits += [raw, typed_tensor(f"{_dname(data_type)}_typed_{numel}", raw)]
    for numel in (SMALL, LARGE):
        words = [bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8)) for _ in range(numel)]
        inits.append(helper.make_tensor(f"STRING_{numel}", TensorProto.STRING, [numel], words))
    inits.append(helper.make_tensor("FLOAT_empty", TensorProto.FLOAT, [0, 3], b"", raw=True))
    inits.append(helper.make_tensor("FLOAT_scalar", TensorProto.FLOAT, [], [1.25]))
    tensors_attr = helper.make_attribute("blobs", [numpy_helper.from_array(_floats(rng, 40), "blob0"),
                                                   numpy_helper.from_array(np.arange(7, dtype=np.int8), "blob1")])
    custom = helper.make_node("Blob", ["x"], ["y"], domain="onnxdc.test")
    custom.attribute.append(tensors_attr)
    graph = helper.make_graph(
        [custom], "dtype_zoo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx.defs.onnx_opset_version()),
                                                   helper.make_opsetid("onnxdc.test", 1)],
                             producer_name="onnxdc-tests")


def _dname(data_type: int) -> str:
    return TensorProto.DataType.Name(data_type)


def training_info_model(seed: int = 6) -> onnx.ModelProto:
    """A model with a training_info whose initialization and algorithm graphs hold tensors."""
    rng = np.random.default_rng(seed)
    model = external_weights_model(seed)
    init = helper.make_graph(
        [_const("w1_init", _floats(rng, 48, 24), "init_const")], "initialization", [],
        [helper.make_tensor_value_info("w1_init", TensorProto.FLOAT, [48, 24])])
    algo = helper.make_graph(
        [helper.make_node("Mul", ["w1", "lr"], ["w1_step"])], "algorithm", [],
        [helper.make_tensor_value_info("w1_step", TensorProto.FLOAT, [48, 24])],
        initializer=[numpy_helper.from_array(np.full(math.prod((48, 24)), 0.01, np.float32).reshape(48, 24), "lr")])
    info = model.training_info.add()
    info.initialization.CopyFrom(init)
    info.algorithm.CopyFrom(algo)
    info.initialization_binding.add(key="w1", value="w1_init")
    info.update_binding.add(key="w1", value="w1_step")
    return model


def few_samples_model(seed: int = 1) -> tuple[onnx.ModelProto, dict[str, np.ndarray], np.random.Generator]:
    """One 64 × 8 MatMul and 16 samples of its input: too few for least squares to generalize.

    Returns the model, the samples and the generator (for fresh inputs drawn after them).
    """
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((64, 8)) * 0.2).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "few",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal((16, 64)).astype(np.float32)}, rng


def hidden_state_model(seed: int = 0) -> onnx.ModelProto:
    """A 32 × 32 MatMul and Tanh on ``(batch, 4, 32)`` inputs: its output is a hidden state with no
    class axis, so top-1 rules cannot judge it."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array((rng.standard_normal((32, 32)) * 0.2).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["state"])],
                          "hidden", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 32])],
                          [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", 4, 32])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def small_conv_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A 5 × 5 Conv (1 -> 16 channels) on 28 × 28 maps, pooled, and a 16 -> 10 Gemm, with 96 samples:
    large enough maps that onnxruntime splits the convolution across its threads, small enough for
    the automatic mode to take seconds."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((16, 1, 5, 5)) * 0.3).astype(np.float32), "conv.w"),
             numpy_helper.from_array((rng.standard_normal((10, 16)) * 0.5).astype(np.float32), "fc.w")]
    nodes = [helper.make_node("Conv", ["x", "conv.w"], ["c"], pads=[2, 2, 2, 2]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.w"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return model, {"x": rng.standard_normal((96, 1, 28, 28)).astype(np.float32)}
