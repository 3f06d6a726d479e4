"""The whole Npu on Verilator (and Icarus where installed), against the golden model.

Each test runs one cocotb test of ``sim/tb_npu.py`` on the cached ``npu_tb`` build of its
configuration (``sim/runner.py``); each cocotb test runs many programs in one simulation.
"""

import dataclasses
import shutil

import pytest

from gen.toolchain import tool_env
from hdl.config import NpuConfig
from sim import runner

CONFIG = "tiny"


def _run(testcase, config=CONFIG, simulator="verilator", **env):
    """Run one cocotb test (a name) or several (a list) in one simulation."""
    tests, failed = runner.run(config, "tb_npu", testcase=testcase, simulator=simulator,
                               extra_env={k: str(v) for k, v in env.items()})
    assert tests == (1 if isinstance(testcase, str) else len(testcase)), f"{testcase} did not run"
    name = NpuConfig.load(config).name
    assert failed == 0, f"{testcase} failed: see build/sim/npu_tb-{name}-{simulator}-*/*.log"


def test_npu_registers():
    _run("test_registers")


def test_npu_programs_match_golden():
    _run("test_programs", NPU_COUNT=30, NPU_SEED=1)


def test_npu_programs_backpressure():
    _run("test_programs_backpressure", NPU_COUNT=20, NPU_SEED=2)


def test_npu_error_injection():
    _run("test_errors", NPU_SEED=3)


def test_npu_fuzz():
    """200 random and damaged command streams in one simulation."""
    _run("test_fuzz", NPU_COUNT=200, NPU_SEED=4)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_npu_fuzz_slow(seed):
    """Thousands of command streams (1000 per seed), with AXI backpressure on odd seeds."""
    _run("test_fuzz", NPU_COUNT=1000, NPU_SEED=100 + seed, NPU_PAUSE=seed % 2)


_NO_ICARUS = pytest.mark.skipif(shutil.which("iverilog", path=tool_env()["PATH"]) is None,
                                reason="Icarus (iverilog) is not installed")


@_NO_ICARUS
def test_npu_icarus():
    """The second simulator (compiled as Verilog-2005, see ``sim.runner.ICARUS_ARGS``): the
    register map, random programs against the golden model, injected errors and the overlap
    counters, in one Icarus simulation."""
    _run(["test_registers", "test_programs", "test_errors", "test_overlap"], simulator="icarus",
         NPU_COUNT=5, NPU_SEED=5)


@pytest.mark.slow
@_NO_ICARUS
def test_npu_icarus_slow():
    """Fuzzing, AXI backpressure and the bandwidth floors on Icarus too."""
    _run(["test_fuzz", "test_programs_backpressure", "test_bandwidth"], simulator="icarus",
         NPU_COUNT=100, NPU_SEED=6)


def test_npu_overlap():
    """A double-buffered 6-tile convolution: LOAD of tile i+1, COMPUTE of tile i and STORE of
    tile i-1 overlap. Asserted from the performance counters: CYCLES < 0.85 x (LOAD_BUSY +
    EXECUTE_BUSY + STORE_BUSY) (a serial machine needs at least the sum), and the cycles the
    execute unit is idle (CYCLES - EXECUTE_BUSY) <= one tile's load (pipeline fill) + per later
    tile the excess of load (or of store, with a multi-cycle post-processor) over compute
    time + one tile's store (drain) + 40 cycles of hand-over per tile."""
    _run("test_overlap")


def test_npu_bandwidth():
    """Long contiguous LOADs and a STORE: DMA bytes per busy cycle above a floor (logged)."""
    _run("test_bandwidth")


@pytest.mark.slow
@pytest.mark.parametrize("testcase,count", [("test_programs", 20), ("test_fuzz", 200),
                                            ("test_errors", 0), ("test_overlap", 0),
                                            ("test_bandwidth", 0)])
def test_npu_default_config(testcase, count):
    """The default configuration (16x16 array, 128-bit bus): a second bus width and array size
    (one more Verilator build, a few minutes, hence slow)."""
    _run(testcase, config="default", NPU_COUNT=count or 1, NPU_SEED=21)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [2, 3, 4, 5, 13])
def test_npu_span_steps(steps):
    """The command checks' serial size x stride products (``queues.span_steps``) at the
    values the shipped configurations do not use (tiny has 7, the others 1): tiny with
    ``steps`` instead: the register map (its CONFIG_HASH says the testbench has the same
    configuration as the hardware), random and damaged command streams and the injected
    errors against the golden model (one more Verilator build each, hence slow)."""
    config = dataclasses.replace(NpuConfig.load(CONFIG), name=f"tiny-span{steps}",
                                 span_steps=steps)
    _run(["test_registers", "test_fuzz", "test_errors"], config=config, NPU_COUNT=200,
         NPU_SEED=30 + steps)
