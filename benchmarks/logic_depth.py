"""The longest register-to-register paths of the synthesised ECP5 board build, in seconds.

Usage: ``.venv/bin/python benchmarks/logic_depth.py [--json top.json | --placed placed.json |
--config small] [--paths 20] [--to NAME]``.

nextpnr reports a critical path only after routing (the small 85F build places and routes in
about 20 minutes on two cores); this ranks the paths of the synthesised netlist with a fixed
delay per cell instead, so that a change to the RTL can be judged after synthesis alone. ``--json``
reads a netlist (``top.json`` of a build directory, e.g. the ``.partial`` one a failed or
interrupted ``npugen bitstream`` leaves); otherwise the board top of ``--board`` and
``--config`` is synthesised as the bitstream flow does it (about 6 minutes for small).

The delay model, in ns, roughly the ECP5 -6 speed grade's with an average route per net:
LUT4 0.4 + 0.7 (net), PFUMX/L6MUX 0.3, carry 0.05 per CCU2C along the chain (0.5 into it, 1.0
out of its sum), MULT18X18D 4.0 + 0.7 through, DP16KD 4.3 + 0.7 clock to output, a flip-flop
0.5 + 0.7; distributed RAM reads 0.6 + 0.7. It ranks paths (and the blocks they cross); it is
not an Fmax: placement adds or saves nanoseconds per net. Results are printed and written to
``benchmarks/results/logic_depth.json``.

``--placed`` reads nextpnr's placed netlist instead (``nextpnr-ecp5 ... --no-route --write
placed.json``, after about 15 minutes of placement): the same cell delays, and each connection's
delay as nextpnr estimates it before routing from the distance between its driver and sink
(``Arch::predictDelay``). nextpnr prints only the Fmax after placement; this names the paths
behind it, with the tile of every cell on them.

With a routed netlist (a build's ``top.routed.json``) whose ``top.report.json`` beside it holds
nextpnr's detailed timing (``--detailed-timing-report``, which the ECP5 flow asks for), every
endpoint is ranked and counted by its routed arrival time, as nextpnr's timing analysis has it;
the cells on its path are still the estimate's longest.
"""

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "logic_depth.json"
NET = 0.7
#: A global buffer (DCCA) and its network to any flip-flop on the die, in ns (placed netlists).
GLOBAL = 2.5
_CELL_SUFFIX = re.compile(r"(_(TRELLIS|LUT4|CCU2C|PFUMX|MULT18X18D|DP16KD|L6MUX21)_|\$CCU2_COMB).*")


def _graph(top):
    """(arcs, starts, ends, names): timing arcs out bit -> [(in bit, delay)], sequential
    outputs with their clock-to-output delay, sequential inputs (bit, setup, cell), and a
    readable name per bit."""
    arcs = collections.defaultdict(list)
    starts, ends = {}, []
    for cn, c in top["cells"].items():
        t, con, pd = c["type"], c["connections"], c.get("port_directions", {})

        def bits(*ports, con=con):
            return [b for p in ports for b in con.get(p, []) if isinstance(b, int)]
        ins = bits(*[p for p in con if pd.get(p) == "input"])
        outs = bits(*[p for p in con if pd.get(p) == "output"])
        if t == "TRELLIS_FF":
            starts.update((b, 0.5 + NET) for b in bits("Q"))
            ends += [(b, 0.1, cn) for b in bits("DI", "CE", "LSR", "M")]
        elif t == "DP16KD":
            starts.update((b, 4.3 + NET) for b in outs)
            ends += [(b, 0.3, cn) for b in ins]
        elif t == "LUT4":
            for o in outs:
                arcs[o] += [(i, 0.4 + NET) for i in ins]
        elif t in ("PFUMX", "L6MUX21"):
            for o in outs:
                arcs[o] += [(i, 0.3) for i in ins]
        elif t == "CCU2C":
            cin, other = bits("CIN"), [b for b in ins if b not in bits("CIN")]
            for o in bits("COUT"):
                arcs[o] += [(i, 0.05) for i in cin] + [(i, 0.5) for i in other]
            for o in bits("S0", "S1"):
                arcs[o] += [(i, 0.4 + NET) for i in cin] + [(i, 0.6 + NET) for i in other]
        elif t == "MULT18X18D":
            for o in outs:
                arcs[o] += [(i, 4.0 + NET) for i in ins]
        elif t == "TRELLIS_DPR16X4":
            for o in outs:
                arcs[o] += [(i, 0.6 + NET) for i in bits("RAD0", "RAD1", "RAD2", "RAD3")]
            ends += [(b, 0.2, cn) for b in bits("DI0", "DI1", "DI2", "DI3", "WAD0", "WAD1",
                                                 "WAD2", "WAD3", "WRE")]
        else:                       # IO, PLL: paths start there
            starts.update((b, 0.0) for b in outs)
    return arcs, starts, ends, _names(top)


