"""``npugen bitstream``: the board top (:class:`hdl.board.BoardTop`) through YoWASP Yosys and
nextpnr into a bitstream, with utilization and Fmax reports from nextpnr's JSON report.

::

    npugen bitstream --board icebreaker --config tiny -o build/bitstream/icebreaker-tiny

The amaranth-boards platform writes the build plan (RTLIL, constraints, the tool commands); the
commands run here one at a time, each announced as a numbered step with its time, every tool's
log kept in the output directory. The build happens in ``<DIR>.partial``; only a finished build
is moved to ``DIR`` (a failed one is left as ``<DIR>.failed`` with its logs, and the error names
what failed: a design that does not fit is reported with the resource and the numbers).

Multipliers: the systolic array's (and on ECP5 the post-processor's) go to DSP blocks; every
other multiplier (the command processor's static checks) is mapped to logic by Yosys' ``booth``
pass before synthesis, so the DSP count is the datapath's alone (docs/fpga.md).

Reports (``report.json``, ``report.md``, also printed): per resource the amount used, what the
device has and the share; per clock the Fmax nextpnr achieved against the target, marked MISSED
when below it.
"""

from __future__ import annotations

import collections
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["BuildError", "BitstreamResult", "RouterWatch", "build_bitstream", "build_plan",
           "parse_report", "run_watched",
           "collision_free_reads", "keep_alias_wires", "keep_command", "pnr_overconstraint",
           "report_markdown", "yosys_cell_counts", "synthesis_needs", "RESOURCES",
           "ECP5_85F_DSP_SITES", "array_dsp_sites", "pin_array_dsps", "ECP5_85F_EBR_SITES",
           "buffer_ebr_sites", "pin_buffer_ebrs"]

#: Report rows: name -> nextpnr utilization keys per family (the first present is used).
RESOURCES = {
    "LUT": {"ecp5": ("TRELLIS_COMB",), "ice40": ("ICESTORM_LC",)},
    "FF": {"ecp5": ("TRELLIS_FF",), "ice40": ()},
    "DSP": {"ecp5": ("MULT18X18D",), "ice40": ("ICESTORM_DSP",)},
    "BRAM": {"ecp5": ("DP16KD",), "ice40": ("ICESTORM_RAM",)},
    "SPRAM": {"ecp5": (), "ice40": ("ICESTORM_SPRAM",)},
}

#: Yosys cells that are flip-flops, per family (for the iCE40 FF count, which nextpnr folds
#: into its logic cells).
_FF_CELLS = {"ice40": re.compile(r"SB_DFF\w*"), "ecp5": re.compile(r"TRELLIS_FF")}


#: What synthesis alone shows a design needs, per family: resource -> (cell pattern, weight).
#: Each is a lower bound on what place and route needs, so a design over one of them cannot fit
#: and the flow stops before nextpnr.
_SYNTH_NEEDS = {
    "ice40": {"LUT": ((r"SB_LUT4", 1),), "FF": ((r"SB_DFF\w*", 1),), "DSP": ((r"SB_MAC16", 1),),
              "BRAM": ((r"SB_RAM40_4K", 1),), "SPRAM": ((r"SB_SPRAM256KA", 1),)},
    "ecp5": {"LUT": ((r"LUT4", 1), (r"CCU2C", 2)), "FF": ((r"TRELLIS_FF", 1),),
             "DSP": ((r"MULT18X18D", 1),), "BRAM": ((r"DP16KD", 1),)},
}


def synthesis_needs(cells, family):
    """``{resource: count}`` the synthesised netlist needs at least (:data:`_SYNTH_NEEDS`)."""
    out = {}
    for name, parts in _SYNTH_NEEDS[family].items():
        out[name] = sum(w * n for pat, w in parts for c, n in cells.items()
                        if re.fullmatch(pat, c))
    return out


class BuildError(Exception):
    """The build could not be done (bad board, config for another device, a tool failed, the
    design does not fit): one line for the user."""


@dataclass
class BitstreamResult:
    board: str
    config: str
    device: str
    bitstream: str
    utilization: dict          # resource -> {"used", "available", "percent"}
    fmax: dict                 # clock -> {"achieved_mhz", "target_mhz", "met"}
    steps: list = field(default_factory=list)   # [{"step", "seconds"}]
    seconds: float = 0.0
    cells: dict = field(default_factory=dict)   # Yosys cell counts after synthesis
    critical_path: list = field(default_factory=list)
    clock_mhz: float = 0.0     # the NPU clock the bitstream runs at (the PLL's output)

    def to_json(self):
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"


# ---- reports -----------------------------------------------------------------------------------


def yosys_cell_counts(log_text):
    """Cell counts from the last ``stat`` table in a Yosys log: ``{cell type: count}``."""
    tables = log_text.split("Printing statistics.")
    if len(tables) < 2:
        return {}
    counts = {}
    # (the "design hierarchy" part repeats the totals: count the module's own table only)
    for line in tables[-1].split("=== design hierarchy ===")[0].splitlines():
        match = re.match(r"\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$", line)
        if match:
            counts[match[2]] = counts.get(match[2], 0) + int(match[1])
    return counts


