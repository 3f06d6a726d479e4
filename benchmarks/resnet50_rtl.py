"""Full ResNet-50 on the RTL: wall time, simulated cycles, and per layer the cycles, the MAC
utilization, the bytes moved and the compiler's prediction next to the measurement.

Usage: ``.venv/bin/python benchmarks/resnet50_rtl.py [--config default] [--size 224]
[--images 1] [--stall 0] [--latency 0] [--no-docs]``

The model is the seeded ResNet-50 of :mod:`firmware.models`, quantised by onnxruntime's
``quantize_static`` (the same cached file as ``benchmarks/compile_and_golden.py``), compiled for
the configuration and run on the generated Verilog in Verilator through the RTL backend
(:mod:`sim.rtl`: HDL-side memory loaded in bulk, HDL clock, Python asleep until the interrupt).
Every run is checked bit for bit against the golden model. Per-layer cycles come from the
retirement trace (each layer ends with a barrier; the layers add up to the CYCLES counter);
MAC utilization is ``layer MACs / (rows x cols x layer cycles)``, and the network's figure is
the MAC-weighted one: ``sum(MACs) / (rows x cols x sum(cycles))``.

Writes ``benchmarks/results/resnet50_rtl_<config>.json``, ``..._layers.csv``, a per-layer
utilization plot ``..._utilization.png``, and (unless ``--no-docs``) the section between the
``resnet50_rtl`` markers in docs/performance.md.
"""

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from firmware import driver
from firmware.compiler import compile_model
from firmware.models import quantized_resnet, synthetic_images
from hdl.config import REPO, NpuConfig
from sim.rtl import RtlBackend, layer_report

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = REPO / "docs" / "performance.md"
TARGETS = {"wall_s": 300.0, "utilization": 0.90}
MARK = ("<!-- resnet50_rtl:begin -->", "<!-- resnet50_rtl:end -->")


