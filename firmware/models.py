"""Reference networks: ResNet-18 and ResNet-50 in ONNX, float and quantised by onnxruntime.

The float models are built with ``onnx.helper`` (NCHW, float32, BatchNorm after every
convolution, seeded deterministic weights) at any input size: 224 for the real workload, 32 or 64
for fast tests. They are quantised with onnxruntime's own tools (``quant_pre_process``, which
folds batch norm and infers shapes, then ``quantize_static`` in QDQ format with per-channel
symmetric int8 weights and asymmetric int8 activations), calibrated on seeded synthetic images.
Nothing here is a hand-written quantiser.

Generated files are cached under ``build/models/`` with the parameters in their names, and are
rewritten only when missing.

Examples
--------
>>> path = quantized_resnet("resnet18", size=32)          # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["ARCHS", "MODEL_DIR", "build_resnet", "float_resnet", "quantized_resnet",
           "quantize", "synthetic_images", "ArrayReader", "model_input_shape", "LayerCase",
           "resnet_layer_cases", "layer_model", "quantized_layer"]

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "build" / "models"

#: (block kind, blocks per stage) of each architecture.
ARCHS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
}

OPSET = 17
#: Bumped whenever the builders change, so cached models are rebuilt.
MODELS_VERSION = 1


class _Builder:
    """Accumulates nodes and initialisers of a graph with seeded weights."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def conv_bn(self, name, x, c_in, c_out, k, stride, relu, gamma=(0.5, 1.0)):
        """Conv (He-initialised, no bias) -> BatchNorm (random statistics) [-> Relu]."""
        rng = self.rng
        w = rng.normal(0, np.sqrt(2.0 / (k * k * c_in)), (c_out, c_in, k, k)).astype(np.float32)
        self.nodes.append(helper.make_node(
            "Conv", [x, self.const(f"{name}.weight", w)], [f"{name}.conv"], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        scale = rng.uniform(*gamma, c_out).astype(np.float32)
        bias = rng.normal(0, 0.1, c_out).astype(np.float32)
        mean = rng.normal(0, 0.1, c_out).astype(np.float32)
        var = rng.uniform(0.5, 1.5, c_out).astype(np.float32)
        out = f"{name}.bn"
        self.nodes.append(helper.make_node(
            "BatchNormalization",
            [f"{name}.conv", self.const(f"{name}.bn.scale", scale),
             self.const(f"{name}.bn.bias", bias), self.const(f"{name}.bn.mean", mean),
             self.const(f"{name}.bn.var", var)], [out], name=f"{name}.bn", epsilon=1e-5))
        if relu:
            self.nodes.append(helper.make_node("Relu", [out], [f"{name}.relu"],
                                               name=f"{name}.relu"))
            out = f"{name}.relu"
        return out

    def add_relu(self, name, a, b):
        self.nodes.append(helper.make_node("Add", [a, b], [f"{name}.add"], name=f"{name}.add"))
        self.nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"],
                                           name=f"{name}.relu"))
        return f"{name}.out"


