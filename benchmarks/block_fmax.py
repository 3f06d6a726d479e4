"""Fmax of single NPU blocks on the ECP5-85F, out of context: which block limits the clock.

Usage: ``.venv/bin/python benchmarks/block_fmax.py [--config small] [--block command ...]``.

Each block is elaborated alone for the configuration, synthesised with YoWASP Yosys as the
bitstream flow does it (``proc; booth`` first, so that its multipliers are logic, as they are
in the board build where the array and the post-processor take every DSP), then
``synth_ecp5 -noiopad``; nextpnr-ecp5 places and routes it with ``--out-of-context`` (no IO
buffers, no global clock routing) against 100 MHz, and the routed Fmax and the start and end
of the critical path are read from its log. A block's Fmax is an upper bound of the whole
design's: the board build adds the routing between blocks. Results are printed and written to
``benchmarks/results/block_fmax.json``.
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
from hdl.axi import AxiMaster
from hdl.command import CommandProcessor
from hdl.config import NpuConfig
from hdl.csr import CsrBank
from hdl.dma import DmaLoad, DmaStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "block_fmax.json"
#: name -> the block for a configuration. The post-processor is not among them: Yosys 0.70's
#: ABC step fails an assertion on it alone (``count_id(wire->name) == 0`` in
#: ABC_OPS_REINTEGRATE, with or without ``-noabc9``, flattened and renamed or not), which it
#: does not in the whole design.
BLOCKS = {
    "command": CommandProcessor,
    "csr": CsrBank,
    "axi": lambda c: AxiMaster(c, read_clients=3),
    "dma_load": DmaLoad,
    "dma_store": DmaStore,
}
SCRIPT = """read_rtlil block.il
hierarchy -top block
proc
booth
synth_ecp5 -noiopad -top block -json block.json
"""


def measure(name, config, mhz=100):
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "block.il").write_text(rtlil.convert(BLOCKS[name](config), name="block"))
        (work / "block.ys").write_text(SCRIPT)
        env = tool_env()            # the YoWASP tools, as the bitstream flow runs them
        start = time.time()
        subprocess.run([env["YOSYS"], "-q", "-l", "yosys.log", "block.ys"], cwd=work, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([env["NEXTPNR_ECP5"], "--85k", "--package", "CABGA381",
                        "--out-of-context", "--json", "block.json", "--freq", str(mhz),
                        "--timing-allow-fail", "-l", "nextpnr.log"], cwd=work, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = (work / "nextpnr.log").read_text(errors="replace")
    fmax = [float(f) for f in re.findall(r"Max frequency for clock '[^']*': ([\d.]+) MHz", log)]
    path = log[log.rfind("Critical path report"):]
    ends = re.findall(r"(?:Source|Sink) (\S+)", path)
    return {"block": name, "config": config.name, "fmax_mhz": fmax[-1] if fmax else None,
            "target_mhz": mhz, "path_from": ends[0] if ends else None,
            "path_to": ends[-1] if ends else None, "seconds": round(time.time() - start)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--block", action="append", choices=sorted(BLOCKS),
                    help="block to measure (repeatable; default: all)")
    args = ap.parse_args()
    config = NpuConfig.load(args.config)
    runs = []
    for name in args.block or sorted(BLOCKS):
        r = measure(name, config)
        runs.append(r)
        print(f"{name} ({config.name}): {r['fmax_mhz']} MHz routed, out of context "
              f"(target {r['target_mhz']}); critical path {r['path_from']} -> {r['path_to']}; "
              f"{r['seconds']} s", flush=True)
    # (merged with earlier runs: a block measured again replaces its earlier result)
    earlier = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else []
    fresh = {(r["block"], r["config"]) for r in runs}
    runs = [r for r in earlier if (r["block"], r["config"]) not in fresh] + runs
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"benchmark": "block_fmax", "device": "LFE5U-85F",
                                   "runs": runs}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
