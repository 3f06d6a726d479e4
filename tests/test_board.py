"""The board top's host link: UART, bridge protocol, on-chip RAM (Amaranth simulator), and the
whole board top under cocotb with the driver running a compiled network through the serial
line (``sim/tb_board.py``)."""

import random
import struct

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.sim import Simulator
from onnx import helper

from firmware import board as fb
from hdl.bridge import SYNC, BridgeCommand, BridgeStatus, UartBridge, crc8_update
from hdl.config import NpuConfig
from hdl.csr import CsrBank
from hdl.isa import registers
from hdl.onchip_ram import OnChipRam
from hdl.uart import UartRx, UartTx, divisor_for

TINY = NpuConfig.load("tiny")


def _sim(dut, bench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# ---- CRC and UART -------------------------------------------------------------------------------


def test_crc8_hardware_equals_host():
    rng = random.Random(1)
    pairs = [(rng.randrange(256), rng.randrange(256)) for _ in range(64)] + [(0, 0), (255, 255)]
    m = Module()
    crc, byte = Signal(8), Signal(8)
    out = Signal(8)
    m.d.comb += out.eq(crc8_update(crc, byte))

    async def bench(ctx):
        for c, b in pairs:
            ctx.set(crc, c)
            ctx.set(byte, b)
            assert ctx.get(out) == crc8_update(c, b)
    _sim(m, bench, clock=False)
    # The known check value of CRC-8 (poly 0x07) over "123456789".
    assert fb.crc8(b"123456789") == 0xF4


@pytest.mark.parametrize("divisor", [4, 7])
def test_uart_loopback(divisor):
    data = [0x00, 0xFF, 0x55, 0xAA, SYNC] + [random.Random(divisor).randrange(256)
                                            for _ in range(11)]
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []
    sim = Simulator(m)
    sim.add_clock(1e-8)

    async def monitor(ctx):
        async for _, _, valid, payload in ctx.tick().sample(rx.o.valid, rx.o.payload):
            if valid:
                got.append(payload)

    sim.add_process(monitor)

    async def send(ctx):
        ctx.set(rx.o.ready, 1)
        for b in data:
            ctx.set(tx.i.valid, 1)
            ctx.set(tx.i.payload, b)
            await ctx.tick().until(tx.i.ready)
        ctx.set(tx.i.valid, 0)
        await ctx.tick().repeat(12 * divisor)
    sim.add_testbench(send)
    sim.run()
    assert got == data


def test_uart_rejects_bad_stop_bit_and_divisors():
    div = 5
    m = Module()
    m.submodules.rx = rx = UartRx(div)
    seen = {"err": 0, "bytes": []}

    async def bench(ctx):
        ctx.set(rx.o.ready, 1)
        ctx.set(rx.rx, 1)
        await ctx.tick().repeat(10)
        for stop in (0, 1):             # 0x3C with a bad stop bit, then with a good one
            for bit in [0] + [(0x3C >> i) & 1 for i in range(8)] + [stop]:
                ctx.set(rx.rx, bit)
                for _ in range(div):
                    await ctx.tick()
                    seen["err"] += ctx.get(rx.frame_error)
                    if ctx.get(rx.o.valid):
                        seen["bytes"].append(ctx.get(rx.o.payload))
                        ctx.set(rx.o.ready, 1)
            ctx.set(rx.rx, 1)
            await ctx.tick().repeat(3 * div)
    _sim(m, bench)
    assert seen["err"] == 1
    assert sorted(set(seen["bytes"])) == [0x3C]
    with pytest.raises(ValueError, match=">= 4"):
        UartRx(3)
    assert divisor_for(24e6, 1_000_000) == 24
    with pytest.raises(ValueError, match="off by"):
        divisor_for(12e6, 2_500_000)


# ---- the bridge over a RAM and the register bank ------------------------------------------------


class _Harness(wiring.Component):
    """UartBridge on an OnChipRam (its host port) and a CsrBank, with the bridge's byte
    streams as ports."""

    def __init__(self, config, size, timeout):
        self._c, self._size, self._timeout = config, size, timeout
        br = UartBridge(0, size, timeout=timeout, registered=config.slices)
        self.bridge = br
        super().__init__({"rx": wiring.In(stream.Signature(8)),
                          "tx": wiring.Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = br = self.bridge
        m.submodules.ram = ram = OnChipRam(self._c, 0, self._size)
        m.submodules.csr = csr = CsrBank(self._c)
        wiring.connect(m, br.mem, ram.host)
        wiring.connect(m, br.csr, csr.bus)
        wiring.connect(m, wiring.flipped(self.rx), br.rx)
        wiring.connect(m, br.tx, wiring.flipped(self.tx))
        m.d.comb += [ram.axi.arvalid.eq(0), ram.axi.awvalid.eq(0), ram.axi.wvalid.eq(0)]
        return m


def _bridge_session(steps, *, size=4096, timeout=400, config=None):
    """Feed byte strings to the bridge; returns the bytes it sent in answer to each.

    ``steps`` is a list of ``(bytes_to_send, reply_bytes_expected)``; after sending, the bench
    waits for that many reply bytes (or ``timeout`` + 300 cycles when none are expected, to see
    that nothing comes). Reply bytes are collected all the time, also while sending.
    """
    dut = _Harness(config or TINY, size, timeout)
    sent = []
    replies = []

    async def collect(ctx):
        async for _, _, valid, ready, payload in ctx.tick().sample(dut.tx.valid, dut.tx.ready,
                                                                   dut.tx.payload):
            if valid and ready:
                sent.append(payload)

    async def bench(ctx):
        ctx.set(dut.tx.ready, 1)
        for data, expect in steps:
            start = len(sent)
            for b in data:
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, b)
                await ctx.tick().until(dut.rx.ready)
            ctx.set(dut.rx.valid, 0)
            budget = 50 * (expect + 4) + timeout + 300
            while budget and (len(sent) - start < expect or not expect):
                budget -= 1
                await ctx.tick()
            await ctx.tick().repeat(4)
            replies.append(bytes(sent[start:]))
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(collect)
    sim.add_testbench(bench)
    sim.run()
    return replies


def _reply(status, data=b""):
    body = bytes([status]) + data
    return bytes([SYNC]) + body + bytes([fb.crc8(body)])


@pytest.mark.parametrize("sliced", [False, True])
def test_bridge_memory_and_registers(sliced):
    """Every command on a good frame; with ``sliced``, on the fast clock's RAM (the host's
    requests registered before they reach the memory) and bridge (the read data registered
    before its word register)."""
    regs = {r.name: r.offset for r in registers(TINY)}
    data = bytes(random.Random(3).randrange(256) for _ in range(37))
    C = BridgeCommand
    steps = [
        (fb.encode_request(C.INFO), 12),
        (fb.encode_request(C.MEM_WRITE, 101, len(data), data), 3),
        (fb.encode_request(C.MEM_READ, 99, 41), 44),
        (fb.encode_request(C.REG_WRITE, regs["PROG_BASE"], 4, struct.pack("<I", 0x1234_5660)), 3),
        (fb.encode_request(C.REG_READ, regs["ID"], 8), 11),
        (fb.encode_request(C.REG_READ, regs["PROG_BASE"], 4), 7),
    ]
    out = _bridge_session(steps, config=_sliced(TINY) if sliced else TINY)
    assert out[0] == _reply(0, struct.pack("<BII", 1, 0, 4096))
    assert out[1] == _reply(0)
    assert out[2] == _reply(0, b"\0\0" + data + b"\0\0")
    assert out[3] == _reply(0)
    id_, version = registers(TINY)[0].reset, registers(TINY)[1].reset
    assert out[4] == _reply(0, struct.pack("<II", id_, version))
    assert out[5] == _reply(0, struct.pack("<I", 0x1234_5660))
    for (frame, _), raw in zip(steps, out):
        cmd, length = frame[1], struct.unpack_from("<H", frame, 6)[0]
        assert fb.decode_reply(cmd, length, raw)[0] == BridgeStatus.OK


def test_bridge_bad_frames_get_an_error_and_resynchronise():
    C, S = BridgeCommand, BridgeStatus
    good = fb.encode_request(C.MEM_WRITE, 8, 4, b"\x11\x22\x33\x44")
    bad_header = bytearray(good)
    bad_header[7] ^= 0x01                   # LEN corrupted: the header CRC catches it
    bad_data = bytearray(good)
    bad_data[10] ^= 0x80                    # a data byte corrupted: the data CRC catches it
    unknown = bytes([SYNC]) + struct.pack("<BIH", 0x7E, 0, 0)
    unknown += bytes([fb.crc8(unknown[1:])])
    steps = [
        (b"\x00\x13\x37", 0),                                   # noise: ignored
        (bytes(bad_header), 3),
        (unknown, 3),
        (fb.encode_request(C.MEM_WRITE, 4090, 8, bytes(8)), 3),   # past the end: data skipped
        (fb.encode_request(C.REG_READ, 2, 4), 3),                 # misaligned register
        (fb.encode_request(C.MEM_READ, 0, 0), 3),                 # empty
        (bytes(bad_data), 3),
        (good[:6], 3),                                           # stops arriving: TIMEOUT
        (good, 3),
        (fb.encode_request(C.MEM_READ, 8, 4), 7),
    ]
    out = _bridge_session(steps)
    assert out[0] == b""
    assert out[1] == _reply(S.BAD_HEADER.value)
    assert out[2] == _reply(S.BAD_COMMAND.value)
    assert out[3] == _reply(S.BAD_ADDRESS.value)
    assert out[4] == _reply(S.BAD_ADDRESS.value)
    assert out[5] == _reply(S.BAD_ADDRESS.value)
    assert out[6] == _reply(S.BAD_DATA_CRC.value)
    assert out[7] == _reply(S.TIMEOUT.value)
    assert out[8] == _reply(S.OK.value)
    assert out[9] == _reply(S.OK.value, b"\x11\x22\x33\x44")


def test_host_codec_rejects_bad_replies():
    C = BridgeCommand
    ok = _reply(0, b"\1\2\3\4")
    assert fb.decode_reply(C.MEM_READ, 4, ok) == (BridgeStatus.OK, b"\1\2\3\4")
    for bad in (ok[:-1], b"\x00" + ok[1:], ok[:-1] + bytes([ok[-1] ^ 1]),
                bytes([SYNC, 0x66, 0])):
        with pytest.raises(fb.BridgeError):
            fb.decode_reply(C.MEM_READ, 4, bad)
    with pytest.raises(ValueError, match="data bytes"):
        fb.encode_request(C.MEM_WRITE, 0, 4, b"\0")


class _LossyLink:
    """A link to a Python model of the bridge that corrupts chosen frames once."""

    def __init__(self, mem, corrupt):
        self.mem, self.corrupt, self.sent, self.out = mem, set(corrupt), 0, b""

    def write(self, frame):
        self.sent += 1
        cmd, addr, length = struct.unpack_from("<BIH", frame, 1)
        if self.sent in self.corrupt:
            self.out = _reply(BridgeStatus.BAD_DATA_CRC.value)
        elif cmd == BridgeCommand.MEM_WRITE.value:
            self.mem[addr:addr + length] = frame[9:9 + length]
            self.out = _reply(0)
        else:
            self.out = _reply(0, bytes(self.mem[addr:addr + length]))

    def read(self, n):
        out, self.out = self.out[:n], self.out[n:]
        return out

    def flush_input(self):
        self.out = b""


def test_client_retries_a_failed_frame():
    mem = bytearray(16384)
    link = _LossyLink(mem, corrupt={2})
    client = fb.BridgeClient(link, sleep=lambda s: None)
    data = bytes(range(256)) * 20            # 5120 bytes: two frames
    client.write_mem(100, data)
    assert mem[100:100 + len(data)] == data
    assert client.read_mem(100, len(data)) == data
    assert client.errors == 1
    dead = _LossyLink(mem, corrupt=range(1, 10))
    with pytest.raises(fb.BridgeError, match="BAD_DATA_CRC"):
        fb.BridgeClient(dead, retries=2, sleep=lambda s: None).write_mem(0, b"x")


# ---- on-chip RAM: AXI4 bursts with backpressure and errors --------------------------------------


def _sliced(config):
    """``config`` at 100 MHz: with the register slices of a fast clock."""
    d = config.to_dict()
    d["target"]["clock_mhz"] = 100
    return NpuConfig.from_dict(d)


@pytest.mark.parametrize("sliced", [False, True])
def test_onchip_ram_axi_bursts(sliced):
    """Write bursts with random strobes (one past the end: DECERR), read back under random
    R backpressure, against a byte model; then, with RREADY high, a burst's beats come back to
    back (one a cycle)."""
    size = 2048
    cfg = _sliced(TINY) if sliced else TINY
    assert cfg.slices == sliced
    dut = OnChipRam(cfg, 0, size)
    bus = dut.axi
    rng = random.Random(5)
    model = bytearray(size)
    log = []

    async def address(ctx, ch, addr, beats, ident):
        for field, value in (("addr", addr), ("len", beats - 1), ("id", ident), ("valid", 1)):
            ctx.set(getattr(bus, ch + field), value)
        await ctx.tick().until(getattr(bus, ch + "ready"))
        ctx.set(getattr(bus, ch + "valid"), 0)

    async def bench(ctx):
        for trial in range(6):
            beats = rng.randint(1, 16)
            addr = rng.randrange(0, size // 8 - 4) * 8 if trial != 5 else size - 16
            words = [rng.getrandbits(64) for _ in range(beats)]
            strb = [rng.getrandbits(8) for _ in range(beats)]
            await address(ctx, "aw", addr, beats, trial)
            for k, (w, s) in enumerate(zip(words, strb)):
                ctx.set(bus.wvalid, 1)
                ctx.set(bus.wdata, w)
                ctx.set(bus.wstrb, s)
                ctx.set(bus.wlast, k == beats - 1)
                await ctx.tick().until(bus.wready)
                a = addr + 8 * k
                if a < size:
                    for i in range(8):
                        if s >> i & 1:
                            model[a + i] = (w >> 8 * i) & 255
            ctx.set(bus.wvalid, 0)
            ctx.set(bus.bready, 1)
            bresp, bid = await ctx.tick().sample(bus.bresp, bus.bid).until(bus.bvalid)
            ctx.set(bus.bready, 0)
            assert bid == trial
            assert bresp == (3 if addr + 8 * beats > size else 0)
            # Read back with random R backpressure.
            await address(ctx, "ar", addr, beats, trial)
            got = []
            while True:
                ready = rng.random() < 0.6
                ctx.set(bus.rready, ready)
                await ctx.delay(1e-9)
                valid = ctx.get(bus.rvalid)
                if valid and ready:
                    got.append((ctx.get(bus.rdata), ctx.get(bus.rresp), ctx.get(bus.rlast),
                                ctx.get(bus.rid)))
                await ctx.tick()
                if got and got[-1][2]:
                    break
            ctx.set(bus.rready, 0)
            assert len(got) == beats
            for k, (d, resp, _, rid) in enumerate(got):
                a = addr + 8 * k
                assert rid == trial
                if a < size:
                    assert resp == 0
                    assert d == int.from_bytes(model[a:a + 8], "little")
                else:
                    assert (resp, d) == (3, 0)
            log.append(beats)
        # Throughput: 16 beats with RREADY always high arrive on 16 consecutive cycles.
        await address(ctx, "ar", 0, 16, 7)
        ctx.set(bus.rready, 1)
        cycles = []
        for cycle in range(40):
            _, _, valid, last = await ctx.tick().sample(bus.rvalid, bus.rlast)
            if valid:
                cycles.append(cycle)
            if valid and last:
                break
        ctx.set(bus.rready, 0)
        log.append(cycles)
    _sim(dut, bench)
    assert len(log) == 7
    assert len(log[-1]) == 16 and log[-1][-1] - log[-1][0] == 15


def test_onchip_ram_validates():
    with pytest.raises(ValueError, match="power of two"):
        OnChipRam(TINY, 0, 1000)
    with pytest.raises(ValueError, match="kind"):
        OnChipRam(TINY, 0, 4096, kind="dram")
    with pytest.raises(ValueError, match="SPRAM"):
        from hdl.onchip_ram import _Spram
        _Spram(1024, 64)


# ---- the board top under cocotb -----------------------------------------------------------------


def _conv_program(config):
    """A 3x3 convolution with ReLU (6x6x4 -> 6x6x4) compiled for ``config``."""
    from firmware.compiler import compile_model
    from tests.test_compiler import conv_nodes, qdq_model
    nodes, inits = conv_nodes(name="conv")
    nodes[-1].output[0] = "c"
    nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    return compile_model(qdq_model(nodes, inits, x_zp=-3), config)


def _digits_program(config):
    """The digits ResNet (tests/fixtures), its 48 KiB image in tiny's SPRAM."""
    from firmware.compiler import compile_model
    from firmware.digits import FIXTURE
    return compile_model(FIXTURE, config)


@pytest.mark.parametrize("config,make", [
    ("tiny", _conv_program), ("small", _conv_program),
    pytest.param("tiny", _digits_program, marks=pytest.mark.slow)],
    ids=["conv3x3", "conv3x3-small", "digits"])
def test_board_runs_a_network_through_the_serial_link(tmp_path, config, make):
    """The driver runs a compiled network on the board top over a simulated serial line
    (cocotbext-uart); the output equals the golden model's. Also: bad frames through the UART
    get error replies (``sim/tb_board.py``). tiny's system has the SPRAM model as its memory;
    small's is the ECP5 build's fast-clock system (block RAM read through registers, the AXI
    address channels through register slices)."""
    from firmware import driver, npubin
    from sim import runner
    prog = make(config)
    inp = prog.manifest["input"]
    xq = np.random.default_rng(7).integers(-128, 128, size=inp["size"], dtype=np.int8)
    xq = xq.reshape(inp["nhwc"])
    want = driver.run_int8(prog, xq, "golden")
    npubin.save(prog, tmp_path / "prog.npubin")
    np.save(tmp_path / "x.npy", xq)
    tests, failed = runner.run(config, "tb_board", top="board_tb",
                               extra_env={"BOARD_JOB": str(tmp_path)})
    assert tests == 2 and failed == 0
    got = np.load(tmp_path / "y.npy")
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
