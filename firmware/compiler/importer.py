"""Import: a quantised ONNX model -> :class:`~firmware.compiler.ir.Graph`.

Two forms are understood, as onnxruntime's ``quantize_static`` writes them:

- **QDQ**: ``DequantizeLinear -> Conv/Gemm/MatMul/Add/MaxPool/GlobalAveragePool/ReduceMean/
  Flatten/Reshape -> [Relu | Clip] -> QuantizeLinear``, weights as ``DequantizeLinear`` of int8
  initialisers (per output channel), biases as ``DequantizeLinear`` of int32 initialisers.
  onnxruntime removes ``Relu`` nodes whose output range already starts at 0; the clamp a removed
  ReLU would make is then a no-op (the output zero point is -128), and a ``Relu`` that is still
  present sets ``lo = y_zp`` (:func:`numerics.relu_bounds`), so both cases are exact.
- **QOperator**: ``QLinearConv``, ``QLinearMatMul``, ``com.microsoft.QLinearAdd``,
  ``com.microsoft.QLinearGlobalAveragePool``, ``MaxPool``/``Flatten``/``Reshape`` on int8,
  ``QuantizeLinear`` at the input and ``DequantizeLinear`` at the output.

uint8 activations are converted exactly: value - 128 and zero point - 128. Weights must be
symmetric (int8 with zero point 0, or uint8 with zero point 128). Anything else raises
:class:`CompileError` naming the node, its op type and what is supported.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from .. import numerics
from .ir import Add, Alias, AvgPool, CompileError, Conv, Graph, MaxPool, QTensor

__all__ = ["import_onnx", "SUPPORTED_OPS"]

#: What the importer accepts, for error messages.
SUPPORTED_OPS = ("Conv, Gemm, MatMul, Add, Relu, Clip, MaxPool, GlobalAveragePool, ReduceMean, "
                 "Flatten, Reshape, Squeeze, QuantizeLinear, DequantizeLinear (QDQ form); "
                 "QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearGlobalAveragePool "
                 "(QOperator form)")

_ACTIVATIONS = ("Relu", "Clip")
_ALIASES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Importer:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                self.inits[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
        self.producer, self.consumers = {}, defaultdict(list)
        for n in g.node:
            for o in n.output:
                self.producer[o] = n
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.tensors: dict[str, QTensor] = {}
        self.act_of: dict[str, str] = {}      # float DQ output -> int8 tensor name
        self.alias: dict[str, str] = {}       # int8 output of a second QuantizeLinear -> first
        self.ops = []
        self.names = set()
        self.graph_outputs = {o.name for o in g.output}
        self.absorbed = set()                 # Relu/Clip nodes folded into a producer's clamp

    # -- helpers ----------------------------------------------------------------------------------

    def fail(self, node, detail):
        raise CompileError(node.name or node.output[0], node.op_type, detail)

    def name_of(self, node):
        base = node.name or f"{node.op_type}_{node.output[0]}"
        name, i = base, 1
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def const(self, node, name, what):
        if name not in self.inits:
            self.fail(node, f"{what} {name!r} must be a constant initializer")
        return self.inits[name]

    def qparams(self, node, scale_name, zp_name, what):
        """(scale, int8 zero point) of a per-tensor activation quantisation."""
        scale = np.asarray(self.const(node, scale_name, f"{what} scale"), dtype=np.float64)
        if zp_name:
            zpa = np.asarray(self.const(node, zp_name, f"{what} zero point"))
        else:
            zpa = np.zeros((), np.uint8)
        if scale.size != 1 or zpa.size != 1:
            self.fail(node, f"{what} is quantised per axis; activations must be per tensor")
        if zpa.dtype == np.uint8:
            zp = int(zpa.reshape(())) - 128
        elif zpa.dtype == np.int8:
            zp = int(zpa.reshape(()))
        else:
            self.fail(node, f"{what} has element type {zpa.dtype}; activations must be int8 or "
                            f"uint8")
        s = float(scale.reshape(()))
        if not (np.isfinite(s) and s > 0):
            self.fail(node, f"{what} scale {s} must be positive and finite")
        return s, zp

    def weight(self, node, q, scale, zp, what):
        """Symmetric int8 weights from a quantised initialiser (uint8 with zp 128 converted)."""
        q, zp = np.asarray(q), np.asarray(zp)
        if q.dtype == np.uint8 and np.all(zp == 128):
            return (q.astype(np.int16) - 128).astype(np.int8), np.asarray(scale, np.float64)
        if q.dtype != np.int8:
            self.fail(node, f"{what} have element type {q.dtype}; supported: int8 weights "
                            f"(or uint8 with zero point 128)")
        if np.any(zp != 0):
            self.fail(node, f"{what} are asymmetric (zero point {int(zp.flat[np.argmax(zp != 0)])}"
                            f"); supported: symmetric weights, zero point 0, per channel or per "
                            f"tensor (quantize_static's default)")
        return q, np.asarray(scale, np.float64)

    def dq_const(self, node, name, what):
        """(q, scale, zp) of ``name`` = DequantizeLinear(initializer), or a float initializer as
        ``(array, None, None)``."""
        if name in self.inits:
            return self.inits[name], None, None
        dq = self.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in self.inits:
            self.fail(node, f"{what} {name!r} must be a constant (a DequantizeLinear of an "
                            f"initializer)")
        zp = self.inits[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else \
            np.zeros((), self.inits[dq.input[0]].dtype)
        return self.inits[dq.input[0]], self.inits[dq.input[1]], zp

    def act(self, node, name):
        """The int8 tensor behind a float QDQ input (or an int8 QOperator input)."""
        if name in self.act_of:
            return self.tensors[self.act_of[name]]
        if name in self.tensors:
            return self.tensors[name]
        if name in self.alias:
            return self.tensors[self.alias[name]]
        self.fail(node, f"input {name!r} is not a quantised activation (expected the output of "
                        f"a DequantizeLinear of a QuantizeLinear)")

    def follow(self, node, out):
        """From a float output: through Relu/Clip to its QuantizeLinear. Returns the int8
        tensor name, its (scale, zp) and the clamp ``(lo, hi)``."""
        relu, clips = False, []
        cur = out
        while True:
            cons = self.consumers.get(cur, [])
            if len(cons) > 1 and all(c.op_type == "QuantizeLinear" for c in cons) and \
                    cur not in self.graph_outputs:
                return self._dedicated(node, cons, relu, clips)
            if len(cons) != 1 or cur in self.graph_outputs:
                self.fail(node, f"output {cur!r} must feed exactly one QuantizeLinear "
                                f"(optionally through Relu or Clip); a float output cannot run "
                                f"on the NPU")
            nxt = cons[0]
            if nxt.op_type in _ACTIVATIONS:
                self.absorbed.add(id(nxt))
            if nxt.op_type == "Relu":
                relu = True
            elif nxt.op_type == "Clip":
                clips.append(self.clip_range(nxt))
            elif nxt.op_type == "QuantizeLinear":
                break
            else:
                self.fail(node, f"output feeds {nxt.op_type} {nxt.name!r} before any "
                                f"QuantizeLinear; supported between them: Relu, Clip")
            cur = nxt.output[0]
        return self._quantized(node, nxt, relu, clips)

    def _dedicated(self, node, qs, relu, clips):
        """Several QuantizeLinear of one output with the same scale and zero point (quantize_static
        with ``DedicatedQDQPair``: one pair per consumer): one int8 tensor, the others aliases."""
        first = self.qparams(qs[0], qs[0].input[1], qs[0].input[2] if len(qs[0].input) > 2
                             else "", "output")
        for q in qs[1:]:
            if self.qparams(q, q.input[1], q.input[2] if len(q.input) > 2 else "",
                            "output") != first:
                self.fail(node, f"output feeds QuantizeLinear nodes {qs[0].name!r} and "
                                f"{q.name!r} with different scales or zero points; supported: "
                                f"one quantisation per tensor")
            self.alias[q.output[0]] = qs[0].output[0]
            for c in self.consumers.get(q.output[0], []):
                if c.op_type == "DequantizeLinear":
                    self.act_of[c.output[0]] = qs[0].output[0]
        return self._quantized(node, qs[0], relu, clips)

    def _quantized(self, node, q, relu, clips):
        scale, zp = self.qparams(q, q.input[1], q.input[2] if len(q.input) > 2 else "", "output")
        lo, hi = numerics.relu_bounds(zp, relu)
        for cmin, cmax in clips:
            clo, chi = numerics.clip_bounds(zp, scale, cmin, cmax)
            lo, hi = max(lo, clo), min(hi, chi)
        if lo > hi:
            self.fail(node, f"the output clamp is empty ([{lo}, {hi}])")
        return q.output[0], scale, zp, lo, hi

    def clip_range(self, node):
        a = _attrs(node)
        if "min" in a or "max" in a:
            return a.get("min"), a.get("max")
        bounds = []
        for i in (1, 2):
            if len(node.input) > i and node.input[i]:
                bounds.append(float(np.asarray(self.const(node, node.input[i], "Clip bound"))))
            else:
                bounds.append(None)
        return tuple(bounds)

    def new_tensor(self, name, h, w, c, scale, zp):
        t = QTensor(name, int(h), int(w), int(c), float(scale), int(zp))
        self.tensors[name] = t
        return t

    # -- the walk ---------------------------------------------------------------------------------

    def run(self) -> Graph:
        g = self.model.graph
        inputs = [i for i in g.input if i.name not in self.inits]
        if len(inputs) != 1 or len(g.output) != 1:
            raise CompileError(g.name, "graph", f"the model must have one input and one output, "
                               f"not {len(inputs)} and {len(g.output)}")
        inp, outp = inputs[0], g.output[0]
        in_shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
        if len(in_shape) != 4 or 0 in in_shape or in_shape[0] != 1:
            raise CompileError(inp.name, "input", f"input shape {in_shape}: supported is a "
                               f"static NCHW shape with batch 1")
        if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise CompileError(inp.name, "input", "the model input must be float32 (quantised "
                               "by the model's first QuantizeLinear)")
        self.input_float = inp.name
        self.in_shape = in_shape
        model_input = model_output = None
        for node in g.node:
            op = node.op_type
            if op == "Constant" or id(node) in self.absorbed:
                continue
            if op == "QuantizeLinear":
                if node.input[0] == inp.name:
                    scale, zp = self.qparams(node, node.input[1],
                                             node.input[2] if len(node.input) > 2 else "",
                                             "input")
                    _, c, h, w = in_shape
                    model_input = self.new_tensor(node.output[0], h, w, c, scale, zp).name
                    self.mark_dq_consumers(node.output[0])
                continue
            if op == "DequantizeLinear":
                if node.input[0] in self.inits:
                    continue                       # a weight or bias: read by its user
                if node.output[0] == outp.name:
                    model_output = self.act(node, node.input[0]).name
                elif node.input[0] in self.tensors:
                    self.act_of[node.output[0]] = node.input[0]
                continue
            handler = getattr(self, f"op_{op}", None)
            if handler is None:
                self.fail(node, f"operator {op} is not supported; supported: {SUPPORTED_OPS}")
            handler(node)
        if model_input is None:
            raise CompileError(inp.name, "input", "the model input is not quantised by a "
                               "QuantizeLinear; quantise the model first (npugen quantize)")
        if model_output is None:
            raise CompileError(outp.name, "output", "the model output is not a "
                               "DequantizeLinear of an int8 activation")
        out_shape = tuple(d.dim_value for d in outp.type.tensor_type.shape.dim)
        if not out_shape or 0 in out_shape:         # not declared: NCHW of the int8 tensor
            o = self.tensors[model_output]
            out_shape = (1, o.c, o.h, o.w)
        return Graph(self.tensors, self.ops, model_input, model_output, inp.name, in_shape,
                     outp.name, out_shape, source=g.name)

    def mark_dq_consumers(self, qname):
        for c in self.consumers.get(qname, []):
            if c.op_type == "DequantizeLinear":
                self.act_of[c.output[0]] = qname

    def emit(self, op, out_tensor):
        self.ops.append(op)
        self.mark_dq_consumers(out_tensor)

    # -- QDQ operators ----------------------------------------------------------------------------

    def conv_attrs(self, node, kh, kw):
        a = _attrs(node)
        if a.get("group", 1) != 1:
            self.fail(node, f"group = {a['group']}; supported: group 1 (no depthwise or grouped "
                            f"convolution)")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            self.fail(node, f"dilations = {a['dilations']}; supported: dilation 1")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.fail(node, f"auto_pad = {a['auto_pad']}; supported: explicit pads (NOTSET)")
        strides = tuple(a.get("strides", [1, 1]))
        pads = a.get("pads", [0, 0, 0, 0])
        if len(strides) != 2 or len(pads) != 4:
            self.fail(node, "supported: 2-D convolutions only")
        t, left, b, r = pads
        if max(pads) > 15:
            self.fail(node, f"pads = {list(pads)}; supported: at most 15 per side")
        return strides, (t, left, b, r)

    def op_Conv(self, node):
        x = self.act(node, node.input[0])
        wq, ws, wzp = self.dq_const(node, node.input[1], "weight")
        if ws is None:
            self.fail(node, "weights are float; quantise the model first (npugen quantize)")
        self._conv(node, x, wq, ws, wzp, node.input[2] if len(node.input) > 2 else "", None)

    def _conv(self, node, x, wq, ws, wzp, bias_name, out_q):
        if wq.ndim != 4:
            self.fail(node, f"weight rank {wq.ndim}; supported: 2-D convolutions (4-D weights)")
        w, w_scale = self.weight(node, wq, ws, wzp, "weights")
        o, c, kh, kw = w.shape
        stride, pad = self.conv_attrs(node, kh, kw)
        if c != x.c:
            self.fail(node, f"weights have {c} input channels, the input {x.c}")
        w_scale = self.per_channel(node, w_scale, o)
        bias = self.bias(node, bias_name, x.scale, w_scale, o)
        if out_q is None:
            out, scale, zp, lo, hi = self.follow(node, node.output[0])
        else:
            (out, scale, zp), lo, hi = out_q, -128, 127
        oh = (x.h + pad[0] + pad[2] - kh) // stride[0] + 1
        ow = (x.w + pad[1] + pad[3] - kw) // stride[1] + 1
        if oh < 1 or ow < 1:
            self.fail(node, f"kernel {kh}x{kw} is larger than the padded input")
        self.new_tensor(out, oh, ow, o, scale, zp)
        self.emit(Conv(self.name_of(node), node.op_type, x.name, out,
                       np.ascontiguousarray(w.transpose(0, 2, 3, 1)), w_scale, bias,
                       stride, pad, lo, hi), out)

    def per_channel(self, node, scale, o):
        s = np.asarray(scale, np.float64).reshape(-1)
        if s.size == 1:
            s = np.full(o, s[0])
        if s.size != o:
            self.fail(node, f"weight scale has {s.size} values for {o} output channels; "
                            f"supported: per output channel or per tensor")
        return s

    def bias(self, node, name, x_scale, w_scale, o):
        if not name:
            return np.zeros(o, np.int32)
        q, s, _ = self.dq_const(node, name, "bias")
        q = np.asarray(q).reshape(-1)
        if q.size != o:
            self.fail(node, f"bias has {q.size} values for {o} output channels")
        want = x_scale * w_scale
        if s is None and q.dtype == np.int32:      # QOperator: int32 at the bias scale
            return q
        if s is None:                              # float bias: quantise at the bias scale
            return numerics.wrap_int32(np.rint(q.astype(np.float64) / want).astype(np.int64))
        if q.dtype != np.int32:
            self.fail(node, f"bias has element type {q.dtype}; supported: int32")
        s = np.broadcast_to(np.asarray(s, np.float64).reshape(-1), (o,))
        if np.any(np.abs(s - want) > 1e-6 * want):
            self.fail(node, "bias scale is not input scale x weight scale; supported: the bias "
                            "quantisation quantize_static writes")
        return q.astype(np.int32)

    def op_Gemm(self, node):
        a = _attrs(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            self.fail(node, "supported: Gemm with transA = 0, alpha = beta = 1")
        self._fc(node, transposed=bool(a.get("transB", 0)),
                 bias=node.input[2] if len(node.input) > 2 else "")

    def op_MatMul(self, node):
        self._fc(node, transposed=False, bias="")

    def _fc(self, node, transposed, bias):
        x = self.act(node, node.input[0])
        if x.h != 1 or x.w != 1:
            self.fail(node, f"input is {x.h}x{x.w}x{x.c}; supported: a fully connected layer "
                            f"on a flattened 1x1 input")
        wq, ws, wzp = self.dq_const(node, node.input[1], "weight")
        if ws is None:
            self.fail(node, "weights are float; quantise the model first (npugen quantize)")
        if wq.ndim != 2:
            self.fail(node, f"weight rank {wq.ndim}; supported: 2-D")
        wq = wq if transposed else wq.T            # (O, K)
        w, w_scale = self.weight(node, wq, ws, wzp, "weights")
        o, k = w.shape
        if k != x.c:
            self.fail(node, f"weights take {k} inputs, the input has {x.c}")
        w_scale = self.per_channel(node, w_scale, o)
        b = self.bias(node, bias, x.scale, w_scale, o)
        out, scale, zp, lo, hi = self.follow(node, node.output[0])
        self.new_tensor(out, 1, 1, o, scale, zp)
        self.emit(Conv(self.name_of(node), node.op_type, x.name, out,
                       np.ascontiguousarray(w.reshape(o, 1, 1, k)), w_scale, b,
                       (1, 1), (0, 0, 0, 0), lo, hi), out)

    def op_Add(self, node):
        a, b = self.act(node, node.input[0]), self.act(node, node.input[1])
        if (a.h, a.w, a.c) != (b.h, b.w, b.c):
            self.fail(node, f"inputs of shapes {a.h}x{a.w}x{a.c} and {b.h}x{b.w}x{b.c}; "
                            f"supported: two activations of the same shape (no broadcasting)")
        out, scale, zp, lo, hi = self.follow(node, node.output[0])
        self.new_tensor(out, a.h, a.w, a.c, scale, zp)
        self.emit(Add(self.name_of(node), node.op_type, a.name, b.name, out, lo, hi), out)

    def op_MaxPool(self, node):
        x = self.act(node, node.input[0])
        a = _attrs(node)
        if a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1, 1])) or \
                a.get("storage_order", 0) or len(node.output) > 1:
            self.fail(node, "supported: MaxPool with ceil_mode 0, dilation 1, storage_order 0 "
                            "and no indices output")
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            self.fail(node, f"auto_pad = {a['auto_pad']}; supported: explicit pads (NOTSET)")
        k = tuple(a["kernel_shape"])
        s = tuple(a.get("strides", [1, 1]))
        p = tuple(a.get("pads", [0, 0, 0, 0]))
        if p[0] >= k[0] or p[2] >= k[0] or p[1] >= k[1] or p[3] >= k[1]:
            self.fail(node, f"pads {list(p)} must be smaller than the kernel {list(k)}")
        if x.name in self.tensors and node.input[0] == x.name:     # QOperator: int8 in and out
            out, scale, zp, lo, hi = node.output[0], x.scale, x.zp, -128, 127
        else:
            out, scale, zp, lo, hi = self.follow(node, node.output[0])
        if (scale, zp) != (x.scale, x.zp) or (lo, hi) != (-128, 127):
            self.fail(node, "the output is quantised differently from the input; supported: "
                            "MaxPool keeping the input's scale and zero point")
        oh = (x.h + p[0] + p[2] - k[0]) // s[0] + 1
        ow = (x.w + p[1] + p[3] - k[1]) // s[1] + 1
        self.new_tensor(out, oh, ow, x.c, scale, zp)
        self.emit(MaxPool(self.name_of(node), node.op_type, x.name, out, k, s,
                          (p[0], p[1], p[2], p[3])), out)

    def op_GlobalAveragePool(self, node):
        x = self.act(node, node.input[0])
        out, scale, zp, lo, hi = self.follow(node, node.output[0])
        self._avgpool(node, x, out, scale, zp, lo, hi)

    def _avgpool(self, node, x, out, scale, zp, lo, hi):
        if (lo, hi) != (-128, 127) and lo > -128 and lo != zp:
            self.fail(node, "supported: no activation after the average pool")
        self.new_tensor(out, 1, 1, x.c, scale, zp)
        self.emit(AvgPool(self.name_of(node), node.op_type, x.name, out), out)

    def op_ReduceMean(self, node):
        x = self.act(node, node.input[0])
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = [int(v) for v in np.asarray(self.const(node, node.input[1], "axes"))]
        if axes is None or sorted(int(v) % 4 for v in axes) != [2, 3]:
            self.fail(node, f"axes = {axes}; supported: the mean over H and W (axes 2, 3)")
        out, scale, zp, lo, hi = self.follow(node, node.output[0])
        self._avgpool(node, x, out, scale, zp, lo, hi)

    def _alias(self, node):
        x = self.act(node, node.input[0])
        if x.h != 1 or x.w != 1:
            self.fail(node, f"input is {x.h}x{x.w}x{x.c}; supported: {node.op_type} of a 1x1 "
                            f"spatial tensor (free in NHWC)")
        if node.input[0] in self.tensors:          # QOperator: int8 through
            out, scale, zp = node.output[0], x.scale, x.zp
        else:
            out, scale, zp, lo, hi = self.follow(node, node.output[0])
            if (scale, zp) != (x.scale, x.zp) or (lo, hi) != (-128, 127):
                self.fail(node, "the output is quantised differently from the input; "
                                "supported: a reshape keeping scale and zero point")
        self.new_tensor(out, 1, 1, x.c, scale, zp)
        self.emit(Alias(self.name_of(node), node.op_type, x.name, out), out)

    op_Flatten = op_Reshape = op_Squeeze = op_Unsqueeze = _alias

    def op_Relu(self, node):
        """A Relu or Clip between a DequantizeLinear and a QuantizeLinear (not folded into a
        producer): an identity 1x1 convolution that requantises to the output's scale (exact up
        to the Q31 multiplier) with the activation as its clamp."""
        x = self.act(node, node.input[0])
        out, scale, zp, lo, hi = self.follow(node, node.output[0])
        if node.op_type == "Relu":
            lo = max(lo, zp)
        else:
            clo, chi = numerics.clip_bounds(zp, scale, *self.clip_range(node))
            lo, hi = max(lo, clo), min(hi, chi)
        if lo > hi:
            self.fail(node, f"the output clamp is empty ([{lo}, {hi}])")
        self.new_tensor(out, x.h, x.w, x.c, scale, zp)
        self.emit(Conv(self.name_of(node), node.op_type, x.name, out,
                       np.eye(x.c, dtype=np.int8).reshape(x.c, 1, 1, x.c), np.ones(x.c),
                       np.zeros(x.c, np.int32), (1, 1), (0, 0, 0, 0), lo, hi), out)

    op_Clip = op_Relu

    # -- QOperator --------------------------------------------------------------------------------

    def op_QLinearConv(self, node):
        i = node.input
        x = self.act(node, i[0])
        self.check_input(node, x, i[1], i[2])
        w = self.const(node, i[3], "weight")
        ws = self.const(node, i[4], "weight scale")
        wzp = self.const(node, i[5], "weight zero point")
        ys, yzp = self.qparams(node, i[6], i[7], "output")
        bias = i[8] if len(i) > 8 else ""
        self._conv(node, x, w, ws, wzp, bias, (node.output[0], ys, yzp))

    def op_QLinearMatMul(self, node):
        i = node.input
        x = self.act(node, i[0])
        if x.h != 1 or x.w != 1:
            self.fail(node, "supported: a fully connected layer on a flattened 1x1 input")
        self.check_input(node, x, i[1], i[2])
        w = np.asarray(self.const(node, i[3], "weight"))
        ws = self.const(node, i[4], "weight scale")
        wzp = self.const(node, i[5], "weight zero point")
        ys, yzp = self.qparams(node, i[6], i[7], "output")
        self._conv(node, x, np.ascontiguousarray(w.T)[:, :, None, None], ws, wzp, "",
                   (node.output[0], ys, yzp))

    def op_QGemm(self, node):
        i = node.input
        a = _attrs(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0:
            self.fail(node, "supported: QGemm with transA = 0 and alpha = 1")
        if len(i) < 9 or not i[7]:
            self.fail(node, "the output is float; supported: QGemm with an int8 output "
                            "(y_scale, y_zero_point)")
        x = self.act(node, i[0])
        if x.h != 1 or x.w != 1:
            self.fail(node, "supported: a fully connected layer on a flattened 1x1 input")
        self.check_input(node, x, i[1], i[2])
        w = np.asarray(self.const(node, i[3], "weight"))
        w = w if a.get("transB", 0) else w.T
        ws = self.const(node, i[4], "weight scale")
        wzp = self.const(node, i[5], "weight zero point")
        ys, yzp = self.qparams(node, i[7], i[8], "output")
        self._conv(node, x, np.ascontiguousarray(w)[:, :, None, None], ws, wzp, i[6],
                   (node.output[0], ys, yzp))

    def check_input(self, node, x, scale_name, zp_name):
        xs, xzp = self.qparams(node, scale_name, zp_name, "input")
        if abs(xs - x.scale) > 1e-7 * x.scale or xzp != x.zp:
            self.fail(node, f"input quantisation ({xs}, {xzp}) differs from its producer's "
                            f"({x.scale}, {x.zp})")

    def op_QLinearAdd(self, node):
        i = node.input
        a, b = self.act(node, i[0]), self.act(node, i[3])
        self.check_input(node, a, i[1], i[2])
        self.check_input(node, b, i[4], i[5])
        ys, yzp = self.qparams(node, i[6], i[7] if len(i) > 7 else "", "output")
        if (a.h, a.w, a.c) != (b.h, b.w, b.c):
            self.fail(node, "supported: two activations of the same shape (no broadcasting)")
        lo, hi = -128, 127
        self.new_tensor(node.output[0], a.h, a.w, a.c, ys, yzp)
        self.emit(Add(self.name_of(node), node.op_type, a.name, b.name, node.output[0], lo, hi),
                  node.output[0])

    def op_QLinearGlobalAveragePool(self, node):
        i = node.input
        if _attrs(node).get("channels_last", 0):
            self.fail(node, "supported: channels_last = 0 (NCHW)")
        x = self.act(node, i[0])
        self.check_input(node, x, i[1], i[2])
        ys, yzp = self.qparams(node, i[3], i[4], "output")
        self._avgpool(node, x, node.output[0], ys, yzp, -128, 127)


def import_onnx(model) -> Graph:
    """Import a quantised ONNX model (a path or a ``ModelProto``) as a :class:`Graph`."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    return _Importer(model).run()
