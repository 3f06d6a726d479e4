"""Amaranth-simulator tests of the datapath blocks against the golden functions and GoldenNpu."""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal, signed
from amaranth.sim import Simulator

from firmware import numerics
from firmware.golden import GoldenNpu
from hdl.config import NpuConfig
from hdl.exec_top import ExecTop
from hdl.isa import Buffer, Opcode, PoolMode, encode
from hdl.postproc import PostProcessor
from hdl.scratchpad import Scratchpad
from hdl.slices import PartedFIFO, register_slice, skid_slice
from hdl.systolic import SystolicArray


def small_config(rows, cols, name="t", fast=False, **buffers):
    """A tiny-based configuration of ``rows`` x ``cols``; ``fast``: at 100 MHz, with the
    register slices of a fast clock (:attr:`~hdl.config.NpuConfig.slices`)."""
    d = NpuConfig.load("tiny").to_dict()
    d["name"] = name
    d["array"].update(rows=rows, cols=cols)
    if fast:
        d["target"]["clock_mhz"] = 100
    d["buffers"].update(dict(input_depth=64, weight_depth=64, acc_depth=32, param_depth=16,
                             input_banks=2, weight_banks=1, acc_banks=2), **buffers)
    return NpuConfig.from_dict(d)


def run_sim(dut, testbench, vcd=None):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()


def s8(rng, shape):
    return rng.integers(-128, 128, size=shape, dtype=np.int64)


async def stream_put(ctx, stream, payloads, rng=None, p_idle=0.0):
    """Send payloads (values for ``ctx.set(stream.payload, v)``) with random idle cycles."""
    for payload in payloads:
        while rng is not None and rng.random() < p_idle:
            ctx.set(stream.valid, 0)
            await ctx.tick()
        ctx.set(stream.valid, 1)
        if isinstance(payload, int):    # raw bits, e.g. an encoded command
            ctx.set(stream.payload.as_value(), payload)
        else:
            ctx.set(stream.payload, payload)
        await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, count, rng=None, p_stall=0.0):
    """Receive ``count`` payloads with random backpressure."""
    out = []
    while len(out) < count:
        ready = rng is None or rng.random() >= p_stall
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            out.append(payload)
    ctx.set(stream.ready, 0)
    return out


# -- systolic array ---------------------------------------------------------------------------


@pytest.mark.parametrize("rows, cols, registered", [(1, 1, False), (4, 3, False), (3, 5, False),
                                                    (1, 1, True), (4, 3, True), (2, 6, True)])
def test_systolic_back_to_back_tiles(rows, cols, registered):
    rng = np.random.default_rng(rows * 10 + cols)
    dut = SystolicArray(rows, cols, registered_operands=registered, data_reset=not registered)
    lat = dut.LATENCY
    # Tiles of different lengths, each at least ``rows`` vectors (shorter than ``cols`` too):
    # the next tile's weight rows are entered while the current one streams, each at a random
    # cycle of its window [t_sw(n), t_sw(n+1)), in random order.
    ntiles = 4
    lengths = [int(rng.integers(rows, rows + 4)) for _ in range(ntiles)]
    weights = [s8(rng, (rows, cols)) for _ in range(ntiles)]
    weights[0][0, 0] = -128
    vectors = [s8(rng, (n, rows)) for n in lengths]
    vectors[0][0, 0] = -128
    expect = np.concatenate([v @ w for v, w in zip(vectors, weights)])
    got = []

    async def tb(ctx):
        # Tile 0's weight rows first (the last one the cycle before tile 0's first vector)
        for r in rng.permutation(rows):
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_row, int(r))
            ctx.set(dut.w_data, [int(v) for v in weights[0][r]])
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        schedule = []
        for t, vecs in enumerate(vectors):
            for i, v in enumerate(vecs):
                schedule.append((t, i, v))
        wq = {}
        for cycle, (t, i, v) in enumerate(schedule + [(None, None, None)] * (lat + 2)):
            if v is not None:
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.i_switch, i == 0)
                ctx.set(dut.i_data, [int(e) for e in v])
                if i == 0 and t + 1 < ntiles:
                    when = sorted(rng.choice(lengths[t], size=rows, replace=False))
                    for when_r, r in zip(when, rng.permutation(rows)):
                        wq[cycle + int(when_r)] = (int(r), weights[t + 1][r])
            else:
                ctx.set(dut.i_valid, 0)
            if cycle in wq:
                r, wrow = wq.pop(cycle)
                ctx.set(dut.w_en, 1)
                ctx.set(dut.w_row, r)
                ctx.set(dut.w_data, [int(e) for e in wrow])
            else:
                ctx.set(dut.w_en, 0)
                ctx.set(dut.w_data, [int(e) for e in s8(rng, cols)])   # not taken
            if ctx.get(dut.o_valid):
                got.append([int(e) for e in ctx.get(dut.o_data)])
            await ctx.tick()

    run_sim(dut, tb)
    assert np.array_equal(np.array(got), expect)


# -- scratchpad -------------------------------------------------------------------------------


