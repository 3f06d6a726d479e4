"""How small tiny's board design gets on the iCE40 UP5K with its optional features left out.

Usage: ``.venv/bin/python benchmarks/ice40_floor.py [--config tiny] [--jobs 2]``.

Each variant is the board top of ``npugen bitstream --board icebreaker``, synthesised by the
build's own Yosys script (``synth_ice40 -dsp``, flattened; no place and route), with its LUT4s
and flip-flops read from the build's report the way the build checks the fit. The variants
leave out, one at a time and then together:

- ``counters``: the performance counters other than CYCLES (configuration: ``perf.counters``)
- ``pool``: the POOL command (its decode forced false in the execute unit)
- ``residual``: STORE's residual read and the post-processor's stage 2 (forced off)
- ``checks``: the command processor's checks of each opcode's fields, buffer spans and memory
  window (the fetch's and header's checks stay)
- ``queues``: a STORE queue of one command, one read and one write burst in flight
  (configuration: ``queues.store_depth``, ``bus.max_reads``, ``bus.max_writes``)

The RTL is forced by ``benchmarks/patches/ice40_floor.patch``, applied to a temporary worktree
of HEAD and switched by the ``NPUGEN_FLOOR`` environment variable: the repository's RTL has none
of it. The variants measure what leaving a feature out would save; they are not configurations
the compiler and the golden model know. The table is printed and written to
``benchmarks/results/ice40_floor.json``.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
PATCH = ROOT / "benchmarks" / "patches" / "ice40_floor.patch"
RESULTS = ROOT / "benchmarks" / "results" / "ice40_floor.json"
CONFIG_EDITS = {    # variant -> (TOML line pattern, replacement)
    "counters": [(r"^counters = \[.*?\]", 'counters = ["CYCLES"]')],
    "queues": [(r"^store_depth = \d+", "store_depth = 1"), (r"^max_reads = \d+", "max_reads = 1"),
               (r"^max_writes = \d+", "max_writes = 1")],
}
RTL = ("pool", "residual", "checks")
ALL = ("counters", "pool", "residual", "checks")
VARIANTS = [(), ("counters",), ("pool",), ("residual",), ("checks",), ALL, ALL + ("queues",)]


def edit_config(text, leave_out):
    """The configuration's TOML text with the configuration variants of ``leave_out`` applied."""
    for part in leave_out:
        for pattern, repl in CONFIG_EDITS.get(part, []):
            text, n = re.subn(pattern, repl, text, count=1, flags=re.M | re.S)
            if n != 1:
                raise SystemExit(f"ice40_floor: the configuration has no line matching "
                                 f"{pattern!r} (variant {part!r})")
    return text


def synthesise(config_path):
    """(In the patched worktree.) The board top's needs after synthesis and the device's
    capacity: ``{"needs": {resource: count}, "capacity": {resource: count}}``."""
    from gen.bitstream import build_plan, synthesis_needs, yosys_cell_counts
    from gen.toolchain import tool_env
    plan, board, _config, _top = build_plan("icebreaker", config_path)
    with tempfile.TemporaryDirectory() as tmp:
        plan.extract(tmp)
        cmd = json.loads((Path(tmp) / "build_top.json").read_text())["commands"][0]
        env = tool_env()
        argv = [env.get("YOSYS", "yosys"), *cmd[1:]]
        with open(Path(tmp) / "yosys.log", "w") as log:
            subprocess.run(argv, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                           check=True)
        cells = yosys_cell_counts((Path(tmp) / "top.rpt").read_text(errors="replace"))
    return {"needs": synthesis_needs(cells, "ice40"), "capacity": board.capacity}


def run_variant(tree, config_text, leave_out, tmp):
    name = "+".join(leave_out) or "as configured"
    path = Path(tmp) / f"{'_'.join(leave_out) or 'base'}.toml"
    path.write_text(edit_config(config_text, leave_out))
    env = dict(os.environ, PYTHONPATH=str(tree),
               NPUGEN_FLOOR=",".join(p for p in leave_out if p in RTL))
    out = subprocess.run([sys.executable, __file__, "--synthesise", str(path)], cwd=tree,
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"ice40_floor: variant {name!r} failed:\n{out.stderr[-2000:]}")
    return name, json.loads(out.stdout.splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", help="shipped configuration name or TOML path")
    ap.add_argument("--jobs", type=int, default=2, help="syntheses at once")
    ap.add_argument("--synthesise", metavar="TOML", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.synthesise:
        print(json.dumps(synthesise(args.synthesise)))
        return

    from hdl.config import NpuConfig, config_path
    config = NpuConfig.load(args.config)
    config_text = config_path(args.config).read_text()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), "HEAD"],
                       cwd=ROOT, check=True)
        try:
            subprocess.run(["git", "apply", str(PATCH)], cwd=tree, check=True)
            rows = {}
            with ThreadPoolExecutor(args.jobs) as pool:
                jobs = [pool.submit(run_variant, tree, config_text, v, tmp) for v in VARIANTS]
                for job in tqdm(jobs, desc="synthesis", unit="variant"):
                    name, out = job.result()
                    rows[name], cap = out["needs"], out["capacity"]["LUT"]
        finally:
            shutil.rmtree(tree, ignore_errors=True)
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
    base = rows["as configured"]
    print(f"| Left out ({config.name}) | LUT4 | FF | LUT4 saved | FF saved | LUT4 / device |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['LUT']:,} | {r['FF']:,} | {base['LUT'] - r['LUT']:,} | "
              f"{base['FF'] - r['FF']:,} | {r['LUT'] / cap:.2f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "ice40_floor", "config": config.name,
                                   "device_logic_cells": cap, "variants": rows}, indent=2)
                       + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
