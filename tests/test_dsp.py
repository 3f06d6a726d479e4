"""The ECP5 DSP blocks with their own registers (hdl.dsp) against the same blocks in logic.

Each block is elaborated twice, for an ECP5 platform (``MULT18X18D`` cells, simulated with
``sim/hdl/mult18x18d.v``) and for none (flip-flops around a ``*``), and Icarus runs both side by
side on the same random inputs, comparing every output on every cycle."""

import re
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import wiring

from hdl.config import NpuConfig
from hdl.dsp import RegisteredMultiplier
from hdl.postproc import PostProcessor
from hdl.systolic import SystolicArray
from sim import runner

pytestmark = pytest.mark.skipif(runner.simulator_available("icarus") is not None,
                                reason=f"Icarus: {runner.simulator_available('icarus')}")

MODEL = runner.REPO / "sim" / "hdl" / "mult18x18d.v"


class _Ecp5:
    """What the blocks read of an ECP5 platform."""
    family = "ecp5"


def _ports(component):
    """``[(name, width, is_input)]`` of a component's Verilog ports (besides clk and rst)."""
    ports = []
    for path, member, _ in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        ports.append((name, Shape.cast(member.shape).width, member.flow == wiring.In))
    return ports


def _equivalence(make, tmp_path, cycles=3000, seed=1, model=MODEL, steady=(), quiet=()):
    """Run the ECP5 and the logic elaboration of ``make()`` on the same random inputs.
    Inputs named in ``steady`` change only every 500 cycles, and those in ``quiet`` are 0 for
    the 100 cycles before each change. The first 8 cycles (the reset, registers without one
    filling) are not compared. Returns ``(mismatches, output changes, MULT18X18D cells)``."""
    dut = make()
    ports = _ports(dut)
    ecp5 = verilog.convert(make(), name="dut_ecp5", platform=_Ecp5(), emit_src=False)
    logic = verilog.convert(dut, name="dut_logic", emit_src=False)
    lines = ["module tb;", "  reg clk = 0, rst = 1;", "  integer cycle, errors = 0, changes = 0;",
             f"  integer seed = {seed};"]
    conn = [".clk(clk)", ".rst(rst)"]
    for name, width, is_in in ports:
        if is_in:
            lines.append(f"  reg [{width - 1}:0] x_{name} = 0;")
            conn.append(f".\\{name} (x_{name})")
        else:
            lines.append(f"  wire [{width - 1}:0] {name}_e, {name}_l;")
            lines.append(f"  reg [{width - 1}:0] {name}_prev = 0;")
    outs = [n for n, _, i in ports if not i]
    lines.append("  dut_ecp5 e(" + ", ".join(conn + [f".\\{n} ({n}_e)" for n in outs]) + ");")
    lines.append("  dut_logic l(" + ", ".join(conn + [f".\\{n} ({n}_l)" for n in outs]) + ");")
    lines.append("  initial begin")
    lines.append(f"    for (cycle = 0; cycle < {cycles}; cycle = cycle + 1) begin")
    lines.append("      rst = cycle < 4;")
    for name, width, is_in in ports:
        if is_in:
            words = ", ".join(["$random(seed)"] * (-(-width // 32)))
            if name in steady:
                lines.append(f"      if (cycle % 500 == 0) x_{name} = {{{words}}};")
            elif name in quiet:
                lines.append(f"      x_{name} = cycle % 500 >= 400 ? 0 : {{{words}}};")
            else:
                lines.append(f"      x_{name} = {{{words}}};")
    lines.append("      #5;")
    for name in outs:
        lines.append(f"      if (cycle >= 8 && {name}_e !== {name}_l) errors = errors + 1;")
        lines.append(f"      if ({name}_l !== {name}_prev) changes = changes + 1;")
        lines.append(f"      {name}_prev = {name}_l;")
    lines.append("      clk = 1; #5; clk = 0;")
    lines.append("    end")
    lines.append('    $display("RESULT %0d %0d", errors, changes);')
    lines.append("    $finish;\n  end\nendmodule")
    (tmp_path / "dut_ecp5.v").write_text(ecp5)
    (tmp_path / "dut_logic.v").write_text(logic)
    (tmp_path / "tb.v").write_text("\n".join(lines) + "\n")
    subprocess.run(["iverilog", "-g2012", "-o", "tb.vvp", "-s", "tb", "tb.v", "dut_ecp5.v",
                    "dut_logic.v", str(model)], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "-n", "tb.vvp"], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    errors, changes = map(int, re.search(r"RESULT (\d+) (\d+)", out).groups())
    return errors, changes, len(re.findall(r"^\s*MULT18X18D\b", ecp5, re.M))


@pytest.mark.parametrize("a,b", [(signed(8), signed(8)), (signed(16), unsigned(16)),
                                 (unsigned(16), unsigned(16)), (signed(9), unsigned(17)),
                                 (signed(18), signed(18))])
def test_multiplier_on_a_dsp_block_matches_logic(tmp_path, a, b):
    """Operand and product registers with a random clock enable: the ``MULT18X18D`` with its
    own registers gives the same products, on the same cycles, as flip-flops around ``*``."""
    errors, changes, dsps = _equivalence(lambda: RegisteredMultiplier(a, b), tmp_path)
    assert dsps == 1
    assert errors == 0
    assert changes > 1000        # (the products do change: the comparison is not vacuous)


def test_multiplier_too_wide_for_a_dsp_block_stays_in_logic(tmp_path):
    errors, _, dsps = _equivalence(lambda: RegisteredMultiplier(signed(19), signed(8)),
                                   tmp_path, cycles=200)
    assert dsps == 0 and errors == 0


def test_model_catches_a_wrong_latency(tmp_path):
    """The comparison fails when the DSP block's registers are not those of the logic: with
    the output register left out, the product comes a cycle early."""
    text = MODEL.read_text()
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "mult18x18d.v").write_text(text.replace(
        'wire [35:0] p = REG_OUTPUT_CLK == "NONE"', 'wire [35:0] p = 1'))
    errors, _, _ = _equivalence(lambda: RegisteredMultiplier(signed(8), signed(8)),
                                tmp_path, cycles=200, model=broken / "mult18x18d.v")
    assert errors > 0


def test_array_on_dsp_blocks_matches_logic(tmp_path):
    """A fast clock's systolic array, each PE's multiplier a ``MULT18X18D`` with its own
    registers, computes what the array in logic does, on every cycle."""
    errors, changes, dsps = _equivalence(
        lambda: SystolicArray(4, 3, registered_operands=True, data_reset=False), tmp_path)
    assert dsps == 12
    assert errors == 0 and changes > 1000


def test_postproc_on_dsp_blocks_matches_logic(tmp_path):
    """small's post-processor (two lanes, the fast clock's split stages): its six products a
    lane on ``MULT18X18D`` blocks with their own registers, the same results on every
    cycle."""
    cfg = NpuConfig.load("small")
    assert cfg.slices and cfg.pp_steps == 1
    # (a SETPP comes while no row is in the post-processor: STORE runs it between stores)
    errors, changes, dsps = _equivalence(
        lambda: PostProcessor(4, 2, 1, split=True), tmp_path, steady=("config",),
        quiet=("i__valid",))
    assert dsps == 12
    assert errors == 0 and changes > 500