def build_resnet(arch="resnet50", size=224, num_classes=1000, seed=0) -> onnx.ModelProto:
    """A float32 ResNet (torchvision layout, v1.5 strides) with seeded weights.

    Parameters
    ----------
    arch : str
        ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
    size : int
        Input height and width (``1 x 3 x size x size``), at least 32.
    num_classes : int
        Outputs of the final fully connected layer.
    seed : int
        Seed of every weight and batch-norm statistic.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    if size < 32:
        raise ValueError(f"input size {size} is too small for a ResNet: at least 32")
    kind, stages = ARCHS[arch]
    b = _Builder(seed)
    x = b.conv_bn("conv1", "input", 3, 64, 7, 2, relu=True)
    b.nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[3, 3],
                                    strides=[2, 2], pads=[1, 1, 1, 1]))
    x, c_in = "pool1", 64
    expansion = 4 if kind == "bottleneck" else 1
    for si, blocks in enumerate(stages):
        width = 64 << si
        for bi in range(blocks):
            stride = 2 if (si > 0 and bi == 0) else 1
            name = f"layer{si + 1}.{bi}"
            c_out = width * expansion
            if kind == "bottleneck":
                y = b.conv_bn(f"{name}.conv1", x, c_in, width, 1, 1, relu=True)
                y = b.conv_bn(f"{name}.conv2", y, width, width, 3, stride, relu=True)
                y = b.conv_bn(f"{name}.conv3", y, width, c_out, 1, 1, relu=False,
                              gamma=(0.2, 0.4))
            else:
                y = b.conv_bn(f"{name}.conv1", x, c_in, width, 3, stride, relu=True)
                y = b.conv_bn(f"{name}.conv2", y, width, c_out, 3, 1, relu=False,
                              gamma=(0.2, 0.4))
            if stride != 1 or c_in != c_out:
                short = b.conv_bn(f"{name}.downsample", x, c_in, c_out, 1, stride, relu=False)
            else:
                short = x
            x = b.add_relu(name, y, short)
            c_in = c_out
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["avgpool"], name="avgpool"))
    b.nodes.append(helper.make_node("Flatten", ["avgpool"], ["flatten"], name="flatten", axis=1))
    fc_w = b.rng.normal(0, 1 / np.sqrt(c_in), (num_classes, c_in)).astype(np.float32)
    fc_b = b.rng.normal(0, 0.01, num_classes).astype(np.float32)
    b.nodes.append(helper.make_node("Gemm", ["flatten", b.const("fc.weight", fc_w),
                                             b.const("fc.bias", fc_b)], ["output"], name="fc",
                                    transB=1))
    graph = helper.make_graph(
        b.nodes, f"{arch}_{size}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, num_classes])],
        b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="npugen.firmware.models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def synthetic_images(n, size, seed=0) -> np.ndarray:
    """``n`` seeded ``1 x 3 x size x size`` float32 images: smooth random fields with the
    statistics of normalised photographs (mean about 0, standard deviation about 1)."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (n, 3, 8, 8))
    reps = -(-size // 8)
    img = np.kron(coarse, np.ones((1, 1, reps, reps)))[:, :, :size, :size]
    img = img + 0.5 * rng.normal(0, 1, img.shape)
    return img.astype(np.float32)


def model_input_shape(model) -> tuple[str, tuple[int, ...]]:
    """Name and static shape of a model's first input."""
    inp = model.graph.input[0]
    dims = tuple(d.dim_value or 1 for d in inp.type.tensor_type.shape.dim)
    return inp.name, dims


class ArrayReader:
    """An onnxruntime ``CalibrationDataReader`` over a batch of arrays, one sample at a time."""

    def __init__(self, name, samples):
        self.name, self.samples, self.i = name, list(samples), 0

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return {self.name: self.samples[self.i - 1][None].astype(np.float32)}

    def rewind(self):
        self.i = 0


def quantize(float_model, output, calib, fmt="qdq", activations="int8",
             extra_options=None) -> Path:
    """Quantise a float ONNX model with onnxruntime: ``quant_pre_process`` (shape inference and
    graph optimisation, which folds batch norm), then ``quantize_static`` with per-channel
    symmetric int8 weights and asymmetric activations, MinMax calibration on ``calib`` (an array
    of samples, each of the model input's shape without the batch axis).

    ``fmt`` is ``"qdq"`` (QuantizeLinear/DequantizeLinear around float operators, the default and
    onnxruntime's recommendation) or ``"qop"`` (QLinearConv and friends); ``activations`` is
    ``"int8"`` or ``"uint8"``; ``extra_options`` go to ``quantize_static`` as they are. The
    output is written atomically (no partial file on failure).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    formats = {"qdq": QuantFormat.QDQ, "qop": QuantFormat.QOperator}
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    if fmt not in formats or activations not in types:
        raise ValueError(f"fmt must be one of {list(formats)} and activations one of "
                         f"{list(types)}, not {fmt!r}, {activations!r}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = float_model if isinstance(float_model, onnx.ModelProto) else onnx.load(float_model)
    name, _ = model_input_shape(model)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shapes are static: ONNX shape inference suffices (symbolic inference needs sympy).
        # (onnxruntime's graph optimisation fails on a model without initialisers: skip it)
        quant_pre_process(model, str(pre), skip_symbolic_shape=True,
                          skip_optimization=not model.graph.initializer)
        partial = Path(tmp) / "quant.onnx"
        quantize_static(str(pre), str(partial), ArrayReader(name, calib),
                        quant_format=formats[fmt], per_channel=True,
                        activation_type=types[activations], weight_type=QuantType.QInt8,
                        extra_options=extra_options)
        os.replace(partial, output)
    return output


def _cached(path: Path, make) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
    return path


def float_resnet(arch="resnet50", size=224, num_classes=1000, seed=0) -> Path:
    """Path of the cached float model (built on first use)."""
    path = MODEL_DIR / f"{arch}_{size}_c{num_classes}_s{seed}_v{MODELS_VERSION}.float.onnx"

    def make(p):
        model = build_resnet(arch, size, num_classes, seed)
        tmp = p.with_suffix(".tmp")
        onnx.save(model, tmp)
        os.replace(tmp, p)

    return _cached(path, make)


def quantized_resnet(arch="resnet50", size=224, num_classes=1000, seed=0, calib=8, fmt="qdq",
                     activations="int8", dedicated=False) -> Path:
    """Path of the cached int8 model (``fmt`` and ``activations`` as :func:`quantize`),
    calibrated on ``calib`` synthetic images. ``dedicated`` quantises with ``DedicatedQDQPair``
    (one QuantizeLinear/DequantizeLinear pair per consumer of a tensor)."""
    kind = fmt if activations == "int8" else f"{fmt}-{activations}"
    kind += "-dedicated" if dedicated else ""
    path = MODEL_DIR / (f"{arch}_{size}_c{num_classes}_s{seed}_v{MODELS_VERSION}_cal{calib}"
                        f".{kind}.onnx")
    src = float_resnet(arch, size, num_classes, seed)
    extra = {"DedicatedQDQPair": True} if dedicated else None
    return _cached(path, lambda p: quantize(src, p, synthetic_images(calib, size, seed=1000 + seed),
                                            fmt, activations, extra))


# -- single layers: every distinct layer shape of a network, as its own model ----------------


@dataclass(frozen=True)
class LayerCase:
    """One distinct layer of a network, to build and test on its own.

    ``kind`` is ``"conv"`` (Conv + BatchNorm [+ Relu]: ``c_in``, ``c_out``, ``k``, ``stride``,
    ``relu``), ``"maxpool"`` (3x3/2, padding 1), ``"gap"`` (global average pool),
    ``"fc"`` (Flatten + Gemm to ``c_out`` classes) or ``"bottleneck"`` (a ResNet bottleneck
    block with its shortcut: ``c_in``, ``c_out`` the block's width, ``stride``). ``size`` is the
    input's height and width in the network; :func:`layer_model` builds it at ``test_size``.
    """
    name: str
    kind: str
    c_in: int
    c_out: int = 0
    k: int = 1
    stride: int = 1
    relu: bool = False
    size: int = 1
    test_size: int = 1

    @property
    def key(self):
        return (f"{self.kind}_{self.c_in}_{self.c_out}_k{self.k}s{self.stride}"
                f"{'r' if self.relu else ''}_{self.test_size}")


def _test_size(size, k, stride, reduced):
    """A reduced input size that keeps the layer's character: at most ``reduced``, even for a
    strided layer, and never below the kernel."""
    s = min(size, reduced)
    if stride > 1:
        s = max(s - s % stride, 2 * stride)
    return max(s, k)


def resnet_layer_cases(arch="resnet50", size=224, reduced=4) -> list[LayerCase]:
    """Every distinct layer of ``arch`` at ``size``: each (c_in, c_out, kernel, stride, relu)
    of its convolutions (the stem included), the max pool, a bottleneck (or basic) block with a
    downsampling shortcut and one with an identity shortcut (the residual add), the global
    average pool and the fully connected layer, in network order. Test sizes are reduced to
    at most ``reduced`` (twice that for strided layers, and four times for the stem and the
    pool)."""
    model = onnx.shape_inference.infer_shapes(build_resnet(arch, size))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(model.graph.value_info) + list(model.graph.input)}
    inits = {i.name: i for i in model.graph.initializer}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    cases, seen = [], set()

    def add(case):
        if (case.kind, case.c_in, case.c_out, case.k, case.stride, case.relu) not in seen:
            seen.add((case.kind, case.c_in, case.c_out, case.k, case.stride, case.relu))
            cases.append(case)

    for n in model.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]].dims
            stride = next(a.ints[0] for a in n.attribute if a.name == "strides")
            c_out, c_in, k = w[0], w[1], w[2]
            bn = consumers[n.output[0]][0]
            relu = any(c.op_type == "Relu" for c in consumers.get(bn.output[0], []))
            s = shapes[n.input[0]][2]
            red = 4 * reduced if c_in == 3 else reduced * stride
            add(LayerCase(n.name, "conv", c_in, c_out, k, stride, relu, s,
                          _test_size(s, k, stride, red)))
        elif n.op_type == "MaxPool":
            c, s = shapes[n.input[0]][1], shapes[n.input[0]][2]
            add(LayerCase(n.name, "maxpool", c, c, 3, 2, False, s,
                          _test_size(s, 3, 2, 4 * reduced)))
        elif n.op_type == "GlobalAveragePool":
            c, s = shapes[n.input[0]][1], shapes[n.input[0]][2]
            add(LayerCase(n.name, "gap", c, c, 1, 1, False, s, min(s, reduced)))
        elif n.op_type == "Gemm":
            w = inits[n.input[1]].dims
            add(LayerCase(n.name, "fc", w[1], w[0], 1, 1, False, 1, 1))
    kind, _ = ARCHS[arch]
    width = 64
    expansion = 4 if kind == "bottleneck" else 1
    blocks = [("layer2.0", 64 * expansion, 2 * width, 2), ("layer1.1", width * expansion, width, 1)]
    for name, c_in, w_, stride in blocks:
        s = size // 4
        add(LayerCase(name, kind, c_in, w_, 3, stride, True, s,
                      _test_size(s, 3, stride, reduced * stride)))
    return cases


def layer_model(case: LayerCase, seed=0) -> onnx.ModelProto:
    """The float32 model of one :class:`LayerCase` at its test size (seeded weights)."""
    b = _Builder(seed)
    s = case.test_size
    x = "input"
    shape = [1, case.c_in, s, s]
    if case.kind == "conv":
        y = b.conv_bn(case.name, x, case.c_in, case.c_out, case.k, case.stride, case.relu)
    elif case.kind == "maxpool":
        b.nodes.append(helper.make_node("MaxPool", [x], ["pool"], name=case.name,
                                        kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
        y = "pool"
    elif case.kind == "gap":
        b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name=case.name))
        y = "gap"
    elif case.kind == "fc":
        shape = [1, case.c_in, 1, 1]
        b.nodes.append(helper.make_node("Flatten", [x], ["flat"], name="flatten", axis=1))
        w = b.rng.normal(0, 1 / np.sqrt(case.c_in), (case.c_out, case.c_in)).astype(np.float32)
        bias = b.rng.normal(0, 0.01, case.c_out).astype(np.float32)
        b.nodes.append(helper.make_node("Gemm", ["flat", b.const("fc.weight", w),
                                                 b.const("fc.bias", bias)], ["fc"],
                                        name=case.name, transB=1))
        y = "fc"
    elif case.kind in ("bottleneck", "basic"):
        n, w_, st = case.name, case.c_out, case.stride
        if case.kind == "bottleneck":
            c_out = 4 * w_
            t = b.conv_bn(f"{n}.conv1", x, case.c_in, w_, 1, 1, relu=True)
            t = b.conv_bn(f"{n}.conv2", t, w_, w_, 3, st, relu=True)
            t = b.conv_bn(f"{n}.conv3", t, w_, c_out, 1, 1, relu=False, gamma=(0.2, 0.4))
        else:
            c_out = w_
            t = b.conv_bn(f"{n}.conv1", x, case.c_in, w_, 3, st, relu=True)
            t = b.conv_bn(f"{n}.conv2", t, w_, c_out, 3, 1, relu=False, gamma=(0.2, 0.4))
        short = x
        if st != 1 or case.c_in != c_out:
            short = b.conv_bn(f"{n}.downsample", x, case.c_in, c_out, 1, st, relu=False)
        y = b.add_relu(n, t, short)
    else:
        raise ValueError(f"unknown layer kind {case.kind!r}")
    graph = helper.make_graph(
        b.nodes, case.key, [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="npugen.firmware.models")
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model)
    return model


def quantized_layer(case: LayerCase, seed=0, calib=8) -> Path:
    """Path of the cached int8 (QDQ) model of one layer, calibrated on seeded inputs: smooth
    images for the stem, ReLU-like (non-negative) activations for every other layer."""
    path = MODEL_DIR / "layers" / f"{case.key}_s{seed}_v{MODELS_VERSION}_cal{calib}.qdq.onnx"

    def make(p):
        model = layer_model(case, seed)
        _, shape = model_input_shape(model)
        if case.kind == "conv" and case.c_in == 3:
            samples = synthetic_images(calib, case.test_size, seed=2000 + seed)
        else:
            rng = np.random.default_rng(3000 + seed)
            samples = np.abs(rng.normal(0, 1, (calib, *shape[1:]))).astype(np.float32)
        # A lone max pool or flatten is quantised only when told to (onnxruntime quantises a
        # pass-through operator only behind a quantised producer).
        quantize(model, p, samples,
                 extra_options={"ForceQuantizeNoInputCheck": case.kind in ("maxpool", "fc")})

    return _cached(path, make)
