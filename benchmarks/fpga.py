"""FPGA builds: utilization, Fmax and build time of the NPU board top per board and config.

Usage: ``.venv/bin/python benchmarks/fpga.py [--board icebreaker --board ulx3s-85f ...]
[--threads 1] [--append]``. Default: iCEBreaker with tiny and ULX3S-85F with small (the
OrangeCrab-85F builds the same design with other pins: ``--board orangecrab-85f``). A board
is ``board[:config][@MHz]``, the MHz the NPU clock if not the config's ``target.clock_mhz``
(``npugen bitstream --clock-mhz``): ``--board ulx3s-85f:small@48``.

Targets (the FPGA issue): the complete NPU (board top: Npu, on-chip RAM, UART bridge) at
>= 100 MHz on the ECP5-85F with >= 144 int8 MACs; tiny fits the UP5K with the digits model's
weights in SPRAM. For scale: VTA's 256-MAC design on a Zynq-7020 at 100 MHz peaks at
51.2 GOPS (2 ops per MAC per cycle); the peak of a build here is ``2 * MACs * Fmax``.

Each build goes to ``build/bitstream/bench-<board>-<config>``; ``--report DIR`` takes the
results of a finished ``npugen bitstream`` build from its ``DIR/report.json`` instead of
building again (repeatable); ``--append`` keeps the recorded results of other builds
(board, config and clock). The results are printed,
written to ``benchmarks/results/fpga.json`` and put in docs/performance.md between the
``<!-- fpga:begin -->`` and ``<!-- fpga:end -->`` markers. A build that fails (e.g. does not
fit) is recorded with its reason.
"""

import argparse
import json
import platform
import re
import subprocess
import time
from pathlib import Path

from gen.bitstream import BuildError, build_bitstream, report_markdown
from hdl.config import NpuConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fpga.json"
DOC = ROOT / "docs" / "performance.md"
DEFAULT = [("icebreaker", "tiny"), ("ulx3s-85f", "small")]


def _commit(e):
    return f" ({e['commit']})" if e.get("commit") else ""


def _section(entries):
    lines = ["<!-- fpga:begin -->", "",
             "| Board | Config | MACs | Result | LUT | FF | DSP | BRAM | Fmax / target (MHz) "
             "| Peak GOPS at its clock | Build |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        macs = e["macs"]
        if "error" in e:
            lines.append(f"| {e['board']} | {e['config']} | {macs} | {e['error']} | | | | | | "
                         f"| {e['seconds']:.0f} s{_commit(e)} |")
            continue
        u = e["utilization"]

        def cell(name, u=u):
            return f"{u[name]['used']:,} / {u[name]['available']:,}" if name in u else "-"
        clocks = [f for c, f in e["fmax"].items() if "npu_clk" in c] or list(e["fmax"].values())
        f = min(clocks, key=lambda v: v["achieved_mhz"])
        mark = "" if f["met"] else " **missed**"
        if "pnr_target_mhz" in f:
            mark += f" (placed for {f['pnr_target_mhz']:g})"
        lines.append(f"| {e['board']} | {e['config']} | {macs} | fits | {cell('LUT')} | "
                     f"{cell('FF')} | {cell('DSP')} | {cell('BRAM')} | "
                     f"{f['achieved_mhz']:.1f} / {f['target_mhz']:g}{mark} | "
                     f"{2 * macs * min(f['achieved_mhz'], f['target_mhz']) / 1000:.1f} | "
                     f"{e['seconds']:.0f} s{_commit(e)} |")
    lines += ["", "<!-- fpga:end -->"]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", action="append", help="board[:config][@MHz] (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report", action="append", default=[],
                    help="directory of a finished build whose report.json to record")
    ap.add_argument("--commit", help="the commit a --report build was made from (default: "
                    "HEAD)")
    ap.add_argument("--append", action="store_true",
                    help="keep the recorded results of other builds (board, config, clock)")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    todo = DEFAULT if not args.report else []
    if args.board:
        todo = []
        for b in args.board:
            b, _, mhz = b.partition("@")
            board, _, config = b.partition(":")
            todo.append((board, config or ("tiny" if board == "icebreaker" else "small"),
                         float(mhz) if mhz else None))
    entries = []
    for d in args.report:
        rep = json.loads((Path(d) / "report.json").read_text())
        cfg = NpuConfig.load(rep["config"])
        entries.append({"board": rep["board"], "config": rep["config"], "macs": cfg.macs,
                        "clock_target_mhz": rep.get("clock_mhz") or cfg.clock_mhz,
                        "commit": args.commit or commit, "utilization": rep["utilization"],
                        "fmax": rep["fmax"], "steps": rep["steps"],
                        "critical_path": rep["critical_path"], "seconds": rep["seconds"]})
    for board, config, mhz in todo:
        cfg = NpuConfig.load(config)
        t0 = time.perf_counter()
        entry = {"board": board, "config": config, "macs": cfg.macs,
                 "clock_target_mhz": mhz or cfg.clock_mhz, "commit": commit}
        try:
            r = build_bitstream(board, config, ROOT / "build" / "bitstream" /
                                f"bench-{board}-{config}", threads=args.threads,
                                clock_mhz=mhz)
            entry["clock_target_mhz"] = r.clock_mhz
            entry.update(utilization=r.utilization, fmax=r.fmax, steps=r.steps,
                         critical_path=r.critical_path, markdown=report_markdown(r))
        except BuildError as err:
            entry["error"] = re.sub(r" \(logs in .*\)$", "", str(err))
            print(f"{board} {config}: {entry['error']}")
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        entries.append(entry)
    if args.append and RESULTS.exists():
        def key(e):
            return e["board"], e["config"], round(float(e.get("clock_target_mhz", 0)), 3)
        new = {key(e) for e in entries}
        old = json.loads(RESULTS.read_text())["results"]
        entries = [e for e in old if key(e) not in new] + entries
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "results": entries},
                                  indent=1) + "\n")
    text = DOC.read_text()
    section = _section(entries)
    if "<!-- fpga:begin -->" in text:
        text = re.sub(r"<!-- fpga:begin -->.*<!-- fpga:end -->", lambda _: section, text,
                      flags=re.S)
    else:
        text += "\n" + section + "\n"
    DOC.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