@pytest.mark.parametrize("banks, transparent, write_register, read_registers, addr_registers, "
                         "lane_groups",
                         [(1, False, False, (), (), 1), (2, True, False, (), (), 1),
                          (4, False, False, (), (), 1), (1, True, True, (), (), 1),
                          (2, True, True, (), (), 1), (2, True, True, (0,), (), 1),
                          (1, False, False, (0, 1), (), 1), (2, True, True, (0, 1), (1,), 3),
                          (2, False, False, (), (0,), 2), (2, False, True, (0,), (), 3),
                          (1, False, True, (), (), 1), (2, True, True, (0, 1), (0, 1), 3)])
def test_scratchpad_masked_writes_and_reads(banks, transparent, write_register, read_registers,
                                            addr_registers, lane_groups):
    """Random masked writes and reads (one of the rows being written), against a model; a
    registered write port (a fast clock's) behaves as the plain transparent one (without
    transparency: its reads see the writes up to two cycles before), a registered read port
    as the others a cycle later, and one with its address registered (lanes split over
    memories) a cycle later again, from the address given a cycle early."""
    rng = np.random.default_rng(banks + 10 * write_register + 100 * len(read_registers) +
                                1000 * lane_groups)
    depth, lanes = 32, 3
    dut = Scratchpad(depth, lanes, signed(32), banks, read_ports=2, transparent=transparent,
                     write_register=write_register, read_registers=read_registers,
                     addr_registers=addr_registers, lane_groups=lane_groups)
    assert [dut.read_latency(p) for p in range(2)] == [
        1 + (p in read_registers) + (p in addr_registers) for p in range(2)]
    model = np.zeros((depth, lanes), dtype=np.int64)
    expect = [None, None]
    history = [[], []]      # expect after each step: a port of latency L shows it L - 1 later

    waddrs = [int(a) for a in rng.integers(depth, size=302)]
    pending = [(0, False), (0, False)]      # an address-registered port's read, a cycle on

    async def tb(ctx):
        before = model.copy()
        for step in range(300):
            addr = waddrs[step]
            row = rng.integers(-2**31, 2**31, size=lanes)
            mask = int(rng.integers(1 << lanes))
            en = rng.random() < 0.6
            # (port 1 reads the row being written in its read's cycle)
            raddr = [int(rng.integers(depth)), waddrs[step + (1 in addr_registers)]]
            ren = [step < 3 or rng.random() < 0.8 for _ in range(2)]
            ctx.set(dut.write.en, en)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.data, [int(v) for v in row])
            ctx.set(dut.write.mask, mask)
            for p in range(2):
                ctx.set(dut.read[p].addr, raddr[p])
                ctx.set(dut.read[p].en, ren[p])
            older = before      # (the state before the previous cycle's write)
            before = model.copy()
            if en:
                for lane in range(lanes):
                    if mask >> lane & 1:
                        model[addr, lane] = row[lane]
            for p in range(2):       # (the data holds while en is low)
                r_addr, r_en = raddr[p], ren[p]
                if p in addr_registers:
                    (r_addr, r_en), pending[p] = pending[p], (raddr[p], ren[p])
                if r_en:
                    seen = (model if transparent else older if write_register else before)
                    expect[p] = list(seen[r_addr])
                history[p].append(expect[p])
            await ctx.tick()
            for p in range(2):
                lag = dut.read_latency(p) - 1 - (p in addr_registers)
                if step >= lag and history[p][step - lag] is not None:
                    got = [int(v) for v in ctx.get(dut.read[p].data)]
                    assert got == history[p][step - lag], (step, p)

    run_sim(dut, tb)


def test_scratchpad_rejects_registers_of_ports_it_has_not():
    with pytest.raises(ValueError, match=r"read_registers \(2,\) must be ports of 0 .. 1"):
        Scratchpad(32, 3, signed(32), read_ports=2, read_registers=(2,))
    with pytest.raises(ValueError, match=r"addr_registers \(3,\) must be ports of 0 .. 1"):
        Scratchpad(32, 3, signed(32), read_ports=2, addr_registers=(3,))
    with pytest.raises(ValueError, match="lane_groups must be an integer of 1 .. 3"):
        Scratchpad(32, 3, signed(32), lane_groups=4)


# -- post-processor ---------------------------------------------------------------------------


