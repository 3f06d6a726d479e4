"""Where the logic of the iCE40 board design is: LUT4s and flip-flops per block.

Usage: ``.venv/bin/python benchmarks/ice40_area.py [--config tiny] [--divisor 8]``.

The board's system (:class:`~hdl.board.NpuSystem`: the Npu, SPRAM, the UART bridge) is
elaborated for the configuration and synthesised with YoWASP Yosys the way ``synth_ice40``
does it, but without flattening the blocks of interest, up to LUT mapping (``abc -lut 4``), so
that each block's LUT4s and flip-flops can be read from ``stat``. The multipliers the flow
maps to ``SB_MAC16`` are the same (``-dsp``). The totals are close to, not equal to, the
placed design's (the flattened flow optimises across block boundaries). Results are printed
as a table and written to ``benchmarks/results/ice40_area.json``.
"""

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from gen.toolchain import tool_env
from hdl.board import NpuSystem
from hdl.config import NpuConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ice40_area.json"
#: the blocks kept apart (hierarchical names below the system top); everything else is
#: flattened into its parent.
BLOCKS = ["top.npu", "top.npu.command", "top.npu.datapath", "top.npu.datapath.execute",
          "top.npu.datapath.postproc", "top.npu.dma_load", "top.npu.dma_store", "top.npu.axi",
          "top.npu.csr", "top.bridge"]
SCRIPT = """read_rtlil top.il
hierarchy -top top
proc
booth top.npu top.npu.command top.npu.datapath.execute top.npu.datapath.postproc
{keep}
synth_ice40 -dsp -noflatten -top top -run begin:map_luts
techmap -map +/gate2lut.v -D LUT_WIDTH=4
abc -lut 4
opt_clean
tee -o stat.txt stat
"""


def measure(config, divisor, blocks=BLOCKS):
    system = NpuSystem(config, divisor=divisor, ram_kind="spram")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "top.il").write_text(rtlil.convert(system, name="top"))
        keep = "\n".join(f"setattr -mod -set keep_hierarchy 1 {b}" for b in blocks)
        (work / "top.ys").write_text(SCRIPT.format(keep=keep + "\nflatten"))
        env = tool_env()
        start = time.time()
        subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "top.ys"], cwd=work, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        stat = (work / "stat.txt").read_text()
    return parse_stat(stat), round(time.time() - start)


def parse_stat(text):
    """``{block: {"lut", "ff", "carry", "dsp", "bram"}}`` from Yosys ``stat`` output: each
    block's own cells (its kept sub-blocks excluded, everything flattened into it included)."""
    out = {}
    for section in re.split(r"\n=== ", "\n" + text)[1:]:
        name = section.split(" ===", 1)[0].strip()
        if name == "design hierarchy":
            continue
        cells = {c: int(n) for n, c in re.findall(r"^\s+(\d+)\s+(\S+)$", section, re.M)}
        carry = cells.get("$__ICE40_CARRY_WRAPPER", 0)     # a LUT4 and its SB_CARRY
        out[name] = {
            "lut": cells.get("$lut", 0) + carry,
            "ff": sum(n for c, n in cells.items() if c.startswith("SB_DFF")),
            "carry": carry,
            "dsp": cells.get("SB_MAC16", 0),
            "bram": cells.get("SB_RAM40_4K", 0),
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--divisor", type=int, default=8, help="UART clock cycles per bit")
    ap.add_argument("--keep", action="append", default=[], metavar="BLOCK",
                    help="another block to keep apart, e.g. top.npu.command.load_queue")
    args = ap.parse_args()
    config = NpuConfig.load(args.config)
    stats, seconds = measure(config, args.divisor, BLOCKS + args.keep)
    print(f"{'block':<32} {'LUT4':>7} {'FF':>7} {'carry':>6} {'DSP':>4} {'BRAM':>5}")
    total = {k: sum(s[k] for s in stats.values()) for k in ("lut", "ff", "carry", "dsp", "bram")}
    for name, s in sorted(stats.items()) + [("total", total)]:
        print(f"{name:<32} {s['lut']:>7} {s['ff']:>7} {s['carry']:>6} {s['dsp']:>4} "
              f"{s['bram']:>5}")
    print(f"({seconds} s)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "ice40_area", "config": config.name,
                                   "blocks": stats}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
