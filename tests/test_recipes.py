"""Recipe rules by name glob and by op type, and the notice for rules that match nothing.

A tensor's op types are those of the nodes reading it as a weight (through Identity / Cast /
Transpose / Reshape), a Constant-node weight takes its readers' op types, and a tensor read by two
op types has both: the model below has one tensor of each case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxdc.api import recipe_toml
from onnxdc.errors import ConfigError
from onnxdc.pipeline.plan import plan_sharing, tensor_label
from onnxdc.pipeline.settings import Rule, SharingConfig, load_recipe, parse_rules


def op_model() -> onnx.ModelProto:
    """``conv.w`` read by a Conv; ``fc.w`` by a Gemm; ``both.w`` by a MatMul and (transposed) a
    Gemm; ``branch.w`` a Constant read by a MatMul inside an If branch; ``small.w`` a 4-element Gemm
    weight."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    branch_w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "branch.w")
    out16 = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 16])
    then = helper.make_graph([helper.make_node("Constant", [], ["bw"], value=branch_w),
                              helper.make_node("MatMul", ["h2", "bw"], ["b"])], "then", [], [out16])
    other = helper.make_graph([helper.make_node("Identity", ["h2"], ["b"])], "else", [], [out16])
    nodes = [
        helper.make_node("Conv", ["x", "conv.w"], ["c"]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.w"], ["h"], transB=1),
        helper.make_node("MatMul", ["h", "both.w"], ["h1"]),
        helper.make_node("Transpose", ["both.w"], ["both.t"], perm=[1, 0]),
        helper.make_node("Gemm", ["h1", "both.t"], ["h2"], transB=1),
        helper.make_node("If", ["cond"], ["y0"], then_branch=then, else_branch=other),
        helper.make_node("Gemm", ["y0", "small.w"], ["y"], transB=1),
    ]
    g = helper.make_graph(nodes, "ops",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 1, 6, 6]),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1])],
                          [init("conv.w", 4, 1, 3, 3), init("fc.w", 16, 64), init("both.w", 16, 16),
                           init("small.w", 1, 16)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def bits_by_tensor(rules: tuple[Rule, ...], *, notices: list[str] | None = None,
                   min_elements: int = 32) -> dict[str, int]:
    """Each planned tensor's index bits under ``--bits 8`` and ``rules``."""
    sharing = SharingConfig(bits=8, min_elements=min_elements, rules=rules)
    plans = plan_sharing(op_model(), sharing, notice=None if notices is None else notices.append)
    return {tensor_label(p.candidate.ref): p.settings.share.bits for p in plans.values()}


def test_op_type_rules_follow_the_reading_ops() -> None:
    onnx.checker.check_model(op_model(), full_check=True)
    rules = parse_rules({"rule": [{"op_type": "Gemm", "bits": 3},
                                  {"op_type": ["Conv"], "bits": 2},
                                  {"op_type": "MatMul", "match": "branch*", "bits": 6}]})
    assert bits_by_tensor(rules) == {
        "conv.w": 2,    # Conv
        "fc.w": 3,      # Gemm
        "both.w": 3,    # MatMul and Gemm (through a Transpose): the Gemm rule matches
        "branch.w": 6,  # a Constant inside an If branch: its reader's op type, MatMul, not Constant
    }


def test_a_rule_with_both_selectors_needs_both_and_later_rules_win() -> None:
    rules = parse_rules({"rule": [{"match": "*", "bits": 4},
                                  {"match": "both*", "op_type": "Conv", "bits": 2},  # both.w is no Conv
                                  {"match": "*.w", "op_type": ["MatMul", "Conv"], "bits": 5}]})
    assert bits_by_tensor(rules) == {"conv.w": 5, "fc.w": 4, "both.w": 5, "branch.w": 5}


@pytest.mark.parametrize("rule, message", [
    ({"bits": 4}, "rule 0 needs a 'match' glob on tensor names or an 'op_type'"),
    ({"op_type": "Relu", "bits": 4}, "op_type 'Relu' has no weights onnxdc compresses; choose among Conv,"),
    ({"op_type": "conv", "bits": 4}, "op_type 'conv' has no weights"),
    ({"op_type": [], "bits": 4}, "'op_type' must be a string or a non-empty list of strings, got []"),
    ({"op_type": 3, "bits": 4}, "'op_type' must be a string or a non-empty list of strings, got 3"),
    ({"match": 3, "bits": 4}, "needs a string 'match' glob, got 3"),
], ids=["no-selector", "op-without-weights", "lowercase", "empty-list", "not-a-string", "match-not-a-string"])
def test_bad_selectors_are_refused(rule: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=r"^r\.toml: ") as err:
        parse_rules({"rule": [rule]}, source="r.toml")
    assert message in str(err.value)


def test_op_type_rules_survive_the_recipe_file_and_the_container_record(tmp_path: Path) -> None:
    rules = (Rule(None, {"bits": 3}, ("Gemm",)), Rule("b*", {"lossless": True}, ("Conv", "MatMul")),
             Rule("fc.w", {"sparsity": 0.5}))
    path = tmp_path / "r.toml"
    path.write_text(recipe_toml(rules))
    assert load_recipe(path) == rules
    assert SharingConfig(rules=rules).to_json()["rules"] == [
        {"op_type": "Gemm", "bits": 3}, {"match": "b*", "op_type": ["Conv", "MatMul"], "lossless": True},
        {"match": "fc.w", "sparsity": 0.5}]


def test_rules_matching_nothing_are_noticed() -> None:
    notices: list[str] = []
    rules = parse_rules({"rule": [{"match": "fc.w", "bits": 4},      # matches
                                  {"match": "fc1*", "bits": 4},      # a typo: no such tensor
                                  {"op_type": "LSTM", "bits": 4},    # no LSTM in the model
                                  {"match": "small*", "bits": 2},    # only a tensor too small to share
                                  {"match": "fc.w", "op_type": "Conv", "bits": 2}]})  # fc.w is no Conv
    bits = bits_by_tensor(rules, notices=notices)
    assert bits["fc.w"] == 4 and "small.w" not in bits
    assert notices == [
        'recipe rule 1 (match = "fc1*") matches no weight tensor',
        'recipe rule 2 (op_type = "LSTM") matches no weight tensor',
        'recipe rule 3 (match = "small*") matches only tensors under 32 elements, which are stored exactly '
        '(--min-elements)',
        'recipe rule 4 (match = "fc.w", op_type = "Conv") matches no weight tensor',
    ]
    quiet: list[str] = []
    bits_by_tensor(rules[:1], notices=quiet)
    assert quiet == []  # every rule matched: nothing to say