def _pp_config(rng, kind="random"):
    """SETPP fields. ``kind``: ``random`` (any field values), ``normal`` (a normalised Q31
    ``add_ma`` and shifts near 31, as the compiler makes them), ``ties`` (``add_ma / 2^add_shift
    = 1/2`` and ``add_mb / 2^add_shift = 3/2``: every other sum is an exact half), or
    ``extreme:<shift>`` (no clamps, both zero points -128 or both 127, the largest multipliers,
    so the stage-2 sum reaches +-510 * (2^31 - 1), the edge of its 41 bits)."""
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
    add_lo, add_hi = sorted(int(v) for v in rng.integers(-128, 128, size=2))
    cfg = dict(zp=int(rng.integers(-128, 128)), lo=lo, hi=hi,
               res_zp=int(rng.integers(-128, 128)), add_zp=int(rng.integers(-128, 128)),
               add_lo=add_lo, add_hi=add_hi, add_ma=int(rng.integers(0, 2**31)),
               add_mb=int(rng.integers(0, 2**31)), add_shift=int(rng.integers(0, 64)))
    if kind == "normal":
        cfg.update(add_ma=int(rng.integers(2**30, 2**31)), add_mb=int(rng.integers(0, 2**31)),
                   add_shift=int(rng.integers(28, 40)))
    elif kind == "ties":
        s = int(rng.integers(1, 30))
        cfg.update(add_ma=1 << (s - 1), add_mb=3 << (s - 1), add_shift=s)
    elif kind.startswith("extreme:"):
        zp = int(rng.choice([-128, 127]))
        cfg.update(lo=-128, hi=127, add_lo=-128, add_hi=127, zp=zp, res_zp=zp, add_zp=0,
                   add_ma=2**31 - 1, add_mb=2**31 - 1, add_shift=int(kind[8:]))
    elif kind != "random":
        raise ValueError(f"unknown SETPP kind {kind!r}")
    return cfg


def _pp_rows(rng, n, cols):
    acc = rng.integers(-2**31, 2**31, size=(n, cols))
    # Extremes and exact ties: small accumulators with shifts make halves frequent.
    acc[rng.random((n, cols)) < 0.3] = rng.integers(-64, 64)
    acc[0, 0], acc[-1, -1] = -2**31, 2**31 - 1
    bias = rng.integers(-2**31, 2**31, size=(n, cols))
    bias[rng.random((n, cols)) < 0.5] = 0
    mult = rng.integers(0, 2**31, size=(n, cols))
    mult[rng.random((n, cols)) < 0.3] = 1 << 30
    mult[0, 0] = 2**31 - 1
    shift = rng.integers(0, 64, size=(n, cols))
    shift[rng.random((n, cols)) < 0.3] = rng.integers(30, 34)
    residual = s8(rng, (n, cols))
    use = rng.random(n) < 0.5
    return acc, bias, mult, shift, residual, use


def _pp_golden(cfg, acc, bias, mult, shift, residual, use):
    v = numerics.wrap_int32(acc + bias)
    a = numerics.requantize(v, mult, shift, cfg["zp"], cfg["lo"], cfg["hi"])
    y = numerics.add(a, cfg["zp"], residual, cfg["res_zp"], cfg["add_ma"], cfg["add_mb"],
                     cfg["add_shift"], cfg["add_zp"], cfg["add_lo"], cfg["add_hi"])
    return np.where(use[:, None], y, a).astype(np.int64)


@pytest.mark.parametrize("seed, kind, cols, lanes, steps", [
    (1, "random", 3, None, 1), (2, "extreme:31", 3, None, 1), (3, "normal", 3, None, 1),
    (4, "ties", 5, 2, 1), (5, "extreme:40", 3, 1, 1), (6, "normal", 4, 2, 1),
    (7, "ties", 3, None, 1), (8, "random", 4, 2, 1), (9, "extreme:41", 2, None, 1),
    (10, "extreme:42", 2, 1, 1), (11, "extreme:63", 3, None, 1), (12, "extreme:39", 3, None, 1),
    # multi-cycle multiplications (array.postproc_steps), lane-serial or not
    (13, "random", 2, 1, 8), (14, "ties", 3, None, 2), (15, "extreme:41", 2, 1, 4),
    (16, "normal", 5, 2, 16), (17, "extreme:31", 1, None, 8), (18, "random", 3, None, 4),
    # 16 steps: both roundings' shifts done in place over the steps, the rest at the advance
    # (every remainder of the shift by 4 and by 3, ties, the widest shifts)
    (24, "ties", 2, 1, 16), (25, "ties", 3, 2, 16), (26, "extreme:0", 2, 1, 16),
    (27, "extreme:1", 2, 1, 16), (28, "extreme:2", 2, 1, 16), (29, "extreme:3", 2, 1, 16),
    (30, "extreme:5", 2, 1, 16), (31, "extreme:42", 2, 1, 16), (32, "extreme:63", 2, 1, 16),
    # two stages per rounding (a fast clock's split pipeline)
    (19, "random", 3, None, -1), (20, "ties", 4, 2, -1), (21, "extreme:41", 2, 1, -1),
    (22, "extreme:63", 3, None, -1), (23, "random", 3, None, -4)])
def test_postproc_matches_golden_with_stalls(seed, kind, cols, lanes, steps):
    """(a negative ``steps`` is ``-steps`` with the split pipeline)"""
    rng = np.random.default_rng(seed)
    n = 60
    dut = PostProcessor(cols, lanes, abs(steps), split=steps < 0)
    cfg = _pp_config(rng, kind)
    acc, bias, mult, shift, residual, use = _pp_rows(rng, n, cols)
    expect = _pp_golden(cfg, acc, bias, mult, shift, residual, use)
    payloads = [{"acc": [int(v) for v in acc[i]], "bias": [int(v) for v in bias[i]],
                 "mult": [int(v) for v in mult[i]], "shift": [int(v) for v in shift[i]],
                 "residual": [int(v) for v in residual[i]], "use_residual": int(use[i])}
                for i in range(n)]
    got = []

    async def put(ctx):
        for k, v in cfg.items():
            ctx.set(getattr(dut.config, k), v)
        await stream_put(ctx, dut.i, payloads, rng, 0.3)

    async def get(ctx):
        got.extend(await stream_get(ctx, dut.o, n, rng, 0.3))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    assert np.array_equal(np.array([[int(v) for v in row] for row in got]), expect)