def parse_report(report, family, target_mhz, cells=None, overconstraint=1.0):
    """``(utilization, fmax, critical_path)`` from nextpnr's ``--report`` JSON.

    ``utilization`` maps the :data:`RESOURCES` names to used/available/percent (iCE40 FFs from
    the Yosys ``cells``, against the logic cells); ``fmax`` maps each clock (nextpnr's name) to
    the achieved and target MHz; ``critical_path`` lists the worst path's steps (from, to,
    delay in ns) of the first clock that missed its target, or of the slowest clock.
    ``overconstraint``: the clocks were constrained that many times faster than they run (the
    place and route target above the bitstream's clock); a clock's target is then the clock it
    runs at, and ``pnr_target_mhz`` what place and route aimed at.
    """
    util = report.get("utilization", {})
    out = {}
    for name, keys in RESOURCES.items():
        for key in keys[family]:
            if key in util:
                used, avail = int(util[key]["used"]), int(util[key]["available"])
                out[name] = {"used": used, "available": avail,
                             "percent": round(100 * used / avail, 1) if avail else 0.0}
                break
    if family == "ice40" and cells is not None and "LUT" in out:
        ffs = sum(n for c, n in cells.items() if _FF_CELLS["ice40"].fullmatch(c))
        avail = out["LUT"]["available"]
        out["FF"] = {"used": ffs, "available": avail, "percent": round(100 * ffs / avail, 1)}
    fmax = {}
    for clock, v in sorted(report.get("fmax", {}).items()):
        achieved = float(v["achieved"])
        pnr = float(v.get("constraint") or target_mhz * overconstraint)
        target = pnr / overconstraint
        fmax[clock] = {"achieved_mhz": round(achieved, 2), "target_mhz": round(target, 2),
                       "met": achieved >= target}
        if overconstraint != 1.0:
            fmax[clock]["pnr_target_mhz"] = round(pnr, 2)
    path = []
    paths = report.get("critical_paths", [])
    if paths:
        def within(p, clock):
            # a register-to-register path of ``clock`` (nextpnr: "posedge $glbnet$clk"; the
            # paths to and from "<async>" ports are not the clock's)
            ends = [str(p.get(k) or "").split()[-1:] for k in ("from", "to")]
            return all(e and clock in (e[0], "$glbnet$" + e[0]) for e in ends)
        order = [c for c, v in fmax.items() if not v["met"]]
        order += sorted(fmax, key=lambda c: fmax[c]["achieved_mhz"])
        worst = next((p for c in order for p in paths if within(p, c)), paths[0])
        for step in worst.get("path", []):
            src = step.get("from", {})
            dst = step.get("to", {})
            path.append({"type": step.get("type"), "delay_ns": round(float(step["delay"]), 3),
                         "from": f"{src.get('cell', '')}.{src.get('port', '')}",
                         "to": f"{dst.get('cell', '')}.{dst.get('port', '')}"})
    return out, fmax, path


def report_markdown(result: BitstreamResult):
    """The report as markdown tables (utilization, Fmax, build steps)."""
    clock = f", NPU clock {result.clock_mhz:g} MHz" if result.clock_mhz else ""
    lines = [f"### {result.board}, config `{result.config}` ({result.device}{clock})", "",
             "| Resource | Used | Available | Share |", "|---|---|---|---|"]
    for name, u in result.utilization.items():
        lines.append(f"| {name} | {u['used']:,} | {u['available']:,} | {u['percent']:.1f}% |")
    lines += ["", "| Clock | Fmax (MHz) | Target (MHz) | |", "|---|---|---|---|"]
    for clock, f in result.fmax.items():
        lines.append(f"| `{clock}` | {f['achieved_mhz']:.2f} | {f['target_mhz']:.2f} | "
                     f"{'met' if f['met'] else '**MISSED**'} |")
    pnr = sorted({f["pnr_target_mhz"] for f in result.fmax.values() if "pnr_target_mhz" in f})
    if pnr:
        lines += ["", f"Placed and routed for {pnr[-1]:g} MHz; the bitstream's clock is "
                  f"{result.clock_mhz:g} MHz, the target above."]
    if result.critical_path and not all(f["met"] for f in result.fmax.values()):
        total = sum(s["delay_ns"] for s in result.critical_path)
        lines += ["", f"Critical path ({total:.2f} ns, {len(result.critical_path)} steps): "
                  f"`{result.critical_path[0]['from']}` -> `{result.critical_path[-1]['to']}`"]
    steps = ", ".join(f"{s['step']} {s['seconds']:.0f} s" for s in result.steps)
    lines += ["", f"Build: {result.seconds:.0f} s ({steps})."]
    return "\n".join(lines) + "\n"


# ---- the flow ----------------------------------------------------------------------------------


def _dsp_script(family):
    """Yosys commands run after reading the design: the multipliers that must not take DSP
    blocks (all but the systolic array's and, on ECP5, the post-processor's) become logic."""
    from hdl.slices import KEEP_MARK
    mods = ["top.system.npu", "top.system.npu.command", "top.system.npu.datapath.execute"]
    if family == "ice40":
        mods.append("top.system.npu.datapath.postproc")
    # Deliberate copies of a register (each drives one group of consumers: the units' run
    # flags, the datapath's per-lane control) stay copies: the flip-flops driving wires named
    # with KEEP_MARK are kept, which opt_merge respects.
    keep = keep_command(f"w:*{KEEP_MARK}*")
    return "hierarchy -top top\nproc\nbooth " + " ".join(mods) + "\n" + keep


def keep_command(selection):
    """The Yosys command that keeps the flip-flops driving the wires ``selection`` selects."""
    return f"setattr -set keep 1 {selection} %ci1:+$dff[Q] t:$dff %i"


