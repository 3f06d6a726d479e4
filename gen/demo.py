"""``npugen demo``: a configuration's artifacts, and one ResNet-50 layer checked end to end.

The layer is ResNet-50's res2a_branch2b (3x3, 64 -> 64 channels at 56x56, ReLU) with seeded
weights, quantised as onnxruntime's quantize_static would (per-channel symmetric weights, per-tensor
activations). It is compiled to commands for the configuration, run on the golden model, and
compared bit for bit with the golden function ``numerics.qlinear_conv`` and within one LSB with
onnxruntime's QLinearConv.
"""

import time
from dataclasses import dataclass

import numpy as np

from firmware import numerics
from firmware.golden import GoldenNpu
from firmware.kernels import Requant, conv2d
from firmware.program import Program
from firmware.reference import ort_qlinear_conv

from .header import write_headers

__all__ = ["run_demo", "QuantConv", "resnet_conv_layer"]


@dataclass(frozen=True)
class QuantConv:
    """A quantised convolution layer and an input for it."""
    name: str
    x: np.ndarray          # int8 NHWC
    x_scale: float
    x_zp: int
    w: np.ndarray          # int8 (O, KH, KW, C)
    w_scale: np.ndarray    # (O,)
    bias: np.ndarray       # int32 (O,), scale x_scale * w_scale
    y_scale: float
    y_zp: int
    stride: tuple
    pad: tuple
    relu: bool

    @property
    def macs(self):
        o, kh, kw, c = self.w.shape
        oh = (self.x.shape[1] + self.pad[0] + self.pad[2] - kh) // self.stride[0] + 1
        ow = (self.x.shape[2] + self.pad[1] + self.pad[3] - kw) // self.stride[1] + 1
        return oh * ow * o * kh * kw * c


