"""ResNet-50 (224x224): compile time and golden-model run time, and agreement with onnxruntime.

Usage: ``.venv/bin/python benchmarks/compile_and_golden.py [--config default] [--images 2]
[--repeat 3] [--arch resnet50] [--size 224]``

Targets (ARCHITECTURE.md): compile under 5 s, golden-model run under 30 s, on a 2-core machine.
The model is the seeded ResNet-50 of :mod:`firmware.models`, quantised by onnxruntime's
``quantize_static`` (QDQ, per-channel) and cached in build/models (its build time is reported
separately and not part of the compile time). The compile time is the best of ``--repeat`` runs
of :func:`firmware.compiler.compile_model` from the ONNX file (import, lower, allocate,
schedule, encode); the golden time is one :func:`firmware.driver.run` per image (image load,
quantisation, the whole command stream on :class:`firmware.golden.GoldenNpu`, read-back).

Results are printed and written to ``benchmarks/results/compile_golden.json``.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from firmware import driver
from firmware.compiler import compile_model
from firmware.models import quantized_resnet, synthetic_images
from firmware.reference import ort_session

RESULTS = Path(__file__).resolve().parent / "results" / "compile_golden.json"
TARGETS = {"compile_s": 5.0, "golden_s": 30.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=2, help="inputs run on the golden model")
    ap.add_argument("--repeat", type=int, default=3, help="compile runs (the best is kept)")
    ap.add_argument("--output", default=str(RESULTS))
    args = ap.parse_args()

    t0 = time.perf_counter()
    path = quantized_resnet(args.arch, args.size, 1000, calib=4)
    t_model = time.perf_counter() - t0

    compile_times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        prog = compile_model(path, args.config)
        compile_times.append(time.perf_counter() - t0)

    sess = ort_session(path)
    out = prog.manifest["output"]
    runs = []
    for seed in range(args.images):
        x = synthetic_images(1, args.size, seed=seed)
        backend = driver.GoldenBackend()
        t0 = time.perf_counter()
        y = driver.run(prog, x, backend=backend)
        t_golden = time.perf_counter() - t0
        t0 = time.perf_counter()
        y_ort = sess.run(None, {prog.manifest["input"]["name"]: x})[0]
        t_ort = time.perf_counter() - t0

        def q(v):
            return np.rint(v / np.float32(out["scale"])) + out["zero_point"]

        diff = np.abs(q(y) - q(y_ort))
        runs.append({"image": seed, "golden_s": round(t_golden, 3), "onnxruntime_s":
                     round(t_ort, 4), "equal_fraction": float(np.mean(diff == 0)),
                     "max_abs_diff_lsb": int(diff.max()), "within_1_lsb_fraction":
                     float(np.mean(diff <= 1)), "top1": int(y.argmax()),
                     "top1_onnxruntime": int(y_ort.argmax()),
                     "golden_macs": int(backend.last_result.counters["macs"])})

    m = prog.manifest
    result = {
        "benchmark": "compile_and_golden",
        "model": f"{args.arch} {args.size}x{args.size}, 1000 classes, seeded weights, "
                 f"onnxruntime quantize_static QDQ per-channel int8",
        "config": args.config,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1min": round(os.getloadavg()[0], 2)},
        "model_build_s": round(t_model, 3),
        "compile_s": round(min(compile_times), 3),
        "compile_runs_s": [round(t, 3) for t in compile_times],
        "golden_s": round(min(r["golden_s"] for r in runs), 3),
        "targets": TARGETS,
        "meets_targets": {"compile": min(compile_times) < TARGETS["compile_s"],
                          "golden": min(r["golden_s"] for r in runs) < TARGETS["golden_s"]},
        "program": {"commands": prog.num_commands, "image_bytes": prog.image_size,
                    "activation_bytes": m["memory"]["activations"]["size"],
                    "activation_bytes_without_reuse": m["memory"]["activations"]["without_reuse"],
                    "layers": len(m["layers"]),
                    **{f"total_{k}": v for k, v in m["totals"].items()}},
        "runs": runs,
    }
    dest = Path(args.output)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{args.arch} {args.size}x{args.size} on config {args.config} "
          f"({os.cpu_count()} CPUs, load {result['machine']['load_average_1min']})")
    print(f"  model (cached after first build)  {t_model:8.2f} s")
    print(f"  compile (best of {args.repeat})            {min(compile_times):8.2f} s   "
          f"target < {TARGETS['compile_s']:.0f} s   {prog.num_commands} commands, "
          f"{prog.image_size / 2**20:.1f} MiB image")
    for r in runs:
        print(f"  golden run, image {r['image']}             {r['golden_s']:8.2f} s   "
              f"target < {TARGETS['golden_s']:.0f} s   vs onnxruntime: "
              f"{r['equal_fraction']:.1%} equal, {r['within_1_lsb_fraction']:.1%} within 1 LSB, "
              f"max {r['max_abs_diff_lsb']} LSB, top-1 {r['top1']} / {r['top1_onnxruntime']}")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
