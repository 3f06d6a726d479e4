"""cocotb testbench of the whole Npu: AxiRam on ``m_axi``, AxiLiteMaster on ``s_axil``.

It runs on the ``npu_tb`` simulation top (``sim/hdl/npu_tb.v``) with ``ext_mem`` set, so the
NPU's memory port leaves the top for cocotbext-axi's AxiRam; the clock is cocotb's.

Every test runs many programs in one simulation (one Verilator build per configuration, reused
by every test). Each program is checked against the golden model: memory byte-identical and the
same STATUS, or (for a program that stops with an error) the same error code and index. A
watchdog turns any hang into a failure. Environment: ``NPU_CONFIG`` (configuration name),
``NPU_SEED``, ``NPU_COUNT`` (programs for the fuzz test), ``NPU_PAUSE`` (1: random pauses on
every AXI channel).
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam, axi_slave

from hdl.config import NpuConfig
from hdl.isa import (
    NPU_ID,
    RESERVED_TAILS,
    Buffer,
    ErrorCode,
    Opcode,
    PerfCounter,
    decode,
    encode,
    perf_counters,
    registers,
)
from sim.npu_programs import cost, expect, image_of, mutate, random_program

CONFIG = NpuConfig.load(os.environ.get("NPU_CONFIG", "tiny"))
PRESENT = {pc.name for pc in perf_counters(CONFIG)}    # the counters CONFIG has
SEED = int(os.environ.get("NPU_SEED", "1"))
REGS = {r.name: r for r in registers(CONFIG)}
#: The memory the tests model: the configuration's window, at most 1 MiB of it (the window
#: registers are set to match, for the RTL and the golden model alike).
WINDOW = (CONFIG.window_base, CONFIG.window_base + min(CONFIG.window_size, 1 << 20) - 1)
MEM_SIZE = WINDOW[1] + 1
#: Cycles a program may take per row it moves, plus a fixed allowance: beyond, it hangs.
WATCHDOG_FIXED, WATCHDOG_PER_ROW = 20_000, 200


_AXI_RESP = axi_slave.AxiResp


class _DecErr:
    """Stand-in for cocotbext-axi's AxiResp that answers DECERR where it would say SLVERR."""
    OKAY = axi_slave.AxiResp.OKAY
    SLVERR = axi_slave.AxiResp.DECERR