def resnet_conv_layer(seed=0, size=56, c_in=64, c_out=64, k=3, stride=1):
    """res2a_branch2b-like layer: He-initialised float weights, a post-ReLU float input, and the
    quantisation parameters static calibration would pick for them."""
    rng = np.random.default_rng(seed)
    pad = (k // 2,) * 4
    wf = rng.normal(0, np.sqrt(2 / (k * k * c_in)), (c_out, k, k, c_in)).astype(np.float32)
    bf = rng.normal(0, 0.1, c_out).astype(np.float32)
    xf = np.maximum(rng.normal(0.3, 1.0, (1, size, size, c_in)), 0).astype(np.float32)
    x_scale, x_zp = float(xf.max()) / 255, -128                # post-ReLU: [0, max] -> [-128, 127]
    x = np.clip(np.round(xf / x_scale) + x_zp, -128, 127).astype(np.int8)
    w_scale = np.abs(wf).reshape(c_out, -1).max(axis=1) / 127
    w = np.clip(np.round(wf / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    bias = np.round(bf / (x_scale * w_scale)).astype(np.int32)
    # Calibrate the output range on the dequantised conv of this input (ReLU: [0, max]).
    acc = numerics.conv2d(x, x_zp, w, bias, (stride, stride), pad).astype(np.float64)
    yf = np.maximum(acc * x_scale * w_scale, 0)
    y_scale, y_zp = float(yf.max()) / 255, -128
    return QuantConv("res2a_branch2b", x, x_scale, x_zp, w, w_scale, bias, y_scale, y_zp,
                     (stride, stride), pad, relu=True)


def compile_conv(config, layer):
    """Program for one layer: input and output tensors, weights, commands, END."""
    prog = Program(config)
    _, h, w_, c = layer.x.shape
    o = layer.w.shape[0]
    xt = prog.tensor("input", h, w_, c, layer.x[0])
    oh = (h + layer.pad[0] + layer.pad[2] - layer.w.shape[1]) // layer.stride[0] + 1
    ow = (w_ + layer.pad[1] + layer.pad[3] - layer.w.shape[2]) // layer.stride[1] + 1
    yt = prog.tensor("output", oh, ow, o)
    mult, shift = numerics.requant_params(layer.x_scale, layer.w_scale, layer.y_scale, o)
    folded = numerics.wrap_int32(layer.bias.astype(np.int64)
                                 - layer.x_zp * layer.w.astype(np.int64).sum(axis=(1, 2, 3)))
    lo, hi = numerics.relu_bounds(layer.y_zp, layer.relu)
    conv2d(prog, xt, layer.x_zp, layer.w, Requant(folded, mult, shift, layer.y_zp, lo, hi), yt,
           layer.stride, layer.pad, name=layer.name)
    prog.end()
    return prog, yt


def run_demo(config, outdir):
    """Write the artifacts, run the layer, print the checks. Returns 0 on PASS, 1 on FAIL."""
    print(f"npugen demo: config '{config.name}' ({config.rows}x{config.cols} array, "
          f"{config.bus_data_width}-bit bus)")
    art = outdir / config.name
    for path, changed in write_headers(config, art):
        print(f"  {'wrote' if changed else 'up to date'}: {path}")

    # The largest of ResNet-50's spatial sizes whose program fits the configuration's memory.
    for size in (56, 28, 14, 7):
        layer = resnet_conv_layer(size=size)
        prog, yt = compile_conv(config, layer)
        if prog.image_size <= config.window_size:
            break
    o, kh, kw, c = layer.w.shape
    print(f"\nlayer {layer.name}: {layer.x.shape[1]}x{layer.x.shape[2]}x{c} -> {o} channels, "
          f"{kh}x{kw} stride {layer.stride[0]} pad {layer.pad[0]}, ReLU, "
          f"{layer.macs / 1e6:.1f} M MACs")
    if size != 56:
        print(f"  (at {size}x{size}: the 56x56 layer does not fit this configuration's "
              f"{config.window_size // 1024} KiB memory)")
    t0 = time.perf_counter()
    prog, yt = compile_conv(config, layer)
    t_compile = time.perf_counter() - t0
    npu = GoldenNpu(config, prog.image_size, prog.base)
    prog.load_into(npu)
    t0 = time.perf_counter()
    result = npu.run(prog.prog_base, len(prog.commands))
    t_run = time.perf_counter() - t0
    if not result.ok:
        print(f"  golden model stopped: {result.message}\nFAIL")
        return 1
    got = npu.read(yt.address, yt.size).view(np.int8).reshape(1, yt.height, yt.width, o)

    lo, hi = numerics.relu_bounds(layer.y_zp, layer.relu)
    want = numerics.qlinear_conv(layer.x, layer.x_scale, layer.x_zp, layer.w, layer.w_scale,
                                 layer.bias, layer.y_scale, layer.y_zp, layer.stride, layer.pad,
                                 lo, hi)
    ort = ort_qlinear_conv(layer.x, layer.x_scale, layer.x_zp, layer.w, layer.w_scale,
                           layer.bias, layer.y_scale, layer.y_zp, layer.stride, layer.pad)
    exact = int(np.sum(got == want))
    diff = np.abs(got.astype(np.int32) - ort.astype(np.int32))
    ok = exact == got.size and diff.max() <= 1
    rows = [
        ("program", f"{len(prog.commands)} commands, {prog.image_size / 1024:.0f} KiB image, "
                    f"compiled in {t_compile * 1e3:.0f} ms"),
        ("golden model", f"{t_run * 1e3:.0f} ms, {result.counters['macs'] / 1e6:.1f} M MACs "
                         f"issued, {result.counters['bytes_read'] / 1024:.0f} KiB read, "
                         f"{result.counters['bytes_written'] / 1024:.0f} KiB written"),
        ("vs numerics.qlinear_conv", f"{exact}/{got.size} bit-exact"),
        ("vs onnxruntime QLinearConv", f"max |diff| {diff.max()} LSB, "
                                       f"{int(np.sum(diff == 0))}/{got.size} equal"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1
