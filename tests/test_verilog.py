"""`npugen verilog`: deterministic output, no absolute paths, Verilator lint clean."""

import subprocess

import pytest

from gen.cli import main
from gen.toolchain import tool_env
from gen.verilog import DATAPATH_TOP, NPU_TOP, datapath_verilog, npu_verilog
from hdl.config import REPO, shipped_configs

# tiny and small run by default; the bigger ones take a minute each to generate.
CONFIGS = [pytest.param(name, marks=[pytest.mark.slow] if name in ("default", "large") else [])
           for name in shipped_configs()]


def test_verilog_is_deterministic_and_relocatable(tmp_path):
    assert main(["verilog", "-c", "tiny", "-o", str(tmp_path / "a")]) == 0
    for top, make in ((NPU_TOP, npu_verilog), (DATAPATH_TOP, datapath_verilog)):
        first = (tmp_path / "a" / f"{top}.v").read_text()
        assert first == make("tiny"), f"{top}.v differs between two generations"
        assert str(REPO) not in first and "/home/" not in first and "/work/" not in first
        assert f"module {top}(" in first
    # The NPU top has exactly the documented interface: AXI4 master, AXI4-Lite slave, irq and
    # the STATUS levels busy/done/error (for board LEDs).
    text = (tmp_path / "a" / f"{NPU_TOP}.v").read_text()
    head = text[text.index(f"module {NPU_TOP}("):]
    ports = head[:head.index(");")].replace("\n", "").split("(", 1)[1].split(",")
    ports = {p.strip() for p in ports}
    assert {"clk", "rst", "irq", "busy", "done", "error", "m_axi__arvalid", "m_axi__wstrb",
            "s_axil__rdata"} <= ports
    assert all(p in ("clk", "rst", "irq", "busy", "done", "error") or
               p.startswith(("m_axi__", "s_axil__"))
               for p in ports), sorted(ports)


@pytest.mark.parametrize("name", CONFIGS)
def test_verilator_lint(tmp_path, name):
    assert main(["verilog", "-c", name, "-o", str(tmp_path)]) == 0
    env = tool_env()
    for top in (NPU_TOP, DATAPATH_TOP):
        proc = subprocess.run(["verilator", "--lint-only", "-Wno-fatal", "-Wno-WIDTHEXPAND",
                               "-Wno-WIDTHTRUNC", "--top-module", top,
                               str(tmp_path / f"{top}.v")],
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "%Error" not in proc.stderr, proc.stderr[-3000:]