class TB:
    def __init__(self, dut):
        self.dut = dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.run_int.value = 0
        dut.ext_mem.value = 1
        for name in ("mem_load", "mem_dump", "mem_dump_lo", "mem_dump_hi", "trace_dump"):
            getattr(dut, name).value = 0
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi", bus_separator="__"), dut.clk,
                          dut.rst, size=MEM_SIZE)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        self.bad = None          # (lo, hi): accesses there answer an error
        self._hook(self.ram.read_if, "_read")
        self._hook(self.ram.write_if, "_write")

    def _hook(self, port, name):
        orig = getattr(port, name)

        async def op(address, arg):
            if self.bad and self.bad[0] <= address <= self.bad[1]:
                raise OSError("injected bus error")
            return await orig(address, arg)
        setattr(port, name, op)

    def pauses(self, on):
        def gen(seed):
            rng = np.random.default_rng(seed)
            while True:
                yield bool(rng.random() < 0.3)
        chans = [self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                 self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                 self.ram.read_if.r_channel]
        for i, ch in enumerate(chans):
            if on:
                ch.set_pause_generator(gen(SEED * 10 + i))
            else:
                ch.clear_pause_generator()
                ch.pause = False      # (killing the generator may leave the channel paused)

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 5)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def read(self, name):
        return await self.axil.read_dword(REGS[name].offset)

    async def write(self, name, value):
        await self.axil.write_dword(REGS[name].offset, value)

    async def start(self, prog_base, prog_len, window=None):
        wb, wl = window or WINDOW
        await self.write("WIN_BASE", wb)
        await self.write("WIN_LIMIT", wl)
        await self.write("PROG_BASE", prog_base)
        await self.write("PROG_LEN", prog_len)
        await self.write("IRQ_ENABLE", 3)
        await self.write("CTRL", 1)

    async def wait_irq(self, cycles):
        if not self.dut.irq.value:
            await with_timeout(RisingEdge(self.dut.irq), cycles * 10, "ns")

    async def finish(self):
        """Read STATUS/ERR_*, acknowledge the interrupt; returns (status, index, addr)."""
        status = await self.read("STATUS")
        index = await self.read("ERR_INDEX")
        addr = await self.read("ERR_ADDR")
        await self.write("IRQ_STATUS", 3)
        assert not self.dut.irq.value, "irq did not fall after IRQ_STATUS was cleared"
        return status, index, addr

    async def scrub(self):
        """Zero every buffer row with padding-only LOADs (no memory read), so the next program
        starts from the golden model's initial state whatever the last one left behind."""
        cmds = []
        for target, depth in ((Buffer.INPUT, CONFIG.input_depth),
                              (Buffer.WEIGHT, CONFIG.weight_depth),
                              (Buffer.ACC, CONFIG.acc_depth), (Buffer.PARAM, CONFIG.param_depth)):
            full, rest = divmod(depth, 30)
            for start, z, x in ((0, full, 30), (30 * full, 1 if rest else 0, rest)):
                if z:
                    cmds.append(encode(Opcode.LOAD, target=target, elems=1, sram_addr=start,
                                       x_size=x, y_size=1, z_size=z, pad_left=min(x, 15),
                                       pad_right=x - min(x, 15), sram_x_stride=1,
                                       sram_z_stride=30))
        cmds.append(encode(Opcode.END))
        base = MEM_SIZE - 32 * len(cmds)
        self.ram.write(base, b"".join(cmds))
        await self.start(base, len(cmds))
        await self.wait_irq(20 * (CONFIG.input_depth + CONFIG.weight_depth + CONFIG.acc_depth))
        status, _, _ = await self.finish()
        assert status == 2, f"scrub program: STATUS {status:#x}"

    async def run_case(self, case, window=None, label=""):
        """Load a Case, run it, compare with the golden outcome."""
        await self.scrub()
        self.ram.write(0, case.image.tobytes())
        await self.start(case.prog_base, case.prog_len, window)
        budget = WATCHDOG_FIXED + WATCHDOG_PER_ROW * (cost(case.commands or []) + case.prog_len)
        try:
            await self.wait_irq(budget)
        except cocotb.triggers.SimTimeoutError:
            raise AssertionError(f"{label}: hang: no interrupt within {budget} cycles "
                                 f"(STATUS {await self.read('STATUS'):#x})") from None
        status, index, addr = await self.finish()
        busy, done, error = status & 1, (status >> 1) & 1, (status >> 2) & 1
        code = ErrorCode((status >> 8) & 0xFF)
        assert not busy, f"{label}: busy after the interrupt"
        if case.expect_error == ErrorCode.NONE:
            assert done and not error, f"{label}: expected done, got {code.name} at {index}"
            if case.memory is not None and not case.racy:
                got = np.frombuffer(self.ram.read(0, MEM_SIZE), dtype=np.uint8)
                diff = np.flatnonzero(got != case.memory)
                if diff.size:
                    for i, raw in enumerate(case.commands or []):
                        self.dut._log.error(f"cmd {i}: {decode(raw)}")
                    self.dut._log.error("diff at " + ", ".join(
                        f"{a:#x}: {got[a]:#x}/{case.memory[a]:#x}" for a in diff[:40]))
                assert diff.size == 0, (f"{label}: {diff.size} bytes differ from the golden "
                                        f"model, first at {diff[0]:#x}: "
                                        f"{got[diff[0]]:#x} != {case.memory[diff[0]]:#x}")
            if case.counters is not None:
                # the counters the golden model keeps too (low words: the runs are short)
                for reg, key in (("COMMANDS", "commands"), ("MAC_ACTIVE", "mac_vectors"),
                                 ("BYTES_WRITTEN", "bytes_written")):
                    got = await self.read(f"PERF_{reg}_LO")
                    want = case.counters[key] if reg in PRESENT else 0
                    assert got == want, \
                        f"{label}: PERF_{reg} {got}, expected {want} (golden model)"
                # a counter the configuration leaves out (perf.counters) reads 0
                for pc in PerfCounter:
                    if pc.name not in PRESENT:
                        got = await self.read(f"PERF_{pc.name}_LO")
                        assert got == 0, f"{label}: PERF_{pc.name} {got}: not in perf.counters"
        else:
            assert error and not done, f"{label}: expected {case.expect_error.name}, got done"
            assert code == case.expect_error, \
                f"{label}: error {code.name}, golden model says {case.expect_error.name}"
            if code != ErrorCode.BAD_PROGRAM:
                assert index == case.expect_index, \
                    f"{label}: {code.name} at {index}, golden model says {case.expect_index}"
            if code in (ErrorCode.WINDOW, ErrorCode.BUS_ERROR):
                assert addr == case.expect_addr, \
                    f"{label}: ERR_ADDR {addr:#x}, golden model says {case.expect_addr:#x}"
        return code


