"""`npugen verilog`: deterministic output, no absolute paths, Verilator lint clean."""

import subprocess

import pytest

from gen.cli import main
from gen.toolchain import tool_env
from gen.verilog import DATAPATH_TOP, datapath_verilog
from hdl.config import REPO, shipped_configs

# tiny and small run by default; the bigger ones take a minute each to generate.
CONFIGS = [pytest.param(name, marks=[pytest.mark.slow] if name in ("default", "large") else [])
           for name in shipped_configs()]


def test_verilog_is_deterministic_and_relocatable(tmp_path):
    assert main(["verilog", "-c", "tiny", "-o", str(tmp_path / "a")]) == 0
    first = (tmp_path / "a" / f"{DATAPATH_TOP}.v").read_text()
    assert first == datapath_verilog("tiny")
    assert str(REPO) not in first and "/home/" not in first and "/work/" not in first
    assert f"module {DATAPATH_TOP}(" in first


@pytest.mark.parametrize("name", CONFIGS)
def test_verilator_lint(tmp_path, name):
    assert main(["verilog", "-c", name, "-o", str(tmp_path)]) == 0
    env = tool_env()
    proc = subprocess.run(["verilator", "--lint-only", "-Wno-fatal", "-Wno-WIDTHEXPAND",
                           "-Wno-WIDTHTRUNC", "--top-module", DATAPATH_TOP,
                           str(tmp_path / f"{DATAPATH_TOP}.v")],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "%Error" not in proc.stderr, proc.stderr[-3000:]