def plot(rows, cfg, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [r["layer"] for r in rows]
    util = [100 * r["utilization"] for r in rows]
    pred = [100 * r["macs"] / (cfg.macs * r["predicted_cycles"]) if r["predicted_cycles"] else 0
            for r in rows]
    fig, ax = plt.subplots(figsize=(14, 4.5))
    x = np.arange(len(rows))
    ax.bar(x, util, color="tab:blue", label="measured (RTL)")
    ax.plot(x, pred, "k_", markersize=9, label="compiler's prediction")
    ax.axhline(100 * TARGETS["utilization"], color="tab:red", lw=0.8, ls="--",
               label=f"target {TARGETS['utilization']:.0%} (network, MAC-weighted)")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylabel("MAC utilization (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result, rows, cfg, args):
    lines = [
        MARK[0],
        "## ResNet-50 on the RTL",
        "",
        f"`{result['command']}`",
        "",
        f"Seeded ResNet-50 at {args.size}x{args.size} (onnxruntime `quantize_static`, QDQ "
        f"per-channel int8), config `{cfg.name}` ({cfg.rows}x{cfg.cols} array, "
        f"{cfg.bus_data_width}-bit bus), Verilator {result['verilator']}, memory model latency "
        f"{args.latency} cycles and {args.stall}% stalls. Machine: {result['machine']['cpus']} "
        f"CPUs, load {result['machine']['load_average_1min']} at the start.",
        "",
        "| what | measured | target |",
        "|---|---|---|",
    ]
    r0 = result["runs"][0]
    lines += [
        f"| wall time of the RTL run (memory load + simulation + read-back) | "
        f"{r0['wall_s']:.0f} s | < {TARGETS['wall_s']:.0f} s "
        f"({'met' if r0['wall_s'] < TARGETS['wall_s'] else 'missed'}) |",
        f"| simulated cycles | {r0['cycles']:,} ({r0['cycles_per_s']:,.0f} cycles/s) | |",
        f"| MAC utilization, all layers, MAC-weighted | {result['utilization']:.1%} | >= "
        f"{TARGETS['utilization']:.0%} "
        f"({'met' if result['utilization'] >= TARGETS['utilization'] else 'missed'}) |",
        f"| ideal cycles (MACs / PEs) | {result['ideal_cycles']:,} | |",
        f"| compiler's predicted cycles | {result['predicted_cycles']:,} | |",
        f"| bit-exact with the golden model | {result['bit_exact']} | yes |",
        f"| Verilator build (once per configuration, cached) | {result['build_s']:.0f} s "
        f"(this run) | |",
        "",
        f"Per layer (also `benchmarks/results/{Path(result['csv']).name}`; plot "
        f"`benchmarks/results/{Path(result['plot']).name}`):",
        "",
        f"![per-layer MAC utilization](../benchmarks/results/{Path(result['plot']).name})",
        "",
        "| layer | MACs | cycles | predicted | MAC-active | utilization | bytes moved |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['macs']:,} | {r['cycles']:,} | "
                     f"{r['predicted_cycles']:,} | {r['mac_active']:,} | "
                     f"{r['utilization']:.1%} | {r['bytes_moved']:,} |")
    lines.append(MARK[1])
    return "\n".join(lines)


def update_docs(section):
    text = DOCS.read_text()
    if MARK[0] in text:
        a = text.index(MARK[0])
        b = text.index(MARK[1]) + len(MARK[1])
        text = text[:a] + section + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--stall", type=int, default=0)
    ap.add_argument("--latency", type=int, default=0)
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()
    cfg = NpuConfig.load(args.config)
    from gen.toolchain import verilator_version

    load = round(os.getloadavg()[0], 2)
    path = quantized_resnet("resnet50", args.size, 1000, calib=4)
    prog = compile_model(path, cfg, memory_size=None if args.size == 224 else None)
    xs = [synthetic_images(1, args.size, seed=s) for s in range(args.images)]
    qs = [driver.quantize_input(prog, x) for x in xs]
    t0 = time.perf_counter()
    gold = driver.run_int8_batch(prog, qs, "golden")
    golden_s = time.perf_counter() - t0
    be = RtlBackend(stall=args.stall, latency=args.latency, progress=True)
    t0 = time.perf_counter()
    got = driver.run_int8_batch(prog, qs, be)
    total_s = time.perf_counter() - t0
    exact = all(np.array_equal(a, b) for a, b in zip(got, gold))
    runs = []
    for i, run in enumerate(be.last):
        runs.append({"image": i, "cycles": run.perf["CYCLES"], "sim_s": round(run.wall_s, 1),
                     "cycles_per_s": run.perf["CYCLES"] / run.wall_s,
                     "wall_s": round(run.wall_s + be.load_s / len(be.last), 1),
                     "bit_exact": bool(np.array_equal(got[i], gold[i])),
                     "top1": int(got[i].argmax()), "perf": run.perf})
    rows = layer_report(prog, be.last[0])
    macs = sum(r["macs"] for r in rows)
    cycles = sum(r["cycles"] for r in rows)
    ver = verilator_version()
    stem = RESULTS / f"resnet50_rtl_{cfg.name}" if args.size == 224 else \
        RESULTS / f"resnet50_{args.size}_rtl_{cfg.name}"
    RESULTS.mkdir(exist_ok=True)
    csv_path = stem.with_name(stem.name + "_layers.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    png = stem.with_name(stem.name + "_utilization.png")
    plot(rows, cfg, png, f"ResNet-50 {args.size}x{args.size} on the RTL, config {cfg.name} "
                         f"({cfg.rows}x{cfg.cols}): {macs / (cfg.macs * cycles):.1%} overall")
    cmd = "python benchmarks/resnet50_rtl.py" + "".join(
        f" --{k} {v}" for k, v in (("config", args.config), ("size", args.size),
                                   ("stall", args.stall), ("latency", args.latency))
        if v not in ("default", 224, 0))
    result = {
        "benchmark": "resnet50_rtl", "command": cmd, "config": cfg.name, "size": args.size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_1min": load},
        "verilator": f"{ver[0]}.{ver[1]:03d}", "build_s": round(be.build_s, 1),
        "load_s": round(be.load_s, 1), "total_s": round(total_s, 1),
        "golden_s": round(golden_s, 1), "bit_exact": "yes" if exact else "NO",
        "utilization": macs / (cfg.macs * cycles), "macs": macs, "cycles": cycles,
        "ideal_cycles": prog.manifest["totals"]["ideal_cycles"],
        "predicted_cycles": prog.manifest["totals"]["predicted_cycles"],
        "targets": TARGETS, "runs": runs, "csv": str(csv_path), "plot": str(png),
        "layers": rows,
    }
    out = stem.with_name(stem.name + ".json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    section = markdown(result, rows, cfg, args)
    if not args.no_docs and args.size == 224:
        update_docs(section)
    print(section)
    print(f"wrote {out}, {csv_path}, {png}")
    if not exact:
        raise SystemExit("the RTL output differs from the golden model")


if __name__ == "__main__":
    main()