def _case(rng, mutated=False, compute=True):
    """A random program (optionally damaged) and its golden outcome, or None if the golden
    model cannot run it (it rejects some parameter values with ValueError) or it is too big."""
    prog, dst = random_program(CONFIG, rng, compute=compute)
    cmds = mutate(CONFIG, rng, prog.commands) if mutated else prog.commands
    if cost(cmds) > 3000:
        return None
    img = image_of(CONFIG, prog, MEM_SIZE, cmds)
    try:
        case = expect(CONFIG, img, prog.prog_base, len(cmds), dst, MEM_SIZE, window=WINDOW,
                      schedules=3 if mutated else 0, seed=int(rng.integers(1 << 30)))
    except ValueError:
        return None
    case.commands = cmds
    return case


async def _programs(dut, count, mutated, pause, compute=True):
    tb = TB(dut)
    tb.pauses(pause)
    await tb.reset()
    rng = np.random.default_rng(SEED)
    seen = {}
    n = 0
    while n < count:
        case = _case(rng, mutated, compute)
        if case is None:
            continue
        code = await tb.run_case(case, label=f"program {n}")
        seen[code.name] = seen.get(code.name, 0) + 1
        n += 1
    dut._log.info(f"{count} programs: outcomes {seen}")
    return seen


@cocotb.test()
async def test_registers(dut):
    """Reset values from the register map, RW/W1C/WO behaviour, 64-bit counter latching."""
    tb = TB(dut)
    await tb.reset()
    for reg in REGS.values():
        got = await tb.read(reg.name)
        if reg.name.startswith("PERF_"):
            continue
        assert got == reg.reset, f"{reg.name} reads {got:#x} after reset, not {reg.reset:#x}"
    assert await tb.read("ID") == NPU_ID
    for name in ("PROG_BASE", "PROG_LEN", "WIN_BASE", "WIN_LIMIT"):
        await tb.write(name, 0xA5A5_5A5A)
        assert await tb.read(name) == 0xA5A5_5A5A
    await tb.axil.write(REGS["PROG_LEN"].offset, b"\x11", )   # byte strobe: only byte 0
    assert await tb.read("PROG_LEN") == 0xA5A5_5A11
    await tb.write("CTRL", 0)
    assert await tb.read("CTRL") == 0
    # BAD_PROGRAM: a START with an unaligned base raises the error interrupt at once.
    await tb.write("IRQ_ENABLE", 2)
    await tb.write("PROG_BASE", 0x10)
    await tb.write("PROG_LEN", 1)
    await tb.write("CTRL", 1)
    await ClockCycles(dut.clk, 2)
    assert dut.irq.value == 1
    status = await tb.read("STATUS")
    assert status == (ErrorCode.BAD_PROGRAM.value << 8) | 4, hex(status)
    assert await tb.read("IRQ_STATUS") == 2
    await tb.write("IRQ_STATUS", 2)
    assert dut.irq.value == 0
    await tb.write("PROG_BASE", 0)
    await tb.write("PROG_LEN", 0)
    await tb.write("CTRL", 1)
    assert (await tb.read("STATUS") >> 8) & 0xFF == ErrorCode.BAD_PROGRAM.value
    await tb.write("IRQ_STATUS", 3)
    # A one-command program: CYCLES and COMMANDS count, the high word latches.
    tb.ram.write(0x100, encode(Opcode.END))
    await tb.start(0x100, 1)
    await tb.wait_irq(1000)
    status, _, _ = await tb.finish()
    assert status == 2, hex(status)
    assert await tb.read("PERF_COMMANDS_LO") == 1
    assert await tb.read("PERF_COMMANDS_HI") == 0
    cycles = await tb.read("PERF_CYCLES_LO")
    assert 0 < cycles < 200, cycles
    assert await tb.read("PERF_BYTES_READ_LO") >= 32


@cocotb.test()
async def test_programs(dut):
    """Random valid programs (loads, computes, pools, setpp, stores) match the golden model."""
    await _programs(dut, int(os.environ.get("NPU_COUNT", "30")), mutated=False, pause=False)


