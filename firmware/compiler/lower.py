"""Lower: a :class:`Graph` -> layer steps with their integer parameters, ready for the kernels.

- Every convolution and fully connected layer becomes a :class:`ConvStep` with a
  :class:`~firmware.kernels.Requant` (``numerics.requant_params``, the zero point folded into the
  bias, the clamp from ``numerics.relu_bounds``/``clip_bounds`` as imported).
- An ``Add`` whose input is a convolution output used by nothing else is fused into that
  convolution as its residual stage (``numerics.add_multipliers``; a ReLU after the add is the
  second stage's clamp). Any other ``Add`` becomes an identity 1x1 convolution (exact: multiplier
  1.0) with the residual stage.
- ``MaxPool`` and global average pooling map to their kernels; ``Flatten``/``Reshape`` are
  aliases (the same bytes).

Multipliers come only from :mod:`firmware.numerics`, the same functions the golden references
use.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .. import numerics
from ..kernels import Requant
from .ir import Add, Alias, AvgPool, Conv, Graph, MaxPool, QTensor

__all__ = ["ConvStep", "PoolStep", "AvgStep", "ResidualSpec", "Lowered", "lower"]


@dataclass(frozen=True)
class ResidualSpec:
    """The second post-processing stage of a convolution: add ``tensor``, rescaled with the Q31
    ``ma`` (the convolution's output) and ``mb`` (``tensor``) and their shared ``shift``
    (``numerics.add_multipliers``)."""
    tensor: QTensor
    add_zp: int
    ma: int
    mb: int
    shift: int
    lo: int
    hi: int


@dataclass(frozen=True, eq=False)
class ConvStep:
    name: str
    op_type: str
    x: QTensor
    out: QTensor
    w: np.ndarray            # int8 (O, KH, KW, C)
    rq: Requant
    stride: tuple
    pad: tuple
    residual: ResidualSpec | None = None
    #: ``> 0``: the input is read through an im2col view that packs this many neighbouring
    #: pixels (a whole kernel row) into one vector: ``w`` is then ``(O, KH, 1, pack * C)`` and
    #: the input is stored padded (see :func:`pack_input_conv`).
    pack: int = 0

    @property
    def macs(self):
        o, kh, kw, c = self.w.shape
        return self.out.h * self.out.w * o * kh * kw * c


@dataclass(frozen=True, eq=False)
class PoolStep:
    name: str
    op_type: str
    x: QTensor
    out: QTensor
    kernel: tuple
    stride: tuple
    pad: tuple
    macs = 0


@dataclass(frozen=True, eq=False)
class AvgStep:
    name: str
    op_type: str
    x: QTensor
    out: QTensor
    macs = 0


@dataclass
class Lowered:
    """Steps in execution order; ``storage`` maps every tensor to the tensor whose memory it
    uses (itself, or the source of an alias). The model input is stored with ``input_pad``
    (top, left, bottom, right) pixels of its zero point around it (the driver writes them)."""
    steps: list
    tensors: dict
    storage: dict
    input: str
    output: str
    input_pad: tuple = (0, 0, 0, 0)


def _requant(x: QTensor, w, w_scale, bias, y_scale, y_zp, lo, hi) -> Requant:
    o = w.shape[0]
    mult, shift = numerics.requant_params(x.scale, w_scale, y_scale, o)
    folded = numerics.wrap_int32(bias.astype(np.int64)
                                 - x.zp * w.astype(np.int64).sum(axis=(1, 2, 3)))
    return Requant(folded, mult, shift, y_zp, lo, hi)


def _residual(a: QTensor, b: QTensor, y: QTensor, lo, hi) -> ResidualSpec:
    ma, mb, s = numerics.add_multipliers(a.scale, b.scale, y.scale)
    return ResidualSpec(b, y.zp, ma, mb, s, lo, hi)


def lower(graph: Graph, rows: int | None = None) -> Lowered:
    """Lower ``graph``; with ``rows`` (the array's), a convolution on the model input may be
    packed (:func:`pack_input_conv`)."""
    t = graph.tensors
    storage = {name: name for name in t}
    uses = Counter()
    producer = {}
    for op in graph.ops:
        for name in _inputs(op):
            uses[name] += 1
        producer[op.out] = op
    uses[graph.output] += 1
    fused_into = {}                  # conv node -> the Add it is fused into
    for op in graph.ops:
        if isinstance(op, Add):
            cands = [n for n in (op.a, op.b) if isinstance(producer.get(n), Conv)
                     and uses[n] == 1 and producer[n] not in fused_into]
            if cands:
                # The later producer, so the other input is certainly computed before.
                conv = max((producer[n] for n in cands), key=graph.ops.index)
                fused_into[conv] = op
    steps = []
    for op in graph.ops:
        if isinstance(op, Conv):
            if op in fused_into:
                continue
            steps.append(ConvStep(op.name, op.op_type, t[op.x], t[op.out], op.w,
                                  _requant(t[op.x], op.w, op.w_scale, op.bias, t[op.out].scale,
                                           t[op.out].zp, op.lo, op.hi), op.stride, op.pad))
        elif isinstance(op, Add):
            conv = next((c for c, a in fused_into.items() if a is op), None)
            y = t[op.out]
            if conv is not None:
                mid = t[conv.out]
                other = t[op.b] if conv.out == op.a else t[op.a]
                steps.append(ConvStep(
                    f"{conv.name}+{op.name}", f"{conv.op_type}+{op.op_type}", t[conv.x], y,
                    conv.w, _requant(t[conv.x], conv.w, conv.w_scale, conv.bias, mid.scale,
                                     mid.zp, conv.lo, conv.hi),
                    conv.stride, conv.pad, _residual(mid, other, y, op.lo, op.hi)))
            else:
                a, b = t[op.a], t[op.b]
                eye = np.eye(a.c, dtype=np.int8).reshape(a.c, 1, 1, a.c)
                ones = np.ones(a.c)
                steps.append(ConvStep(
                    op.name, op.op_type, a, y, eye,
                    _requant(a, eye, ones, np.zeros(a.c, np.int32), a.scale, a.zp, -128, 127),
                    (1, 1), (0, 0, 0, 0), _residual(a, b, y, op.lo, op.hi)))
        elif isinstance(op, MaxPool):
            steps.append(PoolStep(op.name, op.op_type, t[op.x], t[op.out], op.kernel, op.stride,
                                  op.pad))
        elif isinstance(op, AvgPool):
            steps.append(AvgStep(op.name, op.op_type, t[op.x], t[op.out]))
        elif isinstance(op, Alias):
            storage[op.out] = storage[op.x]
        else:                                            # pragma: no cover
            raise TypeError(f"unknown IR op {op!r}")
    return pack_input_conv(Lowered(steps, t, storage, graph.input, graph.output), rows)


def pack_input_conv(low: Lowered, rows: int) -> Lowered:
    """Pack the kernel rows of a convolution on the model input into the array's lanes.

    A stem like ResNet's (7x7, 3 channels) fills 3 of ``rows`` lanes per reduction step. When
    the input feeds only that convolution, the input is stored padded (the driver writes the
    zero-point border) and the convolution reads it through an overlapping view whose pixel
    (y, x) is the ``KW * C`` bytes of pixels (y, x .. x + KW - 1): a ``KH x 1`` convolution over
    ``KW * C`` channels, with the weights rearranged to match (the same products and sums, so
    the result is bit for bit the same). Done when it needs fewer reduction steps.
    """
    if not low.steps or rows is None:
        return low
    first = low.steps[0]
    users = [s for s in low.steps if any(t.name == low.input for t in step_inputs(s))]
    if not isinstance(first, ConvStep) or first.x.name != low.input or users != [first] or \
            first.residual is not None or low.storage[low.output] == low.input:
        return low
    o, kh, kw, c = first.w.shape
    before = kh * kw * -(-c // rows)
    after = kh * -(-(kw * c) // rows)
    if kw == 1 or after >= before:
        return low
    w = np.ascontiguousarray(first.w.reshape(o, kh, 1, kw * c))
    packed = ConvStep(first.name, first.op_type, first.x, first.out, w, first.rq, first.stride,
                      (0, 0, 0, 0), None, pack=kw)
    return Lowered([packed] + low.steps[1:], low.tensors, low.storage, low.input, low.output,
                   input_pad=first.pad)


def _inputs(op):
    if isinstance(op, Add):
        return (op.a, op.b)
    return (op.x,)


def step_inputs(step):
    """Tensors a step reads."""
    ins = [step.x]
    if isinstance(step, ConvStep) and step.residual is not None:
        ins.append(step.residual.tensor)
    return ins
