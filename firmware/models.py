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
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["ARCHS", "MODEL_DIR", "build_resnet", "float_resnet", "quantized_resnet",
           "quantize", "synthetic_images", "ArrayReader", "model_input_shape"]

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


def quantize(float_model, output, calib, fmt="qdq", activations="int8") -> Path:
    """Quantise a float ONNX model with onnxruntime: ``quant_pre_process`` (shape inference and
    graph optimisation, which folds batch norm), then ``quantize_static`` with per-channel
    symmetric int8 weights and asymmetric activations, MinMax calibration on ``calib`` (an array
    of samples, each of the model input's shape without the batch axis).

    ``fmt`` is ``"qdq"`` (QuantizeLinear/DequantizeLinear around float operators, the default and
    onnxruntime's recommendation) or ``"qop"`` (QLinearConv and friends); ``activations`` is
    ``"int8"`` or ``"uint8"``. The output is written atomically (no partial file on failure).
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
        quant_pre_process(model, str(pre), skip_symbolic_shape=True)
        partial = Path(tmp) / "quant.onnx"
        quantize_static(str(pre), str(partial), ArrayReader(name, calib),
                        quant_format=formats[fmt], per_channel=True,
                        activation_type=types[activations], weight_type=QuantType.QInt8)
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
                     activations="int8") -> Path:
    """Path of the cached int8 model (``fmt`` and ``activations`` as :func:`quantize`),
    calibrated on ``calib`` synthetic images."""
    kind = fmt if activations == "int8" else f"{fmt}-{activations}"
    path = MODEL_DIR / (f"{arch}_{size}_c{num_classes}_s{seed}_v{MODELS_VERSION}_cal{calib}"
                        f".{kind}.onnx")
    src = float_resnet(arch, size, num_classes, seed)
    return _cached(path, lambda p: quantize(src, p, synthetic_images(calib, size, seed=1000 + seed),
                                            fmt, activations))