@cocotb.test()
async def test_programs_backpressure(dut):
    """The same with random pauses on every AXI channel."""
    await _programs(dut, int(os.environ.get("NPU_COUNT", "20")), mutated=False, pause=True)


@cocotb.test()
async def test_fuzz(dut):
    """Random and damaged command streams: each matches the golden model or stops with its
    error code and index."""
    count = int(os.environ.get("NPU_COUNT", "200"))
    seen = await _programs(dut, count, mutated=True, pause=bool(int(os.environ.get(
        "NPU_PAUSE", "0"))))
    assert len(seen) >= 3, f"fuzzing reached only {seen}"


@cocotb.test()
async def test_errors(dut):
    """Injected errors end in the documented status with the interrupt; the next program runs."""
    tb = TB(dut)
    await tb.reset()
    rng = np.random.default_rng(SEED + 7)

    def good():
        while (case := _case(rng)) is None:
            pass
        return case

    async def then_good(what):
        case = good()
        await tb.run_case(case, label=f"program after {what}")

    # Out-of-window: LOADs that read below a raised window base.
    window = (WINDOW[0] + 0x800, WINDOW[1])
    for _ in range(100):
        case = good()
        ref = expect(CONFIG, case.image, case.prog_base, case.prog_len, case.dst, MEM_SIZE,
                     window=window)
        if ref.expect_error == ErrorCode.WINDOW:
            break
    assert ref.expect_error == ErrorCode.WINDOW, ref.expect_error
    ref.commands = case.commands
    await tb.run_case(ref, window=window, label="window")
    await then_good("window")

    # Fetch outside the window.
    tb.ram.write(0x100, encode(Opcode.END))
    await tb.start(0x100, 1, window=(0x200, WINDOW[1]))
    await tb.wait_irq(1000)
    status, index, addr = await tb.finish()
    assert (status >> 8) & 0xFF == ErrorCode.WINDOW.value and index == 0 and addr == 0x100, \
        (hex(status), index, hex(addr))
    await then_good("fetch window")

    # Illegal opcode at command 1.
    tb.ram.write(0x100, encode(Opcode.COMPUTE) + bytes(32) + encode(Opcode.END))
    await tb.start(0x100, 3)
    await tb.wait_irq(1000)
    status, index, _ = await tb.finish()
    assert (status >> 8) & 0xFF == ErrorCode.ILLEGAL_OPCODE.value and index == 1, \
        (hex(status), index)
    await then_good("illegal opcode")

    # Reserved bits: each opcode's command, as command 1, with one bit of its reserved tail
    # set (the tail's first bit, every fifth after it and its last), against the golden model.
    for op, (off, width) in ((o, t) for o, t in RESERVED_TAILS.items() if t is not None):
        for bit in sorted({*range(0, width, 5), width - 1}):
            raw = [encode(Opcode.SETPP), encode(op, reserved=1 << bit), encode(Opcode.END)]
            image = np.zeros(MEM_SIZE, dtype=np.uint8)
            image[0x100:0x100 + 96] = np.frombuffer(b"".join(raw), np.uint8)
            ref = expect(CONFIG, image, 0x100, 3, (WINDOW[0], 0), MEM_SIZE)
            assert ref.expect_error == ErrorCode.ILLEGAL_FIELD, (op.name, ref.expect_error)
            tb.ram.write(0x100, b"".join(raw))
            await tb.start(0x100, 3)
            await tb.wait_irq(1000)
            status, index, _ = await tb.finish()
            assert (status >> 8) & 0xFF == ref.expect_error.value, \
                (op.name, off + bit, hex(status))
            assert index == ref.expect_index, (op.name, off + bit, index, ref.expect_index)
    await then_good("reserved bits")

    # SLVERR and DECERR on reads and writes: bus errors in the source and destination.
    for resp in ("SLVERR", "DECERR"):
        for region in ("src", "dst", "fetch"):
            case = good()
            prog_lo = case.prog_base
            if region == "src":
                tb.bad = (0, prog_lo - 0x2000 - 1)
            elif region == "dst":
                tb.bad = (prog_lo - 0x2000, prog_lo - 1)
            else:
                tb.bad = (prog_lo + 64, prog_lo + 95)
            if resp == "DECERR":
                axi_slave.AxiResp = _DecErr
            tb.ram.write(0, case.image.tobytes())
            await tb.start(case.prog_base, case.prog_len)
            await tb.wait_irq(100_000)
            status, index, addr = await tb.finish()
            axi_slave.AxiResp = _AXI_RESP
            tb.bad = None
            code = ErrorCode((status >> 8) & 0xFF)
            assert status & 4 and code == ErrorCode.BUS_ERROR, (resp, region, hex(status))
            if region == "fetch":
                assert index == 2 and addr == prog_lo + 64, (index, hex(addr))
            await then_good(f"{resp} in {region}")

    # Abort mid-run; START while busy is ignored (and flagged).
    case = good()
    tb.ram.write(0, case.image.tobytes())
    tb.pauses(True)
    await tb.start(case.prog_base, case.prog_len)
    await ClockCycles(dut.clk, 60)
    await tb.write("CTRL", 1)
    status = await tb.read("STATUS")
    assert status & 1 and status & 8, f"START while busy: STATUS {status:#x}"
    await tb.write("CTRL", 2)
    await tb.wait_irq(10_000)
    status, _, _ = await tb.finish()
    assert (status >> 8) & 0xFF == ErrorCode.ABORTED.value and status & 4 and not status & 1, \
        hex(status)
    tb.pauses(False)
    await then_good("abort")

    # Buffer overflows, one for each span check: a single command (after a SETPP for the
    # STOREs) whose rows run past its buffer's end, against the golden model's verdict.
    c = CONFIG
    one = dict(x_size=1, y_size=1)
    k1 = dict(kx_size=1, ky_size=1, kz_size=1)
    store = dict(elems=1, z_size=1, dram_addr=WINDOW[0], dram_x_stride=1, **one)
    overflows = {
        "COMPUTE weight rows": [(Opcode.COMPUTE, dict(wgt_addr=c.weight_depth - c.rows,
                                                      kx_size=2, ky_size=1, kz_size=1, **one))],
        "COMPUTE input rows": [(Opcode.COMPUTE, dict(in_addr=c.input_depth - 1, x_size=2,
                                                     y_size=1, in_x_stride=1, **k1))],
        "COMPUTE ACC rows": [(Opcode.COMPUTE, dict(acc_addr=c.acc_depth - 1, x_size=2,
                                                   y_size=1, acc_x_stride=1, **k1))],
        "POOL input rows": [(Opcode.POOL, dict(win_w=2, win_h=1, win_x_stride=1,
                                               in_addr=c.input_depth - 1, **one))],
        "POOL ACC rows": [(Opcode.POOL, dict(win_w=1, win_h=1, acc_addr=c.acc_depth - 1,
                                             x_size=2, y_size=1, acc_x_stride=1))],
        "LOAD rows": [(Opcode.LOAD, dict(target=Buffer.WEIGHT, elems=1, z_size=1,
                                         sram_addr=c.weight_depth - 1, sram_x_stride=1,
                                         dram_addr=WINDOW[0], dram_x_stride=1, x_size=2,
                                         y_size=1))],
        "STORE ACC rows": [(Opcode.SETPP, {}),
                           (Opcode.STORE, dict(store, acc_addr=c.acc_depth - 1, x_size=2,
                                               acc_x_stride=1))],
        "STORE PARAM rows": [(Opcode.SETPP, dict(param_addr=c.param_depth - 2)),
                             (Opcode.STORE, store)],
    }
    for what, cmds in overflows.items():
        raw = [encode(op, **f) for op, f in cmds] + [encode(Opcode.END)]
        image = np.zeros(MEM_SIZE, dtype=np.uint8)
        image[0x100:0x100 + len(b"".join(raw))] = np.frombuffer(b"".join(raw), np.uint8)
        ref = expect(CONFIG, image, 0x100, len(raw), (WINDOW[0], 0), MEM_SIZE)
        assert ref.expect_error == ErrorCode.BUFFER_OVERFLOW, (what, ref.expect_error)
        ref.commands = raw
        await tb.run_case(ref, label=f"overflow: {what}")
        await then_good(f"overflow: {what}")

    # Deadlock: a COMPUTE pops a token nothing pushes.
    tb.ram.write(0x100, encode(Opcode.COMPUTE, pop_prev=1) + encode(Opcode.END))
    await tb.start(0x100, 2)
    await tb.wait_irq(1000)
    status, index, _ = await tb.finish()
    assert (status >> 8) & 0xFF == ErrorCode.TOKEN_DEADLOCK.value and index == 0, hex(status)
    await then_good("deadlock")

    # PROGRAM_END.
    tb.ram.write(0x100, encode(Opcode.COMPUTE) * 2)
    await tb.start(0x100, 2)
    await tb.wait_irq(1000)
    status, index, _ = await tb.finish()
    assert (status >> 8) & 0xFF == ErrorCode.PROGRAM_END.value and index == 2, hex(status)
    await then_good("program end")