@pytest.mark.parametrize("cols, lanes, steps, split", [
    (1, None, 1, False), (3, None, 1, False), (5, 2, 1, False), (2, None, 4, False),
    (1, None, 16, False), (3, None, 1, True), (5, 2, 1, True), (2, None, 4, True)])
def test_postproc_latency(cols, lanes, steps, split):
    """Cycles from the transfer on ``i`` to the row on ``o``: ``LATENCY`` (plus the beats of a
    lane-serial row held from its transfer), and ``1 + (LATENCY - 1) * steps`` with
    multi-cycle multiplications."""
    dut = PostProcessor(cols, lanes, steps, split)
    seen = []

    async def tb(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        while not ctx.get(dut.i.ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for k in range(1, 100):
            if ctx.get(dut.o.valid):
                seen.append(k)
            await ctx.tick()

    run_sim(dut, tb)
    if steps == 1:
        # (a lane-serial row is held from its transfer, its first beat a cycle later; with
        # split its first beat goes into stage 0 as it is taken)
        assert seen == [dut.LATENCY + (dut.beats - split if dut.beats > 1 else 0)]
    else:
        assert seen == [1 + (dut.LATENCY - 1) * steps]
    assert dut.LATENCY == PostProcessor.latency(split) == (19 if split else 7)


# -- register slices ---------------------------------------------------------------------------


class _Slice(Elaboratable):
    """A 16-bit stream through :func:`register_slice` or :func:`skid_slice`."""

    def __init__(self, kind, parted=False):
        self.kind, self.parted = kind, parted
        self.i_valid, self.i_ready = Signal(), Signal()
        self.i_data = Signal(16)
        self.o_valid, self.o_ready = Signal(), Signal()
        self.o_data = Signal(16)

    def elaborate(self, platform):
        m = Module()
        if self.kind == "register":
            room, valid, out, take = register_slice(m, "s", self.i_valid, self.i_data, 16,
                                                    parted=self.parted)
        else:
            room, valid, out, take = skid_slice(m, "s", self.i_valid, self.i_data, 16)
        m.d.comb += [self.i_ready.eq(room), self.o_valid.eq(valid), self.o_data.eq(out),
                     take.eq(self.o_ready & valid)]
        return m


@pytest.mark.parametrize("kind, parted", [("register", False), ("register", True),
                                          ("skid", False)])
@pytest.mark.parametrize("p_idle, p_stall", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.4, 0.4)])
def test_register_slices_pass_every_item_in_order(kind, parted, p_idle, p_stall):
    """Random producer gaps and consumer stalls: every item comes out once, in order; with
    neither, one a cycle (the slice's room and head are registers, and it still streams)."""
    dut = _Slice(kind, parted)
    rng = np.random.default_rng(5)
    items = [int(v) for v in rng.integers(0, 1 << 16, size=200)]
    got, cycles = [], []

    async def producer(ctx):
        for v in items:
            while rng.random() < p_idle:
                # (what the payload holds while valid is low must never come out: the skid
                # slice's registers load it without waiting for valid)
                ctx.set(dut.i_valid, 0)
                ctx.set(dut.i_data, int(rng.integers(0, 1 << 16)))
                await ctx.tick()
            ctx.set(dut.i_valid, 1)
            ctx.set(dut.i_data, v)
            await ctx.tick().until(dut.i_ready)
        ctx.set(dut.i_valid, 0)

    async def consumer(ctx):
        cycle = 0
        while len(got) < len(items) and cycle < 5000:
            ready = int(rng.random() >= p_stall)
            ctx.set(dut.o_ready, ready)
            if ready and ctx.get(dut.o_valid):
                got.append(ctx.get(dut.o_data))
                cycles.append(cycle)
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert got == items
    if p_idle == p_stall == 0:
        assert cycles[-1] - cycles[0] == len(items) - 1