def keep_alias_wires(rtlil):
    """``[(module, wire)]``: the flip-flop outputs that a wire named with KEEP_MARK only
    aliases, in Amaranth's RTLIL ``rtlil``.

    Amaranth names a flip-flop's output after one of the signals equal to it: a kept copy
    assigned to a port, or to another signal, becomes an alias (a module-level ``connect``)
    of a wire named otherwise, which the selection by name in :func:`_dsp_script` does not
    reach, so synthesis merged such copies (the LOAD unit's four write registers, the
    parted FIFOs' pointers). These wires are selected as well."""
    from hdl.slices import KEEP_MARK
    found = []
    for mod in re.finditer(r"^module \\(\S+)\n(.*?)^end$", rtlil, re.S | re.M):
        name, body = mod.groups()
        outputs = set(re.findall(r"^\s*connect \\Q \\(\S+)$", body, re.M))
        for kept, wire in re.findall(r"^connect \\(\S+) \\([^\s\[]+)", body, re.M):
            if (KEEP_MARK in kept and KEEP_MARK not in wire and wire in outputs
                    and (name, wire) not in found):
                found.append((name, wire))
    return found


def collision_free_reads(rtlil):
    """``(rtlil, count)``: Amaranth's RTLIL ``rtlil`` with the synchronous read ports of the
    memories marked :data:`hdl.scratchpad.READ_COLLISION_X` (a registered write port's
    scratchpad memories) undefined where a write reaches their row in the same cycle, and
    how many read ports that is.

    Amaranth asks every read port not transparent for a write port for the old row in that
    case (``COLLISION_X_MASK`` 0). A block RAM's ports leave it undefined, so synthesis
    emulates it with logic: the write delayed through registers, its address compared with
    the read's, and a multiplexer after the block RAM, on the path from the read address to
    the data. Those memories never use such a read, so the mask becomes all ones."""
    from hdl.scratchpad import READ_COLLISION_X
    out, count = [], 0
    marked, pending = set(), False     # (module's marked memories; an attribute seen)
    cell = None                        # the $memrd_v2 cell being read: its lines
    for line in rtlil.splitlines(keepends=True):
        text = line.strip()
        if text.startswith("module "):
            marked = set()
        if cell is not None:
            cell.append(line)
            if text == "end":
                memid = next((ln.split('"')[1] for ln in cell
                              if ln.strip().startswith("parameter \\MEMID")), None)
                if memid is not None and memid.lstrip("\\") in marked:
                    for i, ln in enumerate(cell):
                        m = re.match(r"(\s*parameter \\COLLISION_X_MASK )(\d+)'[01]+$", ln)
                        if m:
                            cell[i] = f"{m[1]}{m[2]}'{'1' * int(m[2])}\n"
                            count += 1
                out += cell
                cell = None
            continue
        if text == f"attribute \\{READ_COLLISION_X} 1":
            pending = True
        elif text.startswith("memory "):
            if pending:
                marked.add(text.split()[-1].lstrip("\\"))
            pending = False
        elif not text.startswith("attribute "):
            pending = False
        if text.startswith("cell $memrd_v2 "):
            cell = [line]
            continue
        out.append(line)
    return "".join(out), count


def _keep_aliases(plan):
    """Add to the build plan's Yosys script the selection of :func:`keep_alias_wires`."""
    wires = keep_alias_wires(plan.files["top.il"])
    if not wires:
        return
    from hdl.slices import KEEP_MARK
    keep = keep_command(f"w:*{KEEP_MARK}*")
    extra = "\n".join(keep_command(f"{mod}/w:{wire}") for mod, wire in wires)
    script = plan.files["top.ys"]
    if keep not in script:
        raise BuildError("the synthesis script has no keep command to extend")
    plan.files["top.ys"] = script.replace(keep, keep + "\n" + extra, 1)


#: ``synth_ecp5`` with Yosys' classic ABC LUT mapping in place of its ``map_luts`` step (ABC9):
#: on some of this design's netlists Yosys 0.70's ABC9 fails an assertion as it reintegrates
#: the mapped netlist (``GetSize(conn.first) == GetSize(conn.second)`` in
#: ABC_OPS_REINTEGRATE), and the classic mapping is also about three times faster here. The
#: other steps are synth_ecp5's own (``synth_opts``, ``script_after_synth``).
_ECP5_LUT_MAPPING = ("-run :map_luts", "\n".join([
    "check -latchonly -assert",
    "techmap -map +/lattice/latches_map.v",
    "abc -lut 4:7 -dress",
    "clean",
    "synth_ecp5 -top top -run map_cells:"]))

#: The LFE5U-85F's 156 ``MULT18X18D`` sites (nextpnr-ecp5 BEL names): three rows of DSP tiles
#: (Y = 10, 34, 58) across the die, 52 multipliers a row in groups of four
#: (``MULT18_0``, ``_1`` at X, X + 1 and ``MULT18_4``, ``_5`` at X + 4, X + 5).
_ECP5_85F_DSP_X = (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114)
ECP5_85F_DSP_SITES = tuple(
    tuple(f"X{x + dx}/Y{y}/MULT18_{z}" for x in _ECP5_85F_DSP_X
          for dx, z in ((0, 0), (1, 1), (4, 4), (5, 5)))
    for y in (10, 34, 58))