def overlap_program(tiles=6):
    """A double-buffered convolution: per tile, LOAD a 6x6x``rows`` input block and nine
    ``rows``x``cols`` weight tiles into one half of INPUT/WEIGHT, COMPUTE a 4x4 output with a 3x3
    kernel into one half of ACC, STORE it. Tokens let LOAD run one tile ahead of EXECUTE and
    STORE one tile behind. Returns (Program, dst region)."""
    from firmware.program import Program
    c = CONFIG
    rng = np.random.default_rng(11)
    p = Program(c)
    r, k = c.rows, c.cols
    src = p.put("src", rng.integers(-128, 128, (tiles, 36, r), dtype=np.int8))
    wgt = p.put("wgt", rng.integers(-128, 128, (tiles, 9 * r, k), dtype=np.int8))
    params = np.zeros((3, k), dtype=np.int32)
    params[0] = rng.integers(-1000, 1000, k)
    params[1] = 1 << 30
    params[2] = 12
    par = p.put("param", params)
    dst = p.alloc("dst", tiles * 16 * k)
    hi, wh, ah = c.input_depth // 2, c.weight_depth // 2, c.acc_depth // 2
    p.emit(Opcode.LOAD, target=Buffer.PARAM, elems=k, x_size=3, y_size=1, z_size=1,
           dram_addr=par, dram_x_stride=4 * k, sram_x_stride=1)
    p.emit(Opcode.SETPP, param_addr=0, zp=3, lo=-128, hi=127)
    for t in range(tiles):
        b = t % 2
        p.emit(Opcode.LOAD, target=Buffer.INPUT, elems=r, x_size=36, y_size=1, z_size=1,
               dram_addr=src + 36 * r * t, dram_x_stride=r, sram_addr=b * hi, sram_x_stride=1,
               pop_next=int(t >= 2))
        p.emit(Opcode.LOAD, target=Buffer.WEIGHT, elems=k, x_size=9 * r, y_size=1, z_size=1,
               dram_addr=wgt + 9 * r * k * t, dram_x_stride=k, sram_addr=b * wh,
               sram_x_stride=1, push_next=1)
        p.emit(Opcode.COMPUTE, wgt_addr=b * wh, in_addr=b * hi, acc_addr=b * ah, x_size=4,
               y_size=4, in_x_stride=1, in_y_stride=6, acc_x_stride=1, acc_y_stride=4,
               kx_size=3, ky_size=3, kz_size=1, in_kx_stride=1, in_ky_stride=6,
               pop_prev=1, pop_next=int(t >= 2), push_prev=1, push_next=1)
        p.emit(Opcode.STORE, elems=k, acc_addr=b * ah, dram_addr=dst + 16 * k * t, x_size=16,
               y_size=1, z_size=1, acc_x_stride=1, dram_x_stride=k, pop_prev=1, push_prev=1)
    p.end()
    return p, (dst, tiles * 16 * k)


