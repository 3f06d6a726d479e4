"""Golden-model speed on ResNet-50 convolution layers: compile (kernels) and run times.

Usage: ``.venv/bin/python benchmarks/golden_speed.py [--config default] [--repeat 3]``

Prints a markdown table (one row per layer: shape, MACs, commands, compile ms, run ms, MMAC/s of
the golden model) and checks every result bit for bit against ``numerics.qlinear_conv``. Results
are recorded in docs/performance.md.
"""

import argparse
import time

import numpy as np
from tqdm import tqdm

from firmware import numerics
from firmware.golden import GoldenNpu
from gen.demo import compile_conv, resnet_conv_layer
from hdl.config import NpuConfig

#: (name, spatial size, c_in, c_out, kernel, stride) of representative ResNet-50 convolutions.
LAYERS = [
    ("conv1 (stem)", 224, 3, 64, 7, 2),
    ("res2a_branch2b", 56, 64, 64, 3, 1),
    ("res2a_branch2c", 56, 64, 256, 1, 1),
    ("res3a_branch2b", 28, 128, 128, 3, 1),
    ("res4a_branch1", 28, 512, 1024, 1, 2),
    ("res5a_branch2b", 7, 512, 512, 3, 1),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--repeat", type=int, default=3, help="runs per layer (the best is kept)")
    args = ap.parse_args()
    cfg = NpuConfig.load(args.config)
    rows = []
    for name, size, c_in, c_out, k, s in tqdm(LAYERS, desc="layers"):
        layer = resnet_conv_layer(size=size, c_in=c_in, c_out=c_out, k=k, stride=s)
        t0 = time.perf_counter()
        prog, yt = compile_conv(cfg, layer)
        t_compile = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.repeat):
            npu = GoldenNpu(cfg, prog.image_size, prog.base)
            prog.load_into(npu)
            t0 = time.perf_counter()
            result = npu.run(prog.prog_base, len(prog.commands)).raise_for_error()
            best = min(best, time.perf_counter() - t0)
        got = npu.read(yt.address, yt.size).view(np.int8).reshape(1, yt.height, yt.width, c_out)
        lo, hi = numerics.relu_bounds(layer.y_zp, layer.relu)
        want = numerics.qlinear_conv(layer.x, layer.x_scale, layer.x_zp, layer.w, layer.w_scale,
                                     layer.bias, layer.y_scale, layer.y_zp, layer.stride,
                                     layer.pad, lo, hi)
        exact = "yes" if np.array_equal(got, want) else "NO"
        rows.append((name, f"{size}x{size}x{c_in} -> {c_out}, {k}x{k}/{s}",
                     f"{layer.macs / 1e6:.1f}", str(len(prog.commands)),
                     f"{t_compile * 1e3:.0f}", f"{best * 1e3:.0f}",
                     f"{result.counters['macs'] / best / 1e6:.0f}", exact))
    header = ("layer", "shape", "MMACs", "commands", "compile ms", "golden ms",
              "golden MMAC/s", "bit-exact")
    print(f"\nconfig {cfg.name}: {cfg.rows}x{cfg.cols}, best of {args.repeat}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