def array_dsp_sites(rows, cols, site_rows=ECP5_85F_DSP_SITES):
    """Where the systolic array's multipliers go: ``{(r, c): BEL}``, or ``{}`` if the array
    does not fit the layout.

    nextpnr's placer, left to itself, scatters the array's multipliers over the DSP sites
    (neighbouring PEs a median 20 to 30 tiles apart on the small build, up to 115), and every
    PE's registers and the nets between neighbours follow. Pinned, the array is a grid again:
    the PE rows are split into one band per row of DSP tiles (``ceil(rows / bands)`` PE rows a
    band), and in a band PE ``(r, c)`` takes site ``c * per_band + k``, ``k`` its row in the
    band (counted from the other end in every other band), so the PEs above and below one
    another (partial sums, the weights loaded down the columns) are neighbouring sites, left
    and right neighbours (the inputs) ``per_band`` sites apart, and a band's last PE row lies
    straight above the next band's first. The sites left over are the post-processor's: in
    the middle of each band (whole groups of four, the array's columns on either side), near
    the logic around them, not at the die's edge.
    """
    bands = len(site_rows)
    per_band = -(-rows // bands)
    if per_band * cols > min(len(sr) for sr in site_rows):
        return {}

    def used(sr):
        """The band's sites the array takes: all but its spare ones in the middle."""
        spare = len(sr) - per_band * cols
        mid = (len(sr) - spare) // 2 // 4 * 4
        return sr[:mid] + sr[mid + spare:]
    bands_used = [used(sr) for sr in site_rows]

    def site(r, c):
        band, k = divmod(r, per_band)
        return bands_used[band][c * per_band + (k if band % 2 == 0 else per_band - 1 - k)]
    return {(r, c): site(r, c) for r in range(rows) for c in range(cols)}


_PE_DSP_NAME = re.compile(r"\.array\.(?:w_act|a_op|prod)_(\d+)_(\d+)[_.$]")


def pin_array_dsps(netlist_path, rows, cols):
    """Give each of the array's ``MULT18X18D`` cells in the synthesised netlist (Yosys JSON,
    rewritten in place) a ``BEL`` attribute from :func:`array_dsp_sites`, which nextpnr
    places it at. The PE of a cell is read from its name (Yosys names a multiplier after the
    register it absorbs: the PE's weight, input or product). Returns the number pinned; if
    the cells cannot all be told apart, nothing is pinned and 0 is returned."""
    sites = array_dsp_sites(rows, cols)
    if not sites:
        return 0
    netlist = json.loads(Path(netlist_path).read_text())
    found = {}
    for module in netlist["modules"].values():
        for name, cell in module.get("cells", {}).items():
            match = cell["type"] == "MULT18X18D" and _PE_DSP_NAME.search(name)
            if match:
                found.setdefault((int(match[1]), int(match[2])), []).append(cell)
    if set(found) != set(sites) or any(len(cells) != 1 for cells in found.values()):
        return 0
    for pe, (cell,) in found.items():
        cell.setdefault("attributes", {})["BEL"] = sites[pe]
    Path(netlist_path).write_text(json.dumps(netlist))
    return len(found)


#: The LFE5U-85F's 208 ``DP16KD`` sites: four rows of block RAM tiles (Y = 22, 46, 70, 82),
#: in the DSP tiles' columns, groups of four (``EBR0`` to ``EBR3`` at X, X + 2, X + 4, X + 6).
ECP5_85F_EBR_SITES = tuple(f"X{x + 2 * z}/Y{y}/EBR{z}" for y in (22, 46, 70, 82)
                           for x in _ECP5_85F_DSP_X for z in range(4))

#: A scratchpad's block RAM in the synthesised netlist: ``<buffer>.bank<b>.<port>.<slice>``,
#: the slice a group of data bits (of the block RAM's width) of bank ``b``'s read port.
_BUF_EBR_NAME = re.compile(
    r"\.datapath\.(input|weight|acc)_buf\.bank(\d+)(?:_g(\d+))?\.(\d+)\.(\d+)$")


def _bel_xy(bel):
    x, y = re.match(r"X(\d+)/Y(\d+)/", bel).groups()
    return int(x), int(y)


def buffer_ebr_sites(config, cells):
    """Where the scratchpads' block RAMs go beside the pinned array: ``{cell name: BEL}``.

    ``cells`` maps the netlist's ``DP16KD`` cell names (``<buffer>.bank<b>.<port>.<slice>``,
    or ``<buffer>.bank<b>_g<g>.<port>.<slice>`` where a bank's lanes are split into groups of
    memories) to their data widths. Each block RAM of
    the INPUT, WEIGHT and ACC buffers holds a slice of a row's bits, so a few lanes: the
    INPUT buffer's lane ``r`` feeds the array's row ``r`` at its left column, the WEIGHT
    buffer's lane ``c`` its column ``c`` at the top, and the ACC buffer's lane ``c`` is
    column ``c``'s accumulator, below the bottom row. Each block RAM takes the free site
    nearest (in tiles) to its lanes' place, the ACC buffer's first, then the WEIGHT
    buffer's, then the INPUT buffer's; so each lane's buffer logic (its bypass, its
    accumulator update, its skew registers) has one place on the die to be near, instead of
    the placer's choice among 208 sites. Returns ``{}`` if the array is not pinned or a
    buffer's cells are not all found by name (nothing is pinned then).
    """
    dsp = array_dsp_sites(config.rows, config.cols)
    if not dsp:
        return {}
    lanes_of = {"input": (config.rows, 8), "weight": (config.cols, 8), "acc": (config.cols, 32)}
    banks_of = {"input": config.input_banks, "weight": config.weight_banks,
                "acc": config.acc_banks}
    ports_of = {"input": 1, "weight": 1, "acc": 2}
    found = {}
    for name, width in cells.items():
        match = _BUF_EBR_NAME.search(name)
        if match:
            found.setdefault(match[1], []).append(
                (name, int(match[2]), int(match[3] or 0), int(match[4]), int(match[5]), width))

    def place(buf, lane):
        """The tile a buffer's lane serves: its PE's DSP site."""
        if buf == "input":
            return _bel_xy(dsp[(lane, 0)])
        return _bel_xy(dsp[(0, lane)] if buf == "weight" else dsp[(config.rows - 1, lane)])

    wanted = []     # (name, x, y), in the order they choose
    for buf in ("acc", "weight", "input"):
        entries = found.get(buf, [])
        lanes, bits = lanes_of[buf]
        widths = {w for *_, w in entries}
        if len(widths) != 1:
            return {}
        (w,) = widths
        # (a bank's lanes may be split into groups of memories, `bank<b>_g<g>`: as
        # hdl.scratchpad.Scratchpad.lane_group splits them)
        n_groups = max(g for _, _, g, *_ in entries) + 1
        group = [range(g * lanes // n_groups, (g + 1) * lanes // n_groups)
                 for g in range(n_groups)]
        expect = {(b, g, p, k) for b in range(banks_of[buf]) for g in range(n_groups)
                  for p in range(ports_of[buf]) for k in range(-(-len(group[g]) * bits // w))}
        if ({(b, g, p, k) for _, b, g, p, k, _ in entries} != expect or
                len(entries) != len(expect)):
            return {}
        for name, _, g, _, k, _ in sorted(entries, key=lambda e: (e[2], e[4], e[1], e[3])):
            lo = group[g].start
            covered = range(lo + k * w // bits, min(group[g].stop, lo + -(-(k + 1) * w // bits)))
            xys = [place(buf, lane) for lane in covered]
            wanted.append((name, sum(x for x, _ in xys) / len(xys),
                           sum(y for _, y in xys) / len(xys)))
    free = list(ECP5_85F_EBR_SITES)
    sites = {}
    for name, x, y in wanted:
        best = min(free, key=lambda bel: (abs(_bel_xy(bel)[0] - x) + abs(_bel_xy(bel)[1] - y),
                                          bel))
        free.remove(best)
        sites[name] = best
    return sites


def pin_buffer_ebrs(netlist_path, config):
    """Give the scratchpads' ``DP16KD`` cells in the synthesised netlist (rewritten in place)
    a ``BEL`` attribute from :func:`buffer_ebr_sites`. Returns the number pinned (0: the
    netlist is left as it was)."""
    netlist = json.loads(Path(netlist_path).read_text())
    cells = {name: cell for module in netlist["modules"].values()
             for name, cell in module.get("cells", {}).items() if cell["type"] == "DP16KD"}
    widths = {name: int(str(cell.get("parameters", {}).get("DATA_WIDTH_B", "0")), 2)
              for name, cell in cells.items()}
    sites = buffer_ebr_sites(config, widths)
    if not sites:
        return 0
    for name, bel in sites.items():
        cells[name].setdefault("attributes", {})["BEL"] = bel
    Path(netlist_path).write_text(json.dumps(netlist))
    return len(sites)


_STEPS = {"yosys": "synthesis (Yosys)", "nextpnr-ice40": "place and route (nextpnr-ice40)",
          "nextpnr-ecp5": "place and route (nextpnr-ecp5)", "icepack": "bitstream (icepack)",
          "ecppack": "bitstream (ecppack)", "dfu-suffix": "DFU suffix (dfu-suffix)"}


def _tool_name(cmd):
    return cmd[0]


def _fit_error(log_text):
    """The one-line reason in a nextpnr log that the design does not fit, or None: the
    resources its "Device utilisation" table has over capacity, else its placement error."""
    over = [(name, int(used), int(avail)) for name, used, avail in
            re.findall(r"Info:\s+([A-Za-z_0-9]+):\s+(\d+)/\s*(\d+)\s+\d+%", log_text)
            if int(used) > int(avail)]
    if over:
        return "the design does not fit: " + ", ".join(
            f"{used:,} {name} of {avail:,} ({100 * used / avail:.0f}%)"
            for name, used, avail in over)
    match = re.search(r"ERROR: (.*(?:[Uu]nable to place|not enough|too many).*)", log_text)
    return f"the design does not fit: {match[1].strip()}" if match else None


def _board_and_config(board_name, config):
    from hdl.board import BOARDS
    from hdl.config import NpuConfig
    if board_name not in BOARDS:
        raise BuildError(f"unknown board {board_name!r} (boards: {', '.join(BOARDS)})")
    board = BOARDS[board_name]
    config = NpuConfig.load(config)
    if config.device != board.device:
        raise BuildError(f"config {config.name!r} is for target.device = {config.device!r}; "
                         f"board {board.name} has an {board.device}")
    return board, config


def nextpnr_extra(args):
    """``args`` (a string of further nextpnr options, e.g. ``"--placer-heap-beta 0.8"``) as
    a list, or BuildError for a string that does not parse."""
    try:
        return shlex.split(args or "")
    except ValueError as err:
        raise BuildError(f"--nextpnr-args {args!r}: {err}") from None


def _check_nextpnr_extra(plan, extra):
    """BuildError if an option of ``extra`` is one the flow's nextpnr command (in ``plan``,
    with ``extra`` after the flow's own) already sets: nextpnr refuses an option given twice."""
    cmd = next(c for c in json.loads(plan.files["build_top.json"])["commands"]
               if c[0].startswith("nextpnr"))

    def options(words):
        return collections.Counter(w.split("=")[0] for w in words if w.startswith("-"))
    total, own = options(cmd[1:]), options(extra)
    for opt in own:
        if total[opt] > own[opt]:
            raise BuildError(f"--nextpnr-args: {opt} is set by the flow itself (use --seed, "
                             f"--threads, --clock-mhz; the others are fixed)")


def build_plan(board_name, config, *, baud=1_000_000, seed=1, threads=1, clock_mhz=None,
               nextpnr_args="", pnr_mhz=None):
    """The amaranth build plan of the board top: ``(plan, board, config, top)``; its files are
    the RTLIL, the constraints, the Yosys script and the tool commands (``build_top.json``).
    ``clock_mhz`` sets the NPU clock (the PLL), if not the configuration's ``target.clock_mhz``;
    ``nextpnr_args`` are further options for nextpnr (:func:`nextpnr_extra`); ``pnr_mhz`` the
    clock place and route aims at, if not :func:`pnr_overconstraint`'s default.

    Raises
    ------
    BuildError
        On an unknown board, a configuration for another device, a clock the PLL cannot make,
        an impossible baud rate, ``nextpnr_args`` that do not parse or repeat an option of
        the flow's, or a ``pnr_mhz`` below the NPU clock.
    """
    from hdl.board import BoardTop
    board, config = _board_and_config(board_name, config)
    extra = nextpnr_extra(nextpnr_args)
    try:
        top = BoardTop(config, board, baud=baud, clock_mhz=clock_mhz)
    except ValueError as err:
        raise BuildError(f"{board.name}: {err}") from None
    if pnr_mhz is not None and not pnr_mhz >= top.clock_mhz:
        raise BuildError(f"--pnr-mhz {pnr_mhz:g} is below the NPU clock, {top.clock_mhz:g} MHz: "
                         "place and route aims at the bitstream's clock at least")
    family = _family(board)
    nextpnr_opts = f"--report top.report.json --timing-allow-fail --seed {seed}"
    if family == "ecp5":
        # router2 (nextpnr's default is router1, which did not converge on the 85F's
        # 240,000 arcs in 30 minutes)
        nextpnr_opts += f" --threads {threads} --router router2"
        # the placed and routed netlist, whose paths `benchmarks/logic_depth.py --placed`
        # ranks by block (nextpnr's report names only the worst)
        nextpnr_opts += " --write top.routed.json"
        # with every routed connection's delay in the report, which logic_depth then uses
        # in place of its estimates
        nextpnr_opts += " --detailed-timing-report"
    if extra:
        nextpnr_opts += " " + shlex.join(extra)
    overrides = {"nextpnr_opts": nextpnr_opts, "script_after_read": _dsp_script(family)}
    if family == "ice40":
        overrides["synth_opts"] = "-dsp"
    else:
        overrides["synth_opts"], overrides["script_after_synth"] = _ECP5_LUT_MAPPING
    plan = board.make_platform().build(top, name="top", do_build=False, **overrides)
    if extra:
        _check_nextpnr_extra(plan, extra)
    _keep_aliases(plan)
    plan.files["top.il"], _ = collision_free_reads(plan.files["top.il"])
    scale = pnr_overconstraint(config, top, pnr_mhz)
    if scale != 1.0:
        # Place and route for a faster clock than the PLL's (the configuration's, or
        # --pnr-mhz): the oscillator is constrained `scale` times faster than it runs, so the
        # constraint nextpnr derives for the PLL's output is that clock.
        name, pattern = (("top.lpf", r'(FREQUENCY PORT "[^"]+" )([\d.]+)( HZ)')
                         if family == "ecp5" else ("top.pcf", r"(set_frequency \S+ )([\d.]+)()"))
        text, n = re.subn(pattern, lambda mt: f"{mt[1]}{float(mt[2]) * scale:.9g}{mt[3]}",
                          plan.files[name])
        if n != 1:
            raise BuildError(f"{board.name}: no oscillator constraint found in {name}")
        plan.files[name] = text
    return plan, board, config, top


def pnr_overconstraint(config, top, pnr_mhz=None):
    """How many times faster than the NPU clock (``top.clock_mhz``) place and route is asked
    to make it: ``pnr_mhz / clock_mhz`` when ``pnr_mhz`` is given (``--pnr-mhz``: a margin
    for the placer), else ``target.clock_mhz / clock_mhz`` when the bitstream's clock is below
    the configuration's target (so the placer works for the target, and the bitstream runs at
    a clock the result meets), else 1."""
    if pnr_mhz is not None:
        return pnr_mhz / top.clock_mhz
    return max(1.0, config.clock_mhz / top.clock_mhz)


def _family(board):
    return "ecp5" if board.device.startswith("ecp5") else "ice40"


def build_bitstream(board_name, config, outdir, *, baud=1_000_000, seed=1, threads=1,
                    clock_mhz=None, nextpnr_args="", pnr_mhz=None, log=print):
    """Build the bitstream of ``config`` for ``board_name`` into ``outdir``, its NPU clocked at
    ``clock_mhz`` (default: the configuration's ``target.clock_mhz``), the timing target;
    placed and routed for ``pnr_mhz`` if given (:func:`pnr_overconstraint`).

    Returns a :class:`BitstreamResult`; writes ``top.bit`` (ECP5) or ``top.bin`` (iCE40),
    ``report.json``, ``report.md`` and the tools' logs into ``outdir``.

    Raises
    ------
    BuildError
        On an unknown board, a configuration for another device, a tool failure or a design
        that does not fit; ``outdir`` is then not created (the failed build's files are in
        ``<outdir>.failed``).
    """
    from .toolchain import tool_env

    board, config = _board_and_config(board_name, config)
    outdir = Path(outdir)
    work = outdir.with_name(outdir.name + ".partial")
    failed = outdir.with_name(outdir.name + ".failed")
    family = _family(board)
    t_start = time.perf_counter()
    steps = []

    def step(n, total, what, func):
        log(f"[{n}/{total}] {what} ...")
        sys.stdout.flush()
        t0 = time.perf_counter()
        out = func()
        dt = time.perf_counter() - t0
        steps.append({"step": what, "seconds": round(dt, 1)})
        log(f"      done in {dt:.1f} s")
        return out

    env = tool_env()
    total = 2 + len(board.make_platform().command_templates)
    plan, board, config, top = step(
        1, total, f"elaborate the board top ({board.name}, config {config.name}, "
        f"{clock_mhz or config.clock_mhz:g} MHz, UART {baud} baud)",
        lambda: build_plan(board_name, config, baud=baud, seed=seed, threads=threads,
                           clock_mhz=clock_mhz, nextpnr_args=nextpnr_args,
                           pnr_mhz=pnr_mhz))
    for d in (work, failed):
        shutil.rmtree(d, ignore_errors=True)
    try:
        work.mkdir(parents=True)
        plan.extract(str(work))
        commands = json.loads((work / "build_top.json").read_text())["commands"]
        for i, cmd in enumerate(commands, 2):
            tool = _tool_name(cmd)
            exe = env.get(tool.upper().replace("-", "_"), tool)
            argv = [exe, *cmd[1:]]
            what = _STEPS.get(tool, tool)
            logfile = work / f"{tool}.log"

            def run(argv=argv, logfile=logfile, tool=tool):
                if tool.startswith("nextpnr") and "--log" in argv:
                    # (its log followed as it routes: progress, and a stop if it diverges)
                    return run_watched(argv, work, env, logfile,
                                       work / argv[argv.index("--log") + 1], RouterWatch(),
                                       log=log)
                with open(logfile, "w") as f:
                    return subprocess.run(argv, cwd=work, env=env, stdout=f,
                                          stderr=subprocess.STDOUT).returncode, None
            rc, verdict = step(i, total, what, run)
            if verdict:
                raise BuildError(f"{what} stopped: {verdict} at seed {seed}; another "
                                 f"--seed may route (logs in {failed})")
            if rc == 0 and tool == "yosys":
                cells = yosys_cell_counts((work / "top.rpt").read_text(errors="replace"))
                over = [(n, k, board.capacity[n]) for n, k in
                        synthesis_needs(cells, family).items() if k > board.capacity[n]]
                if over:
                    raise BuildError(
                        "the design does not fit: synthesis gives " + ", ".join(
                            f"{k:,} {n} (the {board.device} has {cap:,})" for n, k, cap in over)
                        + f" (logs in {failed})")
                if board.device == "ecp5-85f":
                    pinned = pin_array_dsps(work / "top.json", config.rows, config.cols)
                    log(f"      the array's {config.rows * config.cols} multipliers " +
                        (f"pinned to DSP sites in {len(ECP5_85F_DSP_SITES)} bands" if pinned
                         else "left to the placer (the bands do not hold them, or their "
                         "cells could not be told apart by name)"))
                    if pinned:
                        ebrs = pin_buffer_ebrs(work / "top.json", config)
                        log(f"      the scratchpads' block RAMs: {ebrs} pinned beside their "
                            "lanes" if ebrs else "      the scratchpads' block RAMs left to "
                            "the placer (their cells could not be told apart by name)")
            if rc != 0:
                text = logfile.read_text(errors="replace")
                if tool.startswith("yosys"):
                    text += (work / "top.rpt").read_text(errors="replace") \
                        if (work / "top.rpt").exists() else ""
                reason = _fit_error(text) or _last_error(text) or f"exit status {rc}"
                raise BuildError(f"{what} failed: {reason} (logs in {failed})")
        cells = yosys_cell_counts((work / "top.rpt").read_text(errors="replace"))
        report = json.loads((work / "top.report.json").read_text())
        util, fmax, path = parse_report(report, family, top.clock_mhz, cells,
                                        overconstraint=pnr_overconstraint(config, top,
                                                                          pnr_mhz))
        ext = "bit" if family == "ecp5" else "bin"
        seconds = time.perf_counter() - t_start
        step(total, total, "reports", lambda: None)
        result = BitstreamResult(board=board.name, config=config.name, device=board.device,
                                 bitstream=f"top.{ext}", utilization=util, fmax=fmax,
                                 steps=steps, seconds=round(seconds, 1), cells=cells,
                                 critical_path=path, clock_mhz=top.clock_mhz)
        for name, u in util.items():
            if u["used"] > u["available"]:
                raise BuildError(f"the design does not fit: it needs {u['used']:,} {name} and "
                                 f"the device has {u['available']:,} (logs in {failed})")
        (work / "report.json").write_text(result.to_json())
        (work / "report.md").write_text(report_markdown(result))
    except BaseException:
        if work.exists():
            work.rename(failed)
        raise
    if outdir.exists():
        shutil.rmtree(outdir)
    work.rename(outdir)
    log("")
    log(report_markdown(result))
    return result


class RouterWatch:
    """Follows nextpnr's log as it routes (router2's ``iter=N ... overuse=M`` lines) and tells
    whether routing diverges: ``patience`` iterations after its fewest overused wires, their
    count has risen to ``factor`` times that and ``margin`` more, or ``stall`` iterations
    have passed without a new fewest. A routing that converges falls to none (small on the
    ECP5-85F: in 43 to 85 iterations, at most 36 without a new fewest, with counts of a few
    wires rising and falling near the end); one that diverges keeps rising, or hovers, for
    as long as it is let run.

    :meth:`feed` takes a line of the log; :attr:`iteration` and :attr:`overuse` are the last
    seen; :attr:`diverging` is a one-line verdict once it diverges, else ``None``.
    """

    LINE = re.compile(r"\biter=(\d+)\b.*\boveruse=(\d+)(?:.*\btmgfail=(\d+))?")

    def __init__(self, patience=40, factor=4, margin=500, stall=100):
        self.patience, self.factor, self.margin = patience, factor, margin
        self.stall = stall
        self.iteration = self.overuse = None
        self.best = self.best_at = None
        self.diverging = None

    def feed(self, line):
        m = self.LINE.search(line)
        if not m or self.diverging:
            return self.diverging
        self.iteration, self.overuse = int(m[1]), int(m[2])
        if self.best is None or self.overuse < self.best:
            self.best, self.best_at = self.overuse, self.iteration
        elif (self.iteration - self.best_at >= self.patience and
              self.overuse >= max(self.factor * self.best, self.best + self.margin)):
            self.diverging = (f"routing does not converge: the overused wires rose from "
                              f"{self.best:,} at iteration {self.best_at} to "
                              f"{self.overuse:,} at iteration {self.iteration}")
        elif self.iteration - self.best_at >= self.stall and self.overuse == 0 and m[3]:
            # (router2 with --tmg-ripup goes on rerouting the nets that fail timing after
            # the routing is legal, for as long as any does)
            self.diverging = (f"routing does not end: no wires overused since iteration "
                              f"{self.best_at}, but the timing-driven ripup (--tmg-ripup) "
                              f"still reroutes for {int(m[3]):,} timing failures at iteration "
                              f"{self.iteration}; leave out --tmg-ripup")
        elif self.iteration - self.best_at >= self.stall:
            self.diverging = (f"routing does not converge: {self.overuse:,} wires overused at "
                              f"iteration {self.iteration}, none fewer than {self.best:,} since "
                              f"iteration {self.best_at}")
        return self.diverging


def run_watched(argv, cwd, env, logfile, watch_file, watch, log=print, poll=5.0,
                every=60.0):
    """Run ``argv`` (output to ``logfile``) while following ``watch_file`` (the log a tool
    writes as it goes) line by line with ``watch`` (a :class:`RouterWatch`): a line of
    progress every ``every`` seconds once it routes, and the tool stopped if it diverges.

    Returns ``(returncode, verdict)``: the verdict is ``watch.diverging`` (the tool was
    stopped) or ``None``."""
    watch_file = Path(watch_file)
    with open(logfile, "w") as f:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        pos, partial, shown, last = 0, "", None, time.monotonic()
        try:
            while True:
                try:
                    rc = proc.wait(timeout=poll)
                except subprocess.TimeoutExpired:
                    rc = None
                if watch_file.exists():
                    with open(watch_file, errors="replace") as w:
                        w.seek(pos)
                        text = w.read()
                        pos = w.tell()
                    *lines, partial = (partial + text).split("\n")
                    for line in lines:
                        watch.feed(line)
                if watch.diverging:
                    proc.terminate()
                    proc.wait()
                    return proc.returncode, watch.diverging
                now = time.monotonic()
                if (watch.iteration is not None and watch.iteration != shown and
                        now - last >= every):
                    log(f"      routing: iteration {watch.iteration}, "
                        f"{watch.overuse:,} wires overused")
                    shown, last = watch.iteration, now
                if rc is not None:
                    return rc, None
        except BaseException:
            proc.kill()
            proc.wait()
            raise


def _last_error(text):
    errors = [ln.strip() for ln in text.splitlines() if "ERROR" in ln]
    return errors[-1] if errors else None


def main_args(s):
    """Arguments of ``npugen bitstream``."""
    from hdl.board import BOARDS
    s.add_argument("--board", "-b", required=True, help=f"one of {', '.join(BOARDS)}")
    s.add_argument("--baud", type=int, default=1_000_000, help="UART baud rate (default 1e6)")
    s.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    s.add_argument("--threads", type=int, default=1, help="nextpnr threads (ECP5)")
    s.add_argument("--nextpnr-args", default="", metavar="ARGS",
                   help="further nextpnr options as one argument, e.g. "
                        "--nextpnr-args='--placer-heap-beta 0.8' (the flow's own: seed, "
                        "threads, router, reports, are set by it)")
    s.add_argument("--clock-mhz", type=float, default=None, metavar="MHZ",
                   help="the NPU clock (the PLL's output and the timing target), if not the "
                        "config's target.clock_mhz: e.g. a build's achieved Fmax, for a "
                        "bitstream that runs within its timing")
    s.add_argument("--pnr-mhz", type=float, default=None, metavar="MHZ",
                   help="the clock place and route aims at, at least the NPU clock (default: "
                        "the NPU clock, or the config's target.clock_mhz if that is higher): "
                        "a margin for the placer")
    s.set_defaults(config=None, output=None)


def cmd_bitstream(args):
    """``npugen bitstream``: the configuration defaults to the one made for the board's device
    (tiny for iCEBreaker, small for the ECP5 boards), the output to
    ``build/bitstream/<board>-<config>``."""
    from hdl.board import BOARDS

    from .cli import UserError
    board = BOARDS.get(args.board)
    config = args.config or ("tiny" if board and board.device == "ice40-up5k" else "small")
    out = args.output or f"build/bitstream/{args.board}-{Path(config).stem}"
    try:
        result = build_bitstream(args.board, config, out, baud=args.baud, seed=args.seed,
                                 threads=args.threads, clock_mhz=args.clock_mhz,
                                 nextpnr_args=args.nextpnr_args, pnr_mhz=args.pnr_mhz)
    except BuildError as err:
        raise UserError(str(err)) from None
    print(f"wrote {Path(out) / result.bitstream}, {Path(out) / 'report.json'}, "
          f"{Path(out) / 'report.md'}")
    missed = {c: f for c, f in result.fmax.items() if not f["met"]}
    if missed:
        worst = min(f["achieved_mhz"] for f in missed.values())
        print(f"timing: the target clock is MISSED on {', '.join(missed)} ("
              + ", ".join(f"{f['achieved_mhz']:.2f} of {f['target_mhz']:g} MHz"
                          for f in missed.values())
              + "): this bitstream may not work at its clock; for one that runs within its "
              f"timing, build again with --clock-mhz {int(worst * 0.95)} (a margin below the "
              "Fmax reached: placement changes with the target)", file=sys.stderr)
    return 0