@cocotb.test()
async def test_overlap(dut):
    """Load, compute and store of consecutive tiles overlap; the result matches the golden
    model; EXECUTE's stall cycles stay below the bound derived in the docstring of
    tests/test_rtl_npu.py::test_npu_overlap."""
    tb = TB(dut)
    await tb.reset()
    tiles = int(os.environ.get("NPU_TILES", "6"))
    prog, dst = overlap_program(tiles)
    img = image_of(CONFIG, prog, MEM_SIZE)
    case = expect(CONFIG, img, prog.prog_base, len(prog.commands), dst, MEM_SIZE,
                  window=WINDOW)
    case.commands = prog.commands
    assert case.expect_error == ErrorCode.NONE
    await tb.run_case(case, label="overlap")
    names = ("CYCLES", "LOAD_BUSY", "EXECUTE_BUSY", "STORE_BUSY", "MAC_ACTIVE",
             "EXECUTE_WAIT_TOKEN", "EXECUTE_STARVED", "LOAD_WAIT_TOKEN", "STORE_WAIT_TOKEN",
             "LOAD_BUS_STALL", "STORE_BUS_STALL", "BYTES_READ", "BYTES_WRITTEN", "COMMANDS")
    perf = {n: await tb.read(f"PERF_{n}_LO") for n in names if n in PRESENT}
    dut._log.info(f"overlap, {tiles} tiles: {perf}")
    macs = tiles * 16 * 9
    assert perf["MAC_ACTIVE"] == macs, perf
    assert perf["COMMANDS"] == len(prog.commands), perf
    serial = perf["LOAD_BUSY"] + perf["EXECUTE_BUSY"] + perf["STORE_BUSY"]
    # Overlap: the run is shorter than the units' busy cycles added up.
    assert perf["CYCLES"] < 0.85 * serial, perf
    # EXECUTE stalls (cycles the execute unit is idle during the run): the first tile's
    # loads (pipeline fill), per later tile at most what LOAD, or STORE (which frees the
    # accumulator: a slow post-processor, array.postproc_steps), takes longer than EXECUTE, the
    # last tile's store (drain), and a hand-over of 40 cycles per tile (token, issue, array
    # latency rows + cols + 2).
    load_tile = perf["LOAD_BUSY"] / tiles
    exec_tile = perf["EXECUTE_BUSY"] / tiles
    store_tile = perf["STORE_BUSY"] / tiles
    bound = load_tile + (tiles - 1) * max(0.0, load_tile - exec_tile, store_tile - exec_tile) + \
        store_tile + 40 * tiles
    stall = perf["CYCLES"] - perf["EXECUTE_BUSY"]
    dut._log.info(f"EXECUTE idle {stall} cycles, bound {bound:.0f}")
    assert stall <= bound, (stall, bound, perf)


