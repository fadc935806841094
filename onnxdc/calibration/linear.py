"""Layers as linear maps: ``Y = X @ W`` for the weight of a Gemm, MatMul, Conv or recurrent op.

Calibration-aware compression needs, for each weight tensor, the matrix ``X`` of the inputs it
multiplies and a view of the tensor as ``W`` (in × out), so that the layer's output error can be
measured and minimized by least squares. :class:`LinearForm` records how to get both from the
node's activation input, and how to map a matrix back to the tensor's shape. Ops without such a
form (Gather, ConvTranspose, a GRU's R without linear_before_reset, unsupported attributes) return None and are
compressed by plain magnitude pruning; the report names them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper


@dataclass(frozen=True)
class LinearForm:
    """How one weight tensor acts on its node's activation input.

    Attributes:
        node: the consuming node.
        activation: name of the value the weight multiplies.
        kind: ``gemm_b`` (X @ W), ``gemm_a`` (W @ X), ``conv`` or ``rnn_w``.
        groups: independent linear problems the tensor splits into (conv groups, rnn directions).
        attrs: the attributes the kind needs (transposes, alpha, conv geometry, rnn layout).
    """

    node: onnx.NodeProto
    activation: str
    kind: str
    groups: int
    attrs: dict
    extra: tuple[str, ...] = ()  # further values the inputs are built from (a recurrent op's initial_h)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every value :func:`input_matrices` needs, in its argument order."""
        return (self.activation, *self.extra)


def linear_form(node: onnx.NodeProto, weight_pos: int, weight_shape: tuple[int, ...]) -> LinearForm | None:
    """The linear form of the weight at input ``weight_pos`` of ``node``, or None if it has none."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    op = node.op_type
    if op == "Gemm" and weight_pos in (0, 1) and len(weight_shape) == 2:
        other = node.input[1 - weight_pos]
        attrs = {"transA": int(a.get("transA", 0)), "transB": int(a.get("transB", 0)),
                 "alpha": float(a.get("alpha", 1.0))}
        return LinearForm(node, other, "gemm_b" if weight_pos == 1 else "gemm_a", 1, attrs)
    if op == "MatMul" and weight_pos in (0, 1) and len(weight_shape) == 2:
        other = node.input[1 - weight_pos]
        kind = "gemm_b" if weight_pos == 1 else "gemm_a"
        return LinearForm(node, other, kind, 1, {"transA": 0, "transB": 0, "alpha": 1.0, "matmul": True})
    if op == "Conv" and weight_pos == 1 and len(weight_shape) == 4:
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        attrs = {"strides": list(a.get("strides", [1, 1])), "dilations": list(a.get("dilations", [1, 1])),
                 "pads": list(a.get("pads", [0, 0, 0, 0])), "auto_pad": auto_pad,
                 "kernel": list(weight_shape[2:])}
        return LinearForm(node, node.input[0], "conv", int(a.get("group", 1)), attrs)
    if op in ("GRU", "LSTM", "RNN") and weight_pos == 1 and len(weight_shape) == 3:
        return LinearForm(node, node.input[0], "rnn_w", int(weight_shape[0]), {"layout": int(a.get("layout", 0))})
    if op in ("GRU", "LSTM", "RNN") and weight_pos == 2 and len(weight_shape) == 3:
        return _recurrent_form(node, a, weight_shape)
    return None


def _recurrent_form(node: onnx.NodeProto, a: dict, weight_shape: tuple[int, ...]) -> LinearForm | None:
    """R multiplies the previous hidden state, which the op's output Y holds, shifted by one step.

    Not for a GRU with ``linear_before_reset=0`` (its candidate gate multiplies ``r ⊙ h``, not
    ``h``), nor with ``sequence_lens`` (padded steps), nor when Y is not produced.
    """
    if node.op_type == "GRU" and not int(a.get("linear_before_reset", 0)):
        return None
    if len(node.input) > 4 and node.input[4]:
        return None
    if not node.output or not node.output[0]:
        return None
    direction = a.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    h0 = node.input[5] if len(node.input) > 5 and node.input[5] else ""
    attrs = {"layout": int(a.get("layout", 0)), "direction": direction, "hidden": int(weight_shape[2])}
    return LinearForm(node, node.output[0], "rnn_r", int(weight_shape[0]), attrs, (h0,) if h0 else ())


def weight_matrices(form: LinearForm, w: np.ndarray) -> list[np.ndarray]:
    """The weight tensor as one (in × out) matrix per group."""
    if form.kind == "gemm_b":
        return [w.T if form.attrs["transB"] else w]
    if form.kind == "gemm_a":
        return [(w.T if form.attrs["transA"] else w).T]
    if form.kind == "conv":
        cout = w.shape[0]
        per = cout // form.groups
        return [w[g * per:(g + 1) * per].reshape(per, -1).T for g in range(form.groups)]
    if form.kind in ("rnn_w", "rnn_r"):
        return [w[d].T for d in range(w.shape[0])]
    raise ValueError(form.kind)


def weight_tensor(form: LinearForm, mats: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`weight_matrices`."""
    if form.kind == "gemm_b":
        m = mats[0]
        return np.ascontiguousarray(m.T if form.attrs["transB"] else m)
    if form.kind == "gemm_a":
        m = mats[0].T
        return np.ascontiguousarray(m.T if form.attrs["transA"] else m)
    if form.kind == "conv":
        per = shape[0] // form.groups
        return np.concatenate([m.T.reshape((per, *shape[1:])) for m in mats])
    if form.kind in ("rnn_w", "rnn_r"):
        return np.stack([m.T for m in mats])
    raise ValueError(form.kind)