@pytest.mark.parametrize("depth, registered", [(4, False), (3, False), (4, True)])
@pytest.mark.parametrize("p_idle, p_stall", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.6), (0.4, 0.4)])
def test_parted_fifo_is_a_fifo(depth, registered, p_idle, p_stall):
    """A :class:`PartedFIFO` of three parts (7, 1 and 12 bits) against a Python queue: every
    row comes out once, in order, whole; ``level`` and the ready flags follow the queue's
    length (with ``write_register`` a row is in it a cycle after its write, and ``w_rdy``
    counts the row on its way); without gaps it passes a row a cycle."""
    dut = PartedFIFO([7, 1, 12], depth=depth, write_register=registered)
    rng = np.random.default_rng(11)
    items = [int(v) for v in rng.integers(0, 1 << 20, size=300)]
    got, cycles, queue = [], [], []

    async def tb(ctx):
        sent, cycle, landing, written = 0, 0, None, None
        while len(got) < len(items) and cycle < 5000:
            # (with write_register a row written in cycle t is in the registers in t + 1 and
            # in the queue from t + 2)
            if landing is not None:
                queue.append(landing)
            landing, written = written, None
            assert ctx.get(dut.level) == len(queue)
            assert ctx.get(dut.r_rdy) == (len(queue) > 0)
            pending = len(queue) + (landing is not None)
            write = sent < len(items) and rng.random() >= p_idle and ctx.get(dut.w_rdy)
            read = rng.random() >= p_stall
            ctx.set(dut.w_en, (1 if registered else 0b111) if write else 0)
            ctx.set(dut.w_data, items[sent] if write else 0)
            ctx.set(dut.r_en, read)
            if read and queue:
                got.append(ctx.get(dut.r_data))
                cycles.append(cycle)
                assert got[-1] == queue.pop(0)
            assert ctx.get(dut.w_rdy) == (pending < depth)
            if write:
                if registered:
                    written = items[sent]
                else:
                    queue.append(items[sent])
                sent += 1
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert got == items
    if p_idle == p_stall == 0:
        assert cycles[-1] - cycles[0] == len(items) - 1


def test_parted_fifo_rejects_bad_parameters():
    with pytest.raises(TypeError, match="widths"):
        PartedFIFO([4, 0], depth=4)
    with pytest.raises(ValueError, match="depth"):
        PartedFIFO([4], depth=1)
    assert PartedFIFO.split(70, 32) == [32, 32, 6]


# -- execute unit against GoldenNpu --------------------------------------------------------------


class ExecHarness:
    """Drives an :class:`ExecTop` in the Amaranth simulator with the same buffers as a
    :class:`GoldenNpu`, and runs the same commands on both."""

    def __init__(self, config, rng):
        self.cfg = config
        self.rng = rng
        self.golden = GoldenNpu(config, 1 << 16)
        b = self.golden.buffers
        c = config
        b[Buffer.INPUT][:] = s8(rng, (c.input_depth, c.rows))
        b[Buffer.WEIGHT][:] = s8(rng, (c.weight_depth, c.cols))
        acc = rng.integers(-2**31, 2**31, size=(c.acc_depth, c.cols))
        acc[rng.random(acc.shape) < 0.5] = rng.integers(-1000, 1000)
        b[Buffer.ACC][:] = acc
        self.initial = {k: v.copy() for k, v in b.items()}

    def run_golden(self, cmds):
        raw = b"".join(encode(op, **f) for op, f in cmds) + encode(Opcode.END)
        self.golden.write(0x8000, raw)
        result = self.golden.run(0x8000, len(cmds) + 1)
        assert result.ok, result.message
        return result

    def run_rtl(self, cmds, p_idle=0.3):
        c, rng = self.cfg, self.rng
        dut = ExecTop(c)
        out = {"acc": None, "cycles": 0, "mac": 0, "done": 0}

        async def preload(ctx, port, array):
            ctx.set(port.en, 1)
            for addr, row in enumerate(array):
                ctx.set(port.addr, addr)
                ctx.set(port.data, [int(v) for v in row])
                await ctx.tick()
            ctx.set(port.en, 0)

        async def tb(ctx):
            await preload(ctx, dut.input_wr, self.initial[Buffer.INPUT])
            await preload(ctx, dut.weight_wr, self.initial[Buffer.WEIGHT])
            await preload(ctx, dut.acc_wr, self.initial[Buffer.ACC])
            raw = [int.from_bytes(encode(op, **f), "little") for op, f in cmds]
            await stream_put(ctx, dut.cmd, raw, rng, p_idle)
            while ctx.get(dut.busy):
                await ctx.tick()
            ctx.set(dut.acc_rd.en, 1)
            rows = []
            latency = ExecTop.acc_read_latency(c)
            for addr in range(c.acc_depth + latency - 1):
                ctx.set(dut.acc_rd.addr, min(addr, c.acc_depth - 1))
                await ctx.tick()
                if addr >= latency - 1:
                    rows.append([int(v) for v in ctx.get(dut.acc_rd.data)])
            out["acc"] = np.array(rows)

        async def count(ctx):
            cycle = 0
            async for _, _, done, mac in ctx.tick().sample(dut.done, dut.mac_active):
                if mac and out["mac"] == 0:
                    out["first_mac"] = cycle
                if mac:
                    out["last_mac"] = cycle
                if done:
                    out["last_done"] = cycle
                out["done"] += done
                out["mac"] += mac
                cycle += 1

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(tb)
        sim.add_testbench(count, background=True)
        sim.run()
        return out