@cocotb.test()
async def test_bandwidth(dut):
    """DMA throughput on long contiguous transfers (logged; floors asserted): a LOAD of
    INPUT rows, a LOAD of ACC rows and a STORE, each alone in its program."""
    from firmware.program import Program
    tb = TB(dut)
    await tb.reset()
    c = CONFIG
    results = {}
    for name, target, rows, elems, esize in (
            ("load_input", Buffer.INPUT, min(c.input_depth // 2, 1024), c.rows, 1),
            ("load_acc", Buffer.ACC, min(c.acc_depth // 2, 1024), c.cols, 4),
            ("store", None, min(c.acc_depth // 2, 1024), c.cols, 1)):
        p = Program(c)
        src = p.put("src", np.arange(rows * c.cols * 4, dtype=np.uint8))
        dst = p.alloc("dst", rows * c.cols)
        if target is None:
            p.emit(Opcode.SETPP, param_addr=0, lo=-128, hi=127)
            p.emit(Opcode.STORE, elems=elems, x_size=rows, y_size=1, z_size=1, acc_x_stride=1,
                   dram_addr=dst, dram_x_stride=elems)
        else:
            p.emit(Opcode.LOAD, target=target, elems=elems, x_size=rows, y_size=1, z_size=1,
                   sram_x_stride=1, dram_addr=src, dram_x_stride=elems * esize)
        p.end()
        img = image_of(c, p, MEM_SIZE)
        case = expect(c, img, p.prog_base, len(p.commands), (dst, rows * c.cols), MEM_SIZE,
                      window=WINDOW)
        case.commands = p.commands
        await tb.run_case(case, label=name)
        busy = await tb.read("PERF_STORE_BUSY_LO" if target is None else "PERF_LOAD_BUSY_LO")
        nbytes = rows * elems * esize
        results[name] = (nbytes, busy, nbytes / busy)
    dut._log.info("DMA bytes/cycle (bytes, busy cycles, bytes/cycle): " + str(results))
    beat = c.bus_data_width // 8
    # Floors: LOAD at least 0.4 rows per cycle, STORE a row per 6 cycles (one write request
    # per row: request, beats, and the responses at the end) or per post-processor row time
    # (ceil(cols / postproc_lanes) * postproc_steps cycles) if that is longer.
    assert results["load_input"][2] >= 0.4 * min(beat, c.rows), results
    assert results["load_acc"][2] >= 0.4 * min(beat, 4 * c.cols), results
    row_cycles = max(6, c.pp_row_cycles + 1)
    assert results["store"][2] >= c.cols / row_cycles, results
