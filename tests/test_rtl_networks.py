"""Networks on the RTL: every distinct ResNet-50 layer, the digits ResNet end to end, the RTL
backend through the driver and the command line.

Programs come from the real compiler; the reference is the golden model. The RTL runs on the
``npu_tb`` top with the HDL-side memory model (``sim/hdl/axi_mem.v``), which stalls every AXI
channel at random when asked (``stall``) and answers reads after ``latency`` cycles. All the
layers of one test run in one simulation.
"""

import numpy as np
import pytest

from firmware import driver, npubin
from firmware.compiler import compile_model
from firmware.digits import FIXTURE, load_split
from firmware.driver import DriverError, GoldenBackend
from firmware.models import quantized_layer, resnet_layer_cases
from hdl.isa import CMD_BYTES
from sim import runner
from sim.rtl import RtlBackend, RtlJob, layer_report

CASES = resnet_layer_cases("resnet50")
ICARUS = pytest.mark.skipif(runner.simulator_available("icarus") is not None,
                            reason=f"Icarus: {runner.simulator_available('icarus')}")


def _layer_jobs(cases, config, seed=1):
    """Per case: a compiled program with a random input, and the golden model's memory after
    it (the whole image: weights, parameters, every activation)."""
    jobs, expect = [], []
    rng = np.random.default_rng(seed)
    for case in cases:
        prog = compile_model(quantized_layer(case), config, memory_size=64 << 20)
        inp = prog.manifest["input"]
        x = rng.integers(-128, 128, inp["size"], dtype=np.int8)
        writes = driver._input_writes(prog, x)
        reads = [(prog.base, prog.image_size)]
        expect.append(GoldenBackend().execute(prog, writes, reads)[0])
        jobs.append(RtlJob(prog, writes, reads))
    return jobs, expect


def _check_layers(cases, config, simulator="verilator", stall=30, latency=8):
    jobs, expect = _layer_jobs(cases, config)
    be = RtlBackend(simulator=simulator, stall=stall, latency=latency, progress=False)
    outs = be.run(jobs)
    bad = []
    for case, job, want, got, run in zip(cases, jobs, expect, outs, be.last):
        got = np.frombuffer(got[0], np.uint8)
        want = np.frombuffer(want, np.uint8)
        if not np.array_equal(got, want):
            diff = np.flatnonzero(got != want)
            bad.append(f"{case.name} ({case.key}): {diff.size} bytes differ, first at "
                       f"{job.program.base + diff[0]:#x}")
        # The counters saw the whole program: every command retired, every MAC of it issued.
        assert run.perf["COMMANDS"] == job.program.num_commands, case.name
    assert not bad, "RTL memory differs from the golden model:\n" + "\n".join(bad)
    return be


@pytest.mark.parametrize("part", [0, 1])
def test_resnet50_layers_bit_exact_under_backpressure(part):
    """Every distinct ResNet-50 layer (the 23 convolution shapes, the stem, max pool, global
    average pool, FC, a bottleneck block with a downsampling shortcut and one with an identity
    shortcut), compiled at a reduced spatial size for the default configuration and run with
    30% random stalls on every AXI channel: memory after each program is byte-identical to the
    golden model's. (Two halves, one simulation each, so the two cores share the work.)"""
    _check_layers(CASES[part::2], "default")


@ICARUS
def test_layers_on_icarus():
    """The same check on Icarus (an event-driven simulator, a few thousand cycles a second on
    the whole NPU): a 1x1 convolution and the max pool on the tiny configuration."""
    small = [c for c in CASES if c.name in ("layer1.0.conv1", "pool1")]
    _check_layers(small, "tiny", simulator="icarus", stall=20, latency=4)


@pytest.mark.slow
@ICARUS
def test_more_layers_on_icarus():
    """A 3x3 convolution, the global average pool and a bottleneck block on Icarus."""
    more = [c for c in CASES if c.name in ("layer1.0.conv2", "avgpool", "layer1.1")]
    _check_layers(more, "tiny", simulator="icarus", stall=20, latency=4)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["tiny", "small", "large"])
def test_resnet50_layers_on_other_configs(config):
    """Every layer on the other array sizes and bus widths (channel counts that are not
    multiples of 12, a 64- and a 256-bit bus)."""
    cases = CASES if config != "tiny" else [c for c in CASES if c.c_in * c.c_out <= 256 * 512]
    _check_layers(cases, config, stall=20, latency=4)


def _digits_check(count, config="tiny"):
    _, x_te, _, _ = load_split()
    xs = [x[None] for x in x_te[:count]]
    prog = compile_model(FIXTURE, config)
    gold = driver.run_batch(prog, xs, "golden").reshape(count, -1)
    be = RtlBackend(progress=False)
    got = driver.run_batch(prog, xs, be).reshape(count, -1)
    assert got.shape == gold.shape == (count, 10)
    assert np.array_equal(got, gold), "RTL logits differ from the golden model"
    assert np.array_equal(got.argmax(-1), gold.argmax(-1))
    return prog, be