def _rand_compute(rng, c, tiles_max=3):
    kx, ky, kz = (int(rng.integers(1, tiles_max + 1)) for _ in range(3))
    while kx * ky * kz * c.rows > c.weight_depth:
        kx = ky = kz = 1
    tiles = kx * ky * kz
    xs, ys = int(rng.integers(1, 6)), int(rng.integers(1, 4))

    def strides(n_outer, sizes, depth):
        # random strides keeping the span inside the buffer
        while True:
            st = [int(rng.integers(0, 4)) for _ in sizes]
            span = sum((n - 1) * s for n, s in zip(sizes, st))
            if span < depth:
                return st, int(rng.integers(0, depth - span))

    (skz, sky, skx, sy, sx), in_addr = strides(0, (kz, ky, kx, ys, xs), c.input_depth)
    (ay, ax), acc_addr = strides(0, (ys, xs), c.acc_depth)
    if rng.random() < 0.2:
        ax = 0   # repeated accumulator rows, back to back
    return (Opcode.COMPUTE, dict(
        accumulate=int(rng.integers(2)), wgt_addr=int(rng.integers(0, c.weight_depth -
                                                                   tiles * c.rows + 1)),
        in_addr=in_addr, acc_addr=acc_addr, x_size=xs, y_size=ys, in_x_stride=sx,
        in_y_stride=sy, acc_x_stride=ax, acc_y_stride=ay, kx_size=kx, ky_size=ky, kz_size=kz,
        in_kx_stride=skx, in_ky_stride=sky, in_kz_stride=skz))


def _rand_pool(rng, c):
    ww, wh = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    xs, ys = int(rng.integers(1, 4)), int(rng.integers(1, 3))
    while True:
        st = [int(rng.integers(0, 4)) for _ in range(4)]
        span = (ys - 1) * st[0] + (xs - 1) * st[1] + (wh - 1) * st[2] + (ww - 1) * st[3]
        if span < c.input_depth:
            break
    ay, ax = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    acc_addr = int(rng.integers(0, c.acc_depth - (ys - 1) * ay - (xs - 1) * ax))
    return (Opcode.POOL, dict(
        mode=PoolMode(int(rng.integers(2))), accumulate=int(rng.integers(2)), win_w=ww,
        win_h=wh, in_addr=int(rng.integers(0, c.input_depth - span)), acc_addr=acc_addr,
        x_size=xs, y_size=ys, in_y_stride=st[0], in_x_stride=st[1], win_y_stride=st[2],
        win_x_stride=st[3], acc_y_stride=ay, acc_x_stride=ax))


@pytest.mark.parametrize("rows, cols, seed, fast", [
    (4, 3, 1, False), (3, 4, 2, False), (2, 2, 3, False), (1, 3, 4, False),
    (4, 3, 11, True), (3, 4, 12, True), (2, 2, 13, True)] + [
    pytest.param(r, c, s, f, marks=pytest.mark.slow)
    for r, c, s, f in [(4, 4, 5, False), (5, 3, 6, False), (3, 5, 7, False), (2, 6, 8, False),
                       (6, 2, 9, False), (4, 3, 10, False), (5, 3, 14, True),
                       (2, 6, 15, True)]])
def test_execute_random_commands_match_golden(rows, cols, seed, fast):
    rng = np.random.default_rng(seed)
    cfg = small_config(rows, cols, fast=fast)
    h = ExecHarness(cfg, rng)
    cmds = []
    for _ in range(10):
        r = rng.random()
        if r < 0.6:
            cmds.append(_rand_compute(rng, cfg))
        elif r < 0.9:
            cmds.append(_rand_pool(rng, cfg))
        else:
            cmds.append((Opcode.COMPUTE, dict(x_size=0, y_size=1)))   # does no work
    res = h.run_golden(cmds)
    out = h.run_rtl(cmds)
    assert out["done"] == len(cmds)
    assert out["mac"] == res.counters["mac_vectors"]
    assert np.array_equal(out["acc"], h.golden.buffers[Buffer.ACC].astype(np.int64))


@pytest.mark.parametrize("fast", [False, True])
def test_execute_long_matmul_keeps_array_busy(fast):
    """K = 1024 over many tiles, back to back in one command: MAC-active cycles >= 95% of the
    cycles from the first vector to the last ACC write (deterministic)."""
    rows, cols = 4, 4
    cfg = small_config(rows, cols, input_depth=4096, weight_depth=1024, acc_depth=32,
                       fast=fast)
    rng = np.random.default_rng(7)
    h = ExecHarness(cfg, rng)
    n = 16                       # vectors per tile
    tiles = 1024 // rows
    cmd = (Opcode.COMPUTE, dict(accumulate=0, wgt_addr=0, in_addr=0, acc_addr=0, x_size=n,
                                y_size=1, in_x_stride=1, acc_x_stride=1, kx_size=tiles,
                                ky_size=1, kz_size=1, in_kx_stride=n))
    h.run_golden([cmd])
    out = h.run_rtl([cmd], p_idle=0)
    assert np.array_equal(out["acc"], h.golden.buffers[Buffer.ACC].astype(np.int64))
    assert out["mac"] == n * tiles
    total = out["last_done"] - out["first_mac"] + 1
    assert out["mac"] / total >= 0.95, (out["mac"], total)


@pytest.mark.parametrize("rows, cols, vectors, fast", [(4, 3, 1, False), (3, 5, 3, True),
                                                     (2, 6, 5, False)])
