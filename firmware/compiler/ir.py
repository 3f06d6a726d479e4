"""The compiler's intermediate representation: a quantised graph in NHWC, plain data.

:func:`firmware.compiler.importer.import_onnx` produces a :class:`Graph`; every later stage takes
plain data and returns plain data (STYLE.md). Activations are int8 (uint8 models are converted by
shifting values and zero points by 128), one image (N = 1), stored NHWC.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CompileError", "QTensor", "Conv", "Add", "MaxPool", "AvgPool", "Alias", "Graph"]


class CompileError(ValueError):
    """A model the compiler cannot map onto the NPU. The message names the ONNX node, its op
    type, what is wrong and what is supported."""

    def __init__(self, node, op_type, detail):
        self.node, self.op_type, self.detail = node, op_type, detail
        super().__init__(f"node {node!r} ({op_type}): {detail}" if node is not None else detail)


@dataclass(frozen=True)
class QTensor:
    """An int8 activation: NHWC shape ``(h, w, c)`` (N = 1), per-tensor scale and zero point."""
    name: str
    h: int
    w: int
    c: int
    scale: float
    zp: int

    @property
    def size(self):
        return self.h * self.w * self.c


@dataclass(frozen=True, eq=False)
class Conv:
    """Convolution (and fully connected, as 1x1 over 1x1): ``out = clamp(requant(conv(x, w) +
    bias), lo, hi)``. ``w`` is int8 ``(O, KH, KW, C)``, symmetric; ``bias`` int32 with scale
    ``x.scale * w_scale``."""
    name: str
    op_type: str
    x: str
    out: str
    w: np.ndarray
    w_scale: np.ndarray
    bias: np.ndarray
    stride: tuple = (1, 1)
    pad: tuple = (0, 0, 0, 0)
    lo: int = -128
    hi: int = 127


@dataclass(frozen=True, eq=False)
class Add:
    """Elementwise add of two int8 tensors of one shape, own rescales, clamp ``[lo, hi]``."""
    name: str
    op_type: str
    a: str
    b: str
    out: str
    lo: int = -128
    hi: int = 127


@dataclass(frozen=True, eq=False)
class MaxPool:
    name: str
    op_type: str
    x: str
    out: str
    kernel: tuple
    stride: tuple
    pad: tuple


@dataclass(frozen=True, eq=False)
class AvgPool:
    """Global average pool to 1x1 (``GlobalAveragePool``, ``ReduceMean`` over H and W)."""
    name: str
    op_type: str
    x: str
    out: str


@dataclass(frozen=True, eq=False)
class Alias:
    """``Flatten``/``Reshape``/``Squeeze``: the same bytes under another name (free in NHWC when
    the spatial size is 1x1)."""
    name: str
    op_type: str
    x: str
    out: str


@dataclass
class Graph:
    """A quantised network: tensors by name, operations in topological order, the model's
    input and output (with their ONNX names, float shapes and element types)."""
    tensors: dict
    ops: list
    input: str
    output: str
    input_name: str = "input"
    input_shape: tuple = ()          # the ONNX input's shape (NCHW)
    output_name: str = "output"
    output_shape: tuple = ()         # the ONNX output's shape
    source: str = ""
    notes: list = field(default_factory=list)