def _names(top):
    """A readable name per bit: a named net before a generated one, the shortest first."""
    names = {}
    for n, nn in top["netnames"].items():
        rank = (n.startswith("$"), len(_CELL_SUFFIX.sub("", n)) != len(n), len(n))
        for b in nn["bits"]:
            if isinstance(b, int) and (b not in names or rank < names[b][0]):
                names[b] = (rank, _CELL_SUFFIX.sub("", n))
    return {b: n for b, (_, n) in names.items()}


_BEL = re.compile(r"X(\d+)/Y(\d+)/")


def _predict(src, dst):
    """nextpnr-ecp5's placement-time estimate of one connection, in ns, for the -6 grade
    (``Arch::predictDelay``: 120 ps a unit, two units a tile for the first five tiles in each
    direction, one after)."""
    dx, dy = abs(src[0] - dst[0]), abs(src[1] - dst[1])
    return 0.12 * (3 + max(dx - 5, 0) + max(dy - 5, 0) + 2 * (min(dx, 5) + min(dy, 5)))


def _placed_graph(top):
    """The timing graph of nextpnr's placed netlist (``--write``): the same cell delays as
    :func:`_graph`, with each connection's delay estimated from the distance between its
    driver and its sink as nextpnr estimates it before routing."""
    loc, driver = {}, {}
    for cn, c in top["cells"].items():
        m = _BEL.match(c["attributes"].get("NEXTPNR_BEL", ""))
        if m:
            loc[cn] = (int(m[1]), int(m[2]))
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "output":
                driver.update((b, (cn, port)) for b in bits if isinstance(b, int))

    def wire(b, cn, port):
        src = driver.get(b)
        if src is not None and top["cells"][src[0]]["type"] == "DCCA":
            return 0.0                       # a global network: GLOBAL, counted at the DCCA
        if src is None or src[0] not in loc or cn not in loc:
            return NET
        if (src[1] == "FCO" and port == "FCI") or port in ("FXA", "FXB", "F1") or (
                src[1] == "F" and port == "DI" and loc[src[0]] == loc[cn]):
            return 0.0
        return _predict(loc[src[0]], loc[cn])

    arcs = collections.defaultdict(list)
    starts, ends = {}, []
    for cn, c in top["cells"].items():
        t, con, pd = c["type"], c["connections"], c["port_directions"]

        def bits(*ports, con=con):
            return [(b, p) for p in ports for b in con.get(p, []) if isinstance(b, int)]

        def arc(outs, ins, d, cn=cn):
            for o, _ in outs:
                arcs[o] += [(i, d + wire(i, cn, p)) for i, p in ins]
        if t == "TRELLIS_FF":
            starts.update((b, 0.5) for b, _ in bits("Q"))
            ends += [(b, 0.1 + wire(b, cn, p), cn, p) for b, p in bits("DI", "CE", "LSR", "M")]
        elif t == "TRELLIS_COMB":
            mode = c["parameters"].get("MODE", "LOGIC")
            lut = bits("A", "B", "C", "D")
            if mode == "DPRAM":
                arc(bits("F"), lut, 0.6)
                ends += [(b, 0.2 + wire(b, cn, p), cn, p)
                         for b, p in bits("WD", "WAD0", "WAD1", "WAD2", "WAD3", "WRE")]
            elif mode == "CCU2":
                arc(bits("FCO"), bits("FCI"), 0.05)
                arc(bits("FCO"), lut, 0.5)
                arc(bits("F"), bits("FCI"), 0.4)
                arc(bits("F"), lut, 0.6)
            else:
                arc(bits("F"), lut + bits("M"), 0.4)
                arc(bits("OFX"), bits("F1", "FXA", "FXB", "M"), 0.3)
                arc(bits("OFX"), lut, 0.7)
        elif t == "TRELLIS_RAMW":
            for o in [b for p in con if pd.get(p) == "output" for b, _ in bits(p)]:
                arcs[o] += [(i, 0.0) for p in con if pd.get(p) == "input" for i, _ in bits(p)]
        elif t == "DP16KD":
            starts.update((b, 4.3) for b, p in bits(*con) if pd.get(p) == "output")
            ends += [(b, 0.3 + wire(b, cn, p), cn, p) for b, p in bits(*con)
                     if pd.get(p) == "input" and not p.startswith("CLK")]
        elif t == "MULT18X18D":
            ins = [(b, p) for b, p in bits(*con) if pd.get(p) == "input" and p[0] in "AB"]
            arc([(b, p) for b, p in bits(*con) if pd.get(p) == "output"], ins, 4.0)
        elif t == "DCCA":           # (the clock's starts at the PLL: not a path)
            arc(bits("CLKO"), bits("CLKI"), GLOBAL)
        else:                       # pins and PLL: not paths of the clock (nextpnr's neither)
            starts.update((b, -1e9) for b, p in bits(*con) if pd.get(p) == "output")
    return arcs, starts, ends, _names(top)