def test_execute_tile_period(rows, cols, vectors, fast):
    """Tiles of ``V`` vectors in one COMPUTE start every ``max(V, rows)`` cycles: the next
    tile's weight rows enter the array down its columns behind the current tile's switch
    (deterministic; ``cols`` does not limit it)."""
    tiles = 8
    cfg = small_config(rows, cols, input_depth=256, weight_depth=256, acc_depth=32, fast=fast)
    rng = np.random.default_rng(rows * 10 + cols)
    h = ExecHarness(cfg, rng)
    cmd = (Opcode.COMPUTE, dict(accumulate=0, wgt_addr=0, in_addr=0, acc_addr=0,
                                x_size=vectors, y_size=1, in_x_stride=1, acc_x_stride=1,
                                kx_size=tiles, ky_size=1, kz_size=1, in_kx_stride=vectors))
    h.run_golden([cmd])
    out = h.run_rtl([cmd], p_idle=0)
    assert np.array_equal(out["acc"], h.golden.buffers[Buffer.ACC].astype(np.int64))
    assert out["mac"] == tiles * vectors
    assert out["last_mac"] - out["first_mac"] + 1 == (tiles - 1) * max(vectors, rows) + vectors


@pytest.mark.parametrize("fast", [False, True])
def test_execute_consecutive_commands_overlap(fast):
    """Three COMPUTE commands back to back (different tiles, accumulate on, a conv-like 2-D
    block): the vectors of all of them enter the array in consecutive cycles."""
    rows, cols = 4, 3
    cfg = small_config(rows, cols, input_depth=256, weight_depth=128, acc_depth=32, fast=fast)
    rng = np.random.default_rng(9)
    h = ExecHarness(cfg, rng)
    cmds = []
    for k in range(3):
        cmds.append((Opcode.COMPUTE, dict(
            accumulate=int(k > 0), wgt_addr=8 * k, in_addr=10 * k, acc_addr=2 * k, x_size=3,
            y_size=2, in_x_stride=1, in_y_stride=5, acc_x_stride=1, acc_y_stride=3,
            kx_size=2, ky_size=1, kz_size=1, in_kx_stride=1)))
    res = h.run_golden(cmds)
    out = h.run_rtl(cmds, p_idle=0)
    assert np.array_equal(out["acc"], h.golden.buffers[Buffer.ACC].astype(np.int64))
    vectors = res.counters["mac_vectors"]
    assert out["mac"] == vectors == 36
    # first vector in to last ACC write: the vectors, then the array's latency (rows + cols
    # with its registered products, and registered operands for a fast clock) and the
    # accumulator update (five stages for a fast clock: the two-cycle ACC read, the old row's
    # register, the update's two stages)
    assert out["last_done"] - out["first_mac"] + 1 == vectors + rows + cols + 1 + 5 * fast


@pytest.mark.parametrize("pp_lanes, fast", [(None, False), (2, False), (None, True),
                                            (2, True)])