def test_digits_on_rtl():
    """The trained digits ResNet end to end on the tiny configuration (the iCE40 one): eight
    held-out images in one simulation, logits identical to the golden model's; the per-layer
    report adds up to the CYCLES counter."""
    prog, be = _digits_check(8)
    for run in be.last:
        rep = layer_report(prog, run)
        assert [r["layer"] for r in rep] == [r["layer"] for r in prog.manifest["layers"]]
        assert sum(r["cycles"] for r in rep) == run.perf["CYCLES"]
        assert sum(r["mac_active"] for r in rep) == run.perf["MAC_ACTIVE"]
        assert all(r["cycles"] > 0 for r in rep)


@pytest.mark.slow
def test_digits_whole_split_on_rtl():
    """The whole held-out split (360 images) on the RTL: predictions identical to golden."""
    _, x_te, _, _ = load_split()
    _digits_check(len(x_te))


def test_rtl_backend_reports_npu_errors():
    """A program whose command stream is damaged stops the NPU with the golden model's error;
    the backend raises with the code and the command index, and the simulation ends cleanly."""
    prog = compile_model(FIXTURE, "tiny")
    raw = bytearray(prog.commands)
    bad = 5
    raw[bad * CMD_BYTES:(bad + 1) * CMD_BYTES] = bytes([0xFF] * CMD_BYTES)
    broken = npubin.NpuProgram(prog.manifest, prog.data, bytes(raw))
    gold = GoldenBackend()
    x = np.zeros(prog.manifest["input"]["size"], np.int8)
    with pytest.raises(DriverError):
        driver.run_int8(broken, x, gold)
    assert gold.last_result.index == bad
    with pytest.raises(DriverError, match=rf"{gold.last_result.error.name} at command {bad}\b"):
        driver.run_int8(broken, x, RtlBackend(progress=False))


def test_cli_run_on_rtl(tmp_path, capsys):
    """``npugen run --backend rtl`` gives the golden model's output and prints cycles, the
    utilization and (``--layers``) the per-layer table."""
    from gen.cli import main
    prog_path = tmp_path / "digits.npubin"
    assert main(["compile", str(FIXTURE), "-c", "tiny", "-o", str(prog_path), "-q"]) == 0
    _, x_te, _, _ = load_split()
    np.save(tmp_path / "x.npy", x_te[0][None])
    for backend in ("golden", "rtl"):
        args = ["run", str(prog_path), "-i", str(tmp_path / "x.npy"), "-b", backend, "-o",
                str(tmp_path / f"y_{backend}.npy")]
        assert main(args + (["--layers", "--stall", "10"] if backend == "rtl" else [])) == 0
    out = capsys.readouterr().out
    assert np.array_equal(np.load(tmp_path / "y_rtl.npy"), np.load(tmp_path / "y_golden.npy"))
    assert "MAC utilization" in out and "block1.conv1" in out
    assert main(["run", str(prog_path), "-i", str(tmp_path / "x.npy"), "-b", "rtl",
                 "--stall", "95"]) == 2
    assert "stall" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", pytest.param("icarus", marks=ICARUS)])
def test_waves(simulator):
    """``waves=True`` leaves a waveform file in the build directory."""
    prog = compile_model(FIXTURE, "tiny")
    be = RtlBackend(simulator=simulator, waves=True, progress=False)
    x = np.zeros(prog.manifest["input"]["size"], np.int8)
    assert np.array_equal(driver.run_int8(prog, x, be), driver.run_int8(prog, x, "golden"))
    files = list(be.build_dir.glob("*.vcd")) + list(be.build_dir.glob("*.fst"))
    assert files and max(f.stat().st_size for f in files) > 10_000, files


def test_layer_cases_cover_resnet50():
    """The layer list holds every distinct convolution of ResNet-50 (counted independently from
    the float model) and each other kind once."""
    import onnx

    from firmware.models import build_resnet
    model = build_resnet("resnet50", 224)
    inits = {i.name: i for i in model.graph.initializer}
    shapes = set()
    for n in model.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]].dims
            stride = next(a.ints[0] for a in n.attribute if a.name == "strides")
            shapes.add((w[1], w[0], w[2], stride))
    convs = {(c.c_in, c.c_out, c.k, c.stride) for c in CASES if c.kind == "conv"}
    assert convs == shapes and len(shapes) == 23
    kinds = [c.kind for c in CASES if c.kind != "conv"]
    assert sorted(kinds) == ["bottleneck", "bottleneck", "fc", "gap", "maxpool"]
    assert len({c.key for c in CASES}) == len(CASES)
    onnx.checker.check_model(str(quantized_layer(CASES[0])))


def test_layer_cycles_near_the_compilers_prediction():
    """Throughput: with an unstalled memory, a 3x3 convolution, a 1x1 convolution with its
    residual add and the FC layer each take no more than 1.5 times the cycles the compiler's
    schedule model predicts (a slower unit, e.g. a FIFO that passes one entry every other
    cycle, shows here long before it would in the bit-exactness tests)."""
    by_name = {c.name: c for c in CASES}
    cases = [by_name["layer3.1.conv2"], by_name["layer1.1"], by_name["fc"]]
    jobs, _ = _layer_jobs(cases, "default")
    be = RtlBackend(stall=0, latency=8, progress=False)
    be.run(jobs)
    ratios = {case.name: run.perf["CYCLES"] / job.program.manifest["totals"]["predicted_cycles"]
              for case, job, run in zip(cases, jobs, be.last)}
    assert all(r <= 1.5 for r in ratios.values()), ratios