def _arrivals(netlist, placed):
    """``(arrival, pred, ends, names)``: each bit's latest arrival (ns) and the input it
    comes from on that path, and the endpoints ``[(bit, setup, cell, port)]``."""
    graph = _placed_graph if placed else _graph
    arcs, starts, ends, names = graph(netlist["modules"]["top"])
    ends = [e if len(e) == 4 else (*e, None) for e in ends]     # (bit, setup, cell, port)
    arrival, pred = {}, {}
    for b, _, _, _ in ends:
        stack = [b]
        while stack:                         # depth first, without recursion
            x = stack[-1]
            if x in arrival:
                stack.pop()
            elif x in starts or not arcs.get(x):
                # (placed: a cell output without inputs is a constant, as in nextpnr)
                arrival[x] = starts.get(x, -1e9 if placed else 0.0)
                stack.pop()
            else:
                pending = [i for i, _ in arcs[x] if i not in arrival]
                if pending:
                    stack += pending
                    continue
                arrival[x], pred[x] = max(((arrival[i] + d, i) for i, d in arcs[x]),
                                          key=lambda t: t[0])
                stack.pop()
    return arrival, pred, ends, names


def routed_arrivals(report):
    """``{(cell, port): ns}``: each endpoint's latest arrival in nextpnr's detailed timing
    report (``--detailed-timing-report``), or None if the report has none."""
    nets = report.get("detailed_net_timings")
    if not nets:
        return None
    out = {}
    for net in nets:
        for ep in net["endpoints"]:
            key = (ep["cell"], ep["port"])
            out[key] = max(out.get(key, 0.0), float(ep["delay"][-1]))
    return out


def _ranked(arrival, ends, routed):
    """``[(ns, bit, cell)]`` for the timed endpoints: the routed arrival if ``routed``
    (endpoints nextpnr does not time are left out), else the estimate."""
    if routed is None:
        return [(arrival[b] + su, b, cn) for b, su, cn, _ in ends if arrival[b] > -1e6]
    return [(routed[cn, p], b, cn) for b, _, cn, p in ends if (cn, p) in routed]


