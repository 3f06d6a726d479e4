"""A real-data model: a small ResNet trained on scikit-learn's handwritten digits.

``python -m firmware.digits`` trains it in numpy (no deep-learning framework needed), exports it
to ONNX, quantises it with onnxruntime's ``quantize_static`` (QDQ, per-channel) calibrated on
training images, and writes the fixture the tests use::

    tests/fixtures/digits_resnet.int8.onnx   the quantised model (about 30 KB)
    tests/fixtures/digits_resnet.json        split, float and int8 accuracy, training settings

The data are the 1797 8x8 images of ``sklearn.datasets.load_digits`` (real scans, shipped inside
scikit-learn), scaled to [0, 1] and normalised; the held-out split is a seeded stratified 20%.

The network (NCHW, 1 x 1 x 8 x 8 in, 10 logits out)::

    conv 3x3, 1 -> 16, ReLU                                          8 x 8
    basic block: conv 3x3 16 -> 16, ReLU, conv 3x3 16 -> 16, + x, ReLU
    conv 3x3 / 2, 16 -> 32, ReLU                                      4 x 4
    basic block: conv 3x3 32 -> 32, ReLU, conv 3x3 32 -> 32, + x, ReLU
    global average pool, flatten, fully connected 32 -> 10

Trained with Adam on the softmax cross-entropy, seeded, in a few minutes on one core.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["load_split", "train", "export", "FIXTURE", "FIXTURE_INFO", "MEAN", "STD"]

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "digits_resnet.int8.onnx"
FIXTURE_INFO = REPO / "tests" / "fixtures" / "digits_resnet.json"
MEAN, STD = 0.3, 0.4
SEED = 0


def load_split(seed=SEED, test_fraction=0.2):
    """(x_train, x_test, y_train, y_test): float32 NCHW images, normalised, and int labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = ((d.images / 16.0 - MEAN) / STD).astype(np.float32)[:, None]
    return train_test_split(x, d.target, test_size=test_fraction, random_state=seed,
                            stratify=d.target)


# -- a tiny autograd-free trainer ------------------------------------------------------------------


def _im2col(x, k, stride, pad):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, oh, ow), x.dtype)
    for ky in range(k):
        for kx in range(k):
            cols[:, :, ky, kx] = xp[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * k * k), (oh, ow)


def _col2im(cols, shape, k, stride, pad, oh, ow):
    n, c, h, w = shape
    cols = cols.reshape(n, oh, ow, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), cols.dtype)
    for ky in range(k):
        for kx in range(k):
            xp[:, :, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride] += cols[:, :, ky, kx]
    return xp[:, :, pad:pad + h, pad:pad + w]


class _Conv:
    def __init__(self, rng, c_in, c_out, stride=1):
        self.w = rng.normal(0, np.sqrt(2 / (9 * c_in)), (c_out, c_in, 3, 3)).astype(np.float32)
        self.b = np.zeros(c_out, np.float32)
        self.stride = stride

    def params(self):
        return [self.w, self.b]

    def forward(self, x):
        cols, (oh, ow) = _im2col(x, 3, self.stride, 1)
        self.cache = (cols, x.shape, oh, ow)
        y = cols @ self.w.reshape(len(self.b), -1).T + self.b
        return y.reshape(x.shape[0], oh, ow, -1).transpose(0, 3, 1, 2)

    def backward(self, dy):
        cols, shape, oh, ow = self.cache
        d = dy.transpose(0, 2, 3, 1).reshape(-1, len(self.b))
        self.grads = [(d.T @ cols).reshape(self.w.shape), d.sum(0)]
        return _col2im(d @ self.w.reshape(len(self.b), -1), shape, 3, self.stride, 1, oh, ow)