def input_matrices(form: LinearForm, x: np.ndarray, *extra: np.ndarray) -> list[np.ndarray]:
    """The activation as one (rows × in) matrix per group, so that ``Y_g = X_g @ W_g``.

    ``extra`` holds the values of ``form.extra`` (a recurrent op's initial_h), in order.
    """
    if form.kind == "gemm_b":
        xm = x.T if form.attrs["transA"] and not form.attrs.get("matmul") else x
        xm = xm.reshape(-1, xm.shape[-1]) * form.attrs["alpha"]
        return [xm]
    if form.kind == "gemm_a":
        # Y = W @ X  ->  Y^T = X^T @ W^T
        xm = x.T if form.attrs["transB"] and not form.attrs.get("matmul") else x
        xm = np.swapaxes(xm, -1, -2).reshape(-1, xm.shape[-2]) * form.attrs["alpha"]
        return [xm]
    if form.kind == "conv":
        return im2col_groups(x, form)
    if form.kind == "rnn_w":
        seq = x if form.attrs["layout"] == 0 else np.swapaxes(x, 0, 1)
        flat = seq.reshape(-1, seq.shape[-1])
        return [flat] * form.groups
    if form.kind == "rnn_r":
        return _previous_states(form, x, extra[0] if extra else None)
    raise ValueError(form.kind)


def _previous_states(form: LinearForm, y: np.ndarray, h0: np.ndarray | None) -> list[np.ndarray]:
    """Per direction, the hidden state before each step: (seq*batch, hidden) rows."""
    if form.attrs["layout"]:  # [batch, seq, dirs, hidden] -> [seq, dirs, batch, hidden]
        y = y.transpose(1, 2, 0, 3)
        h0 = None if h0 is None else h0.transpose(1, 0, 2)
    seq, dirs, batch, hidden = y.shape
    if h0 is None:
        h0 = np.zeros((dirs, batch, hidden), dtype=y.dtype)
    out = []
    for d in range(dirs):
        reverse = form.attrs["direction"] == "reverse" or (form.attrs["direction"] == "bidirectional" and d == 1)
        if reverse:  # steps run from the last to the first: h before step t is Y[t+1]
            prev = np.concatenate([y[1:, d], h0[d][None]], axis=0)
        else:
            prev = np.concatenate([h0[d][None], y[:-1, d]], axis=0)
        out.append(prev.reshape(-1, hidden))
    return out


def conv_pads(form: LinearForm, in_hw: tuple[int, int]) -> list[int]:
    """Explicit pads [top, left, bottom, right] for the conv's auto_pad setting."""
    mode = form.attrs["auto_pad"]
    if mode in ("NOTSET", ""):
        return list(form.attrs["pads"])
    if mode == "VALID":
        return [0, 0, 0, 0]
    pads_begin, pads_end = [], []
    for size, k, s, d in zip(in_hw, form.attrs["kernel"], form.attrs["strides"], form.attrs["dilations"]):
        out = -(-size // s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        pads_begin.append(small if mode == "SAME_UPPER" else big)
        pads_end.append(big if mode == "SAME_UPPER" else small)
    return pads_begin + pads_end


def conv_output(form: LinearForm, shape: tuple[int, ...]) -> tuple[list[int], int, int]:
    """(explicit pads, output height, output width) of a 2-D conv on an (N, C, H, W) input."""
    h, w = shape[2], shape[3]
    kh, kw = form.attrs["kernel"]
    sh, sw = form.attrs["strides"]
    dh, dw = form.attrs["dilations"]
    pads = conv_pads(form, (h, w))
    top, left, bottom, right = pads
    return pads, (h + top + bottom - (kh - 1) * dh - 1) // sh + 1, (w + left + right - (kw - 1) * dw - 1) // sw + 1


def padded(x: np.ndarray, form: LinearForm) -> tuple[np.ndarray, tuple[int, int], tuple[int, int],
                                                      tuple[int, int], int, int]:
    """A 2-D conv input padded as the conv pads it, with the kernel, strides, dilations and the
    output height and width: what unrolling its patches needs."""
    (top, left, bottom, right), oh, ow = conv_output(form, x.shape)
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    return (xp, tuple(form.attrs["kernel"]), tuple(form.attrs["strides"]), tuple(form.attrs["dilations"]),
            oh, ow)


def im2col_groups(x: np.ndarray, form: LinearForm) -> list[np.ndarray]:
    """Unfold a 2-D conv input (N, C, H, W) into per-group patch matrices (N*OH*OW, C/g*kh*kw).

    Patch columns are ordered (channel, kh, kw), matching ``weight.reshape(cout, -1)``.
    """
    n, c, _, _ = x.shape
    xp, (kh, kw), (sh, sw), (dh, dw), oh, ow = padded(x, form)
    # Written straight into the row-major patch layout: with one group, its matrix is a view.
    cols = np.empty((n, oh, ow, c, kh, kw), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            cols[:, :, :, :, i, j] = win.transpose(0, 2, 3, 1)
    per = c // form.groups
    return [cols[:, :, :, g * per:(g + 1) * per].reshape(n * oh * ow, per * kh * kw) for g in range(form.groups)]
