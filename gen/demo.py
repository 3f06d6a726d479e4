"""``npugen demo``: a configuration's artifacts, one ResNet-50 layer checked on the golden model,
and a ResNet-50 bottleneck block on the RTL.

1. The layer is ResNet-50's res2a_branch2b (3x3, 64 -> 64 channels at 56x56, ReLU) with seeded
   weights, quantised as onnxruntime's quantize_static would (per-channel symmetric weights,
   per-tensor activations). It is compiled to commands for the configuration, run on the golden
   model, and compared bit for bit with the golden function ``numerics.qlinear_conv`` and within
   one LSB with onnxruntime's QLinearConv.
2. The block is ResNet-50's layer2.0 (1x1 256 -> 128, 3x3/2 128 -> 128, 1x1 128 -> 512, the
   1x1/2 256 -> 512 projection shortcut and the residual add with ReLU), built in ONNX with seeded
   weights, quantised by onnxruntime's quantize_static, compiled by the compiler, and run on the
   generated Verilog in Verilator (the first run builds the model: a few minutes for the
   default configuration) and on the golden model: PASS when the outputs are bit-identical;
   the cycles and the MAC utilization come from the NPU's performance counters.
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

__all__ = ["run_demo", "run_block_on_rtl", "QuantConv", "resnet_conv_layer"]


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


def run_demo(config, outdir, rtl=True):
    """Write the artifacts, run the layer on the golden model and (``rtl``) the block on the RTL,
    print the checks. Returns 0 on PASS, 1 on FAIL."""
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
    if not rtl:
        return 0 if ok else 1
    return run_block_on_rtl(config) if ok else 1


#: Simulated cycles the demo's RTL run aims at (a few seconds to half a minute of simulation).
DEMO_CYCLES = 3_000_000


def run_block_on_rtl(config):
    """The bottleneck block on the RTL against the golden model. Returns 0 on PASS, 1 on FAIL."""
    from firmware import driver
    from firmware.compiler import compile_model
    from firmware.models import LayerCase, quantized_layer
    from sim.rtl import RtlBackend

    for size in (56, 28, 16, 8):
        case = LayerCase("layer2.0", "bottleneck", 256, 128, 3, 2, True, 56, size)
        half = size // 2
        macs = size * size * 256 * 128 + half * half * (128 * 128 * 9 + 128 * 512 + 256 * 512)
        if macs // config.macs <= DEMO_CYCLES:
            break
    print(f"\nResNet-50 bottleneck {case.name} on the RTL: {size}x{size}x256 -> "
          f"{size // 2}x{size // 2}x512 (1x1, 3x3/2, 1x1, 1x1/2 shortcut, add, ReLU)")
    memory = 64 << 20
    prog = compile_model(quantized_layer(case), config, memory_size=memory)
    tot = prog.manifest["totals"]
    rng = np.random.default_rng(7)
    x = np.abs(rng.normal(0, 1, prog.manifest["input"]["onnx_shape"])).astype(np.float32)
    xq = driver.quantize_input(prog, x)
    want = driver.run_int8(prog, xq, "golden")
    be = RtlBackend(progress=None)
    t0 = time.perf_counter()
    try:
        got = driver.run_int8(prog, xq, be)
    except driver.DriverError as err:
        print(f"  rtl backend: {err}\nFAIL")
        return 1
    wall = time.perf_counter() - t0
    run = be.last[0]
    cycles = run.perf["CYCLES"]
    equal = np.array_equal(got, want)
    rows = [
        ("program", f"{prog.num_commands} commands, {tot['macs'] / 1e6:.1f} M MACs, "
                    f"{prog.image_size / 2**20:.2f} MiB image (for a {memory >> 20} MiB memory)"),
        ("rtl (verilator)", f"{cycles:,} cycles, {run.wall_s:.1f} s "
                            f"({cycles / max(run.wall_s, 1e-9):,.0f} cycles/s); {wall:.1f} s "
                            f"with the build check and memory load"),
        ("MAC utilization", f"{tot['macs'] / (config.macs * cycles):.1%} "
                            f"({tot['macs']:,} MACs / ({config.rows}x{config.cols} x "
                            f"{cycles:,} cycles)); compiler predicted "
                            f"{tot['predicted_cycles']:,} cycles"),
        ("vs golden model", f"{int(np.sum(got == want))}/{got.size} bit-exact"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print("PASS" if equal else "FAIL")
    return 0 if equal else 1