def longest_paths(netlist, count=20, to=None, placed=False, routed=None):
    """The ``count`` longest paths to distinct endpoints (of distinct start and end names),
    longest first: ``[{"ns", "cells", "to", "through": [(ns, name), ...]}]``; ``placed``
    reads nextpnr's placed netlist instead of Yosys', ``routed`` (:func:`routed_arrivals`)
    ranks by routed arrival (``through`` keeps the estimate's times)."""
    arrival, pred, ends, names = _arrivals(netlist, placed)
    ranked = sorted(_ranked(arrival, ends, routed), reverse=True)
    out, seen = [], set()
    for ns, b, cn in ranked:
        if to and to not in cn:
            continue
        path = [b]
        while path[-1] in pred:
            path.append(pred[path[-1]])
        through = []
        for x in reversed(path):
            n = names.get(x, f"bit{x}")
            if not through or through[-1][1] != n:
                through.append((round(arrival[x], 1), n))
        key = (re.sub(r"\d+", "#", through[0][1]), re.sub(r"\d+", "#", _CELL_SUFFIX.sub("", cn)))
        if key in seen:
            continue
        seen.add(key)
        out.append({"ns": round(ns, 1), "cells": len(path) - 1, "to": _CELL_SUFFIX.sub("", cn),
                    "through": through})
        if len(out) == count:
            break
    histogram = collections.Counter(int(ns // 2) * 2 for ns, _, _ in ranked)
    return out, dict(sorted(histogram.items()))


def _block(name, depth):
    """The block a net or cell belongs to: its first ``depth`` dotted name parts below
    ``system.npu`` (``datapath.execute``), or the top's own (``bridge``, ``ram``)."""
    parts = _CELL_SUFFIX.sub("", name).split(".")
    if parts[:2] == ["system", "npu"]:
        parts = parts[2:]
    elif parts[:1] == ["system"]:
        parts = parts[1:]
    return ".".join(parts[:depth - 1] + [re.sub(r"\d+$", "#", p) for p in parts[depth - 1:depth]]
                    ) if len(parts) > 1 else "(top)"


def blocks_over(netlist, over, placed=False, depth=2, routed=None):
    """Endpoints whose path is longer than ``over`` ns, counted by the blocks their path
    starts and ends in: ``[(count, from_block, to_block)]``, most first (``routed``: by
    routed arrival, the start of the estimate's longest path)."""
    arrival, pred, ends, names = _arrivals(netlist, placed)
    count = collections.Counter()
    for ns, b, cn in _ranked(arrival, ends, routed):
        if ns <= over:
            continue
        x = b
        while x in pred:
            x = pred[x]
        count[(_block(names.get(x, "?"), depth), _block(cn, depth))] += 1
    return [(n, a, z) for (a, z), n in count.most_common()]


def synthesise(board, config, workdir):
    from gen.bitstream import build_plan
    from gen.toolchain import tool_env
    plan, *_ = build_plan(board, config)
    plan.extract(workdir)
    env = tool_env()
    subprocess.run([env["YOSYS"], "-q", "-l", "top.rpt", "top.ys"], cwd=workdir, env=env,
                   check=True)
    return Path(workdir) / "top.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="a synthesised netlist (top.json)")
    ap.add_argument("--placed", type=Path,
                    help="nextpnr's placed netlist (nextpnr-ecp5 --no-route --write FILE)")
    ap.add_argument("--board", default="ulx3s-85f")
    ap.add_argument("--config", default="small")
    ap.add_argument("--paths", type=int, default=20)
    ap.add_argument("--to", help="only paths ending at cells whose name contains this")
    ap.add_argument("--over", type=float, metavar="NS",
                    help="also count the endpoints over NS by the blocks their paths join")
    ap.add_argument("--depth", type=int, default=2,
                    help="name parts below system.npu that make a block (--over)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.placed or args.json
        if path is None:
            print(f"synthesising the {args.board} top with config {args.config} ...",
                  flush=True)
            start = time.time()
            path = synthesise(args.board, args.config, tmp)
            print(f"  done in {time.time() - start:.0f} s")
        netlist = json.loads(Path(path).read_text())
        routed = None
        report = Path(path).with_name("top.report.json")
        if args.placed is not None and report.exists():
            routed = routed_arrivals(json.loads(report.read_text()))
        kind = "estimated" if routed is None else "routed"
        if routed is not None:
            print(f"routed arrivals from {report} ({len(routed):,} endpoints)")
        paths, histogram = longest_paths(netlist, args.paths, args.to,
                                         placed=args.placed is not None, routed=routed)
        by_block = (blocks_over(netlist, args.over, args.placed is not None, args.depth,
                                routed) if args.over is not None else None)
    for p in paths:
        print(f"{p['ns']:6.1f} ns  {p['cells']:3d} cells  to {p['to']}")
        for ns, name in p["through"]:
            print(f"          {ns:6.1f}  {name}")
    print(f"endpoints per 2 ns of {kind} arrival:",
          ", ".join(f"{k}-{k + 2}: {v}" for k, v in histogram.items()))
    if by_block is not None:
        print(f"endpoints over {args.over:g} ns by the blocks their paths join "
              f"({sum(n for n, _, _ in by_block):,}):")
        for n, a, z in by_block[:args.paths]:
            print(f"  {n:7,}  {a} -> {z}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"source": str(path if args.placed or args.json
                                                 else f"{args.board}/{args.config}"),
                                   "paths": paths, "histogram_2ns": histogram,
                                   "arrival": kind, "over_ns": args.over,
                                   "by_block": by_block}, indent=1) + "\n")


if __name__ == "__main__":
    main()
