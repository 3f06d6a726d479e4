"""Evaluate a :class:`Graph` directly with the numerics golden functions (no commands).

The program the compiler emits must give exactly these values on the golden model; the
functions are those of :mod:`firmware.numerics`, so this is the specification of what each layer
computes, independent of tiling, scheduling and allocation.
"""

from __future__ import annotations

import numpy as np

from .. import numerics
from .ir import Add, Alias, AvgPool, Conv, Graph, MaxPool

__all__ = ["interpret", "evaluate", "real_before_rounding"]


def evaluate(op, tensors: dict, vals: dict) -> np.ndarray:
    """One IR operation's int8 NHWC output, from the int8 values of its inputs in ``vals``."""
    t = tensors
    if isinstance(op, Conv):
        x, y = t[op.x], t[op.out]
        return numerics.qlinear_conv(vals[op.x], x.scale, x.zp, op.w, op.w_scale, op.bias,
                                     y.scale, y.zp, op.stride, op.pad, op.lo, op.hi)
    if isinstance(op, Add):
        a, b, y = t[op.a], t[op.b], t[op.out]
        return numerics.qlinear_add(vals[op.a], a.scale, a.zp, vals[op.b], b.scale, b.zp,
                                    y.scale, y.zp, op.lo, op.hi)
    if isinstance(op, MaxPool):
        return numerics.maxpool(vals[op.x], op.kernel, op.stride, op.pad)
    if isinstance(op, AvgPool):
        x, y = t[op.x], t[op.out]
        return numerics.global_avgpool(vals[op.x], x.scale, x.zp, y.scale, y.zp)
    if isinstance(op, Alias):
        return vals[op.x]
    raise TypeError(f"unknown IR op {op!r}")


def real_before_rounding(op, tensors: dict, vals: dict):
    """The exact real value (float64) each output element of ``op`` rounds, before its zero
    point and clamp, from the int8 values of its inputs in ``vals``; None for the operations
    that do not round (max pool, aliases).

    A convolution's is ``acc * x_scale * w_scale[c] / y_scale``, an add's ``(a - a_zp) * ra +
    (b - b_zp) * rb``, a global average pool's ``(sum - hw * x_zp) * x_scale / (hw * y_scale)``.
    Two implementations that both round correctly can only disagree where this value is close
    to a half-integer; tests and benchmarks use it to check that they do.
    """
    t = tensors
    if isinstance(op, Conv):
        x, y = t[op.x], t[op.out]
        acc = numerics.conv2d(vals[op.x], x.zp, op.w, op.bias, op.stride, op.pad)
        return acc * (x.scale * np.asarray(op.w_scale, np.float64) / y.scale)
    if isinstance(op, Add):
        a, b, y = t[op.a], t[op.b], t[op.out]
        return ((vals[op.a] - np.float64(a.zp)) * (a.scale / y.scale)
                + (vals[op.b] - np.float64(b.zp)) * (b.scale / y.scale))
    if isinstance(op, AvgPool):
        x, y = t[op.x], t[op.out]
        s = vals[op.x].astype(np.int64).sum(axis=(1, 2), keepdims=True) - x.h * x.w * x.zp
        return s * (x.scale / (x.h * x.w * y.scale))
    return None


def interpret(graph: Graph, x_q: np.ndarray, evaluate_op=None) -> dict:
    """Every tensor's int8 NHWC value (``(1, h, w, c)``) for the int8 NHWC input ``x_q``.
    ``evaluate_op(op, tensors, vals)`` may replace :func:`evaluate` (to study the effect of
    other arithmetic; it may return None to fall back to :func:`evaluate`)."""
    t = graph.tensors
    i = t[graph.input]
    vals = {graph.input: np.asarray(x_q, np.int8).reshape(1, i.h, i.w, i.c)}
    for op in graph.ops:
        v = evaluate_op(op, t, vals) if evaluate_op is not None else None
        vals[op.out] = evaluate(op, t, vals) if v is None else v
    return vals