class _Net:
    """conv1, block1 (a, b), down, block2 (a, b), fc."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.conv1 = _Conv(rng, 1, 16)
        self.b1a, self.b1b = _Conv(rng, 16, 16), _Conv(rng, 16, 16)
        self.down = _Conv(rng, 16, 32, stride=2)
        self.b2a, self.b2b = _Conv(rng, 32, 32), _Conv(rng, 32, 32)
        self.b1b.w *= 0.3
        self.b2b.w *= 0.3
        self.fc_w = rng.normal(0, 1 / np.sqrt(32), (10, 32)).astype(np.float32)
        self.fc_b = np.zeros(10, np.float32)
        self.convs = [self.conv1, self.b1a, self.b1b, self.down, self.b2a, self.b2b]

    def params(self):
        return [p for c in self.convs for p in c.params()] + [self.fc_w, self.fc_b]

    def forward(self, x):
        r = lambda v: np.maximum(v, 0)   # noqa: E731
        self.h0 = r(self.conv1.forward(x))
        self.h1 = r(self.b1a.forward(self.h0))
        self.h2 = r(self.b1b.forward(self.h1) + self.h0)
        self.h3 = r(self.down.forward(self.h2))
        self.h4 = r(self.b2a.forward(self.h3))
        self.h5 = r(self.b2b.forward(self.h4) + self.h3)
        self.g = self.h5.mean(axis=(2, 3))
        return self.g @ self.fc_w.T + self.fc_b

    def backward(self, dlogits):
        self.fc_grads = [dlogits.T @ self.g, dlogits.sum(0)]
        dg = dlogits @ self.fc_w
        dh5 = np.broadcast_to(dg[:, :, None, None] / 16, self.h5.shape) * (self.h5 > 0)
        dh4 = self.b2b.backward(dh5) * (self.h4 > 0)
        dh3 = (self.b2a.backward(dh4) + dh5) * (self.h3 > 0)
        dh2 = self.down.backward(dh3) * (self.h2 > 0)
        dh1 = self.b1b.backward(dh2) * (self.h1 > 0)
        dh0 = (self.b1a.backward(dh1) + dh2) * (self.h0 > 0)
        self.conv1.backward(dh0)

    def grads(self):
        return [g for c in self.convs for g in c.grads] + self.fc_grads


def train(x, y, epochs=40, batch=64, lr=3e-3, seed=SEED):
    """Adam on softmax cross-entropy; returns the trained :class:`_Net`."""
    net = _Net(seed)
    rng = np.random.default_rng(seed + 1)
    params = net.params()
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            logits = net.forward(x[idx])
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1
            net.backward(p / len(idx))
            t += 1
            for k, (w, g) in enumerate(zip(params, net.grads())):
                m[k] = 0.9 * m[k] + 0.1 * g
                v[k] = 0.999 * v[k] + 0.001 * g * g
                w -= lr * (m[k] / (1 - 0.9**t)) / (np.sqrt(v[k] / (1 - 0.999**t)) + 1e-8)
    return net


def export(net) -> onnx.ModelProto:
    """The trained network as a float32 ONNX model."""
    nodes, inits = [], []

    def conv(name, x, c, relu=True, residual=None):
        inits.extend([numpy_helper.from_array(c.w, f"{name}.w"),
                      numpy_helper.from_array(c.b, f"{name}.b")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"],
                                      name=name, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                      strides=[c.stride] * 2))
        out = f"{name}.y"
        if residual is not None:
            nodes.append(helper.make_node("Add", [out, residual], [f"{name}.add"],
                                          name=f"{name}.add"))
            out = f"{name}.add"
        if relu:
            nodes.append(helper.make_node("Relu", [out], [f"{name}.relu"], name=f"{name}.relu"))
            out = f"{name}.relu"
        return out

    h0 = conv("conv1", "input", net.conv1)
    h1 = conv("block1.conv1", h0, net.b1a)
    h2 = conv("block1.conv2", h1, net.b1b, residual=h0)
    h3 = conv("down", h2, net.down)
    h4 = conv("block2.conv1", h3, net.b2a)
    h5 = conv("block2.conv2", h4, net.b2b, residual=h3)
    nodes.append(helper.make_node("GlobalAveragePool", [h5], ["gap"], name="avgpool"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1))
    inits.extend([numpy_helper.from_array(net.fc_w, "fc.w"),
                  numpy_helper.from_array(net.fc_b, "fc.b")])
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc",
                                  transB=1))
    graph = helper.make_graph(
        nodes, "digits_resnet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="npugen.firmware.digits")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_predict(model, x):
    """onnxruntime's predicted classes of a (path or bytes) model, one image at a time."""
    from .reference import ort_session
    sess = ort_session(model)
    return np.array([int(sess.run(None, {"input": xi[None]})[0].argmax()) for xi in x])


def main():
    from .models import quantize
    x_tr, x_te, y_tr, y_te = load_split()
    net = train(x_tr, y_tr)
    model = export(net)
    float_acc = float(np.mean(ort_predict(model, x_te) == y_te))
    quantize(model, FIXTURE, x_tr[:256])
    int8_pred = ort_predict(FIXTURE, x_te)
    info = {"dataset": "sklearn.datasets.load_digits (1797 8x8 images)",
            "split": {"seed": SEED, "test_fraction": 0.2, "train": len(x_tr), "test": len(x_te)},
            "normalisation": {"mean": MEAN, "std": STD, "scale": "pixel / 16"},
            "training": "numpy, Adam lr 3e-3, batch 64, 40 epochs, seed 0",
            "calibration": "first 256 training images",
            "float_accuracy": float_acc,
            "int8_accuracy_onnxruntime": float(np.mean(int8_pred == y_te))}
    FIXTURE_INFO.write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