def test_exec_top_postprocess_path(pp_lanes, fast):
    """ExecTop's post-processing path: ACC row + three PARAM rows + residual -> int8 row, with
    random request gaps and output stalls, full-rate and lane-serial post-processors (and a
    fast clock's split pipeline and output FIFO)."""
    cfg = small_config(4, 5, fast=fast)
    rng = np.random.default_rng(21)
    dut = ExecTop(cfg, pp_lanes)
    acc, bias, mult, shift, residual, use = _pp_rows(rng, 12, cfg.cols)
    setpp = _pp_config(rng)
    n = len(acc)
    param = np.zeros((cfg.param_depth, cfg.cols), dtype=np.int64)
    for i in range(n // 3):                 # four parameter groups, three rows each
        param[3 * i], param[3 * i + 1], param[3 * i + 2] = bias[i], mult[i], shift[i] + 64 * i
    reqs = [(int(rng.integers(n)), 3 * int(rng.integers(n // 3))) for _ in range(30)]
    expect = []
    for a, p in reqs:
        expect.append(_pp_golden(setpp, acc[a:a + 1], param[p:p + 1], param[p + 1:p + 2],
                                 param[p + 2:p + 3] & 63, residual[a:a + 1], use[a:a + 1])[0])
    got = []

    async def put(ctx):
        for k, v in setpp.items():
            ctx.set(getattr(dut.pp_config, k), v)
        for port, rows in ((dut.acc_wr, acc), (dut.param_wr, param)):
            ctx.set(port.en, 1)
            for addr, row in enumerate(rows):
                ctx.set(port.addr, addr)
                ctx.set(port.data, [int(v) for v in row])
                await ctx.tick()
            ctx.set(port.en, 0)
        await stream_put(ctx, dut.pp_req, [
            {"acc_addr": a, "param_addr": p, "residual": [int(v) for v in residual[a]],
             "use_residual": int(use[a])} for a, p in reqs], rng, 0.3)

    async def get(ctx):
        got.extend(await stream_get(ctx, dut.pp_out, len(reqs), rng, 0.3))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    assert np.array_equal(np.array([[int(v) for v in row] for row in got]), np.array(expect))


# -- CSR bank: the performance counters' high-word latch -------------------------------------------


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_perf_high_word_latch(config):
    """Reading a counter's low word latches its high word into the one shared latch: a HI read
    returns the high word as it was at the LO read (the counter has moved on since), and
    reading another counter's LO re-latches. (small reads in steps, for a fast clock.)"""
    from hdl.csr import CsrBank
    from hdl.isa import PERF_BASE, PerfCounter, registers
    dut = CsrBank(NpuConfig.load(config))
    assert [r.offset for r in registers() if r.name.startswith("PERF_CYCLES")] == \
        [PERF_BASE, PERF_BASE + 4]
    a, b = PerfCounter.CYCLES.value, PerfCounter.BYTES_READ.value
    got = []

    async def read(ctx, offset):
        ctx.set(dut.bus.araddr, offset)
        ctx.set(dut.bus.arvalid, 1)
        ctx.set(dut.bus.rready, 1)
        await ctx.tick().until(dut.bus.arready)
        ctx.set(dut.bus.arvalid, 0)
        if not ctx.get(dut.bus.rvalid):
            await ctx.tick().until(dut.bus.rvalid)
        value = ctx.get(dut.bus.rdata)
        await ctx.tick()
        return value

    async def tb(ctx):
        ctx.set(dut.perf[a], 0x0000_0007_1234_5678)
        ctx.set(dut.perf[b], 0x0000_0009_9ABC_DEF0)
        got.append(await read(ctx, PERF_BASE + 8 * a))
        ctx.set(dut.perf[a], 0x0000_0008_0000_0001)      # the counter carries into its high word
        got.append(await read(ctx, PERF_BASE + 8 * a + 4))
        got.append(await read(ctx, PERF_BASE + 8 * b))
        got.append(await read(ctx, PERF_BASE + 8 * a + 4))  # b's high word: the last LO read
        got.append(await read(ctx, PERF_BASE + 8 * a))
        got.append(await read(ctx, PERF_BASE + 8 * a + 4))

    run_sim(dut, tb)
    assert got == [0x1234_5678, 7, 0x9ABC_DEF0, 9, 1, 8]


# -- AXI master: burst splitting ------------------------------------------------------------------


def _expected_bursts(addr, beats, bb, max_burst):
    """The bursts a request splits into: as long as allowed (max_burst, the 4 KiB boundary)."""
    out = []
    a = addr & ~(bb - 1)
    while beats:
        n = min(beats, max_burst, (4096 - a % 4096) // bb)
        out.append((a, n))
        a, beats = a + n * bb, beats - n
    return out


@pytest.mark.parametrize("config", ["tiny", "small"])
def test_axi_read_bursts_split_at_limits(config):
    """Random read requests (many near a 4 KiB boundary, some empty) under random ARREADY:
    the bursts on AR are exactly the requests split at max_burst and at every 4 KiB boundary,
    in order."""
    from hdl.axi import AxiMaster
    cfg = NpuConfig.load(config)
    bb, mb = cfg.bus_bytes, cfg.max_burst
    rng = np.random.default_rng(7)
    reqs = []
    for _ in range(60):
        page = int(rng.integers(0, 16)) * 4096
        addr = page + (4096 - int(rng.integers(0, 6 * mb * bb)) if rng.random() < 0.6
                       else int(rng.integers(0, 4096)))
        reqs.append((addr, int(rng.choice([0, 1, 2, mb - 1, mb, mb + 1, 3 * mb + 2,
                                            int(rng.integers(1, 8 * mb))]))))
    expect = [b for a, n in reqs for b in _expected_bursts(a, n, bb, mb)]
    dut = AxiMaster(cfg, read_clients=1)
    got = []

    async def tb(ctx):
        bus, req, rdat = dut.bus, dut.rd_req[0], dut.rd_data[0]
        pending, beat, i = [], 0, 0
        ctx.set(rdat.ready, 1)
        for _ in range(20000):
            if i < len(reqs):
                ctx.set(req.valid, 1)
                ctx.set(req.payload.addr, reqs[i][0] % 2**32)
                ctx.set(req.payload.beats, reqs[i][1])
            else:
                ctx.set(req.valid, 0)
            arready = int(rng.random() < 0.7)
            ctx.set(bus.arready, arready)
            ctx.set(bus.rvalid, int(bool(pending)))
            ctx.set(bus.rlast, int(bool(pending) and beat + 1 == pending[0]))
            _, _, rq_ok, arvalid, araddr, arlen, rready = await ctx.tick().sample(
                req.valid & req.ready, bus.arvalid, bus.araddr, bus.arlen, bus.rready)
            if pending and rready:
                beat += 1
                if beat == pending[0]:
                    pending.pop(0)
                    beat = 0
            if rq_ok:
                i += 1
            if arvalid and arready:
                got.append((araddr, arlen + 1))
                pending.append(arlen + 1)
            if i == len(reqs) and len(got) == len(expect) and not pending:
                break

    run_sim(dut, tb)
    assert got == expect
    assert len(expect) > len(reqs)        # the boundaries split many of them
