"""DMA engines: LOAD (strided memory -> buffer rows, with padding) and STORE (post-processed rows
-> strided memory, with the residual read alongside)."""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, Value, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .axi import read_beat_layout, read_request_layout, write_beat_layout, write_request_layout
from .slices import PartedFIFO, kept_copies, skid_slice, stream_slice

__all__ = ["RowReader", "DmaLoad", "DmaStore", "buffer_write_signature", "load_row_bytes",
           "pp_request_layout"]


def load_row_bytes(config):
    """Bytes of the widest buffer row a LOAD writes (INPUT ``rows``, WEIGHT ``cols`` int8,
    ACC/PARAM ``cols`` int32)."""
    return max(config.rows, config.cols, 4 * config.cols)


def buffer_write_signature(config):
    """The LOAD engine's buffer write port, as seen by the DMA: one whole row per cycle.

    ``data`` holds the row in the target's lane format: byte lanes for INPUT/WEIGHT (lane i in
    bits 8i..8i+7), 32-bit lanes for ACC/PARAM. Every lane of the row is written (``mask`` is
    all ones: lanes past ``elems`` carry ``pad_value``). The write happens in a cycle with
    ``en`` high, which the DMA only raises while ``ready`` is high.
    """
    return wiring.Signature({
        "en": Out(1),
        "ready": In(1),
        "target": Out(isa.Buffer),
        "addr": Out(16),
        "data": Out(8 * load_row_bytes(config)),
    })


def pp_request_layout(config):
    """A post-processing request (as :func:`hdl.exec_top.pp_request_layout`)."""
    from .exec_top import pp_request_layout as layout
    return layout(config)


def pp_fifo_depth(config):
    """Entries of STORE's destination FIFO: the rows in flight from a post-processing request to
    its result (buffer reads, the post-processor's ``1 + (LATENCY - 1) * steps`` cycles, a
    row's beats and, for a fast clock, its request, address and input stages and its output
    FIFO) at one row every
    :attr:`~hdl.config.NpuConfig.pp_row_cycles`, plus two, as a power of two of at most 16. A
    shallower FIFO only slows STORE (requests wait for room)."""
    from .postproc import PostProcessor
    beats = config.pp_row_cycles // config.pp_steps
    cycles = (2 + (PostProcessor.latency(config.slices) - 1) * config.pp_steps + beats +
              4 * config.slices)
    rows = -(-cycles // config.pp_row_cycles) + 2
    return min(16, 1 << (rows - 1).bit_length())


def store_reader_depth(config):
    """Residual rows STORE's :class:`RowReader` keeps in flight: as many as the bus returns in
    the time the post-processor takes them (``max_reads`` runs at its rate of a row every
    :attr:`~hdl.config.NpuConfig.pp_row_cycles`), at least two."""
    run = RowReader.run_beats(config, config.cols)
    return max(2, -(-config.max_reads * run // config.pp_row_cycles))


def _abits(depth):
    """Bits of a row address of a ``depth``-row buffer."""
    return max(1, (depth - 1).bit_length())


def _log2(n):
    return n.bit_length() - 1


class RowReader(wiring.Component):
    """Reads rows of ``nbytes`` bytes at arbitrary byte addresses, in order.

    Each descriptor asks for one row: the beats that hold it. Consecutive rows whose beats follow
    each other in memory (row i+1's first beat is the one after row i's last: contiguous rows
    that start on beat boundaries, the common case of whole channel blocks) are *coalesced* into
    one engine request of up to ``run_beats`` beats, so the AXI master issues long bursts and a
    few requests in flight cover the memory's latency. A run is issued as soon as it cannot grow
    in a cycle. The reader collects each row's beats and shifts the row down to byte 0. A
    ``skip`` descriptor reads nothing and comes out in its turn with ``skip`` set (LOAD uses it
    for padding rows, STORE for rows without a residual; its bytes are unspecified).

    Latency: a row comes out in the cycle after its last beat arrives (a skipped row one cycle
    after it reaches the head). With ``slice`` (for fast clocks,
    :attr:`~hdl.config.NpuConfig.slices`), descriptors pass a two-entry register slice first
    (one cycle more), the pending rows' FIFO has a registered head (one cycle more from a
    descriptor to its row's collection), a row is shifted down from its word registers in the
    cycle after its last beat (one cycle more), and rows leave through a register (one cycle
    more) and a FIFO of six, so the consumer's ready reaches neither the beat collection nor
    its word registers' enables, and the shift and the FIFO's write port start from
    flip-flops.

    Members
    -------
    desc : In(stream.Signature({addr, nbytes, skip, user}))
        Row descriptors.
    out : Out(stream.Signature({bytes, skip, user}))
        Rows, ``bytes`` little-endian from the row's first byte.
    rd_req : Out(stream.Signature(read_request_layout()))
        To the AXI master engine.
    rd_data : In(stream.Signature(read_beat_layout(bus_data_width)))
        From the AXI master engine.
    err : Out(1)
        A beat came back with SLVERR/DECERR (pulse); ``err_addr`` is its burst's address.
    err_addr : Out(32)
    stall : Out(1)
        The head row waits for read data.
    """

    def __init__(self, config, max_bytes, user_layout, depth=None, run_beats=None,
                 slice=False):
        self._config = config
        self._slice = slice
        self._bytes = max_bytes
        self._user = user_layout
        self._max_beats = self.max_beats(config, max_bytes)
        #: Beats of one coalesced request, and rows the reader keeps in flight.
        self._run = run_beats or self.run_beats(config, max_bytes)
        self._depth = depth or max(4, config.max_reads * self._run)
        super().__init__({
            "desc": In(stream.Signature(data.StructLayout({
                "addr": 32, "nbytes": range(max_bytes + 1), "skip": 1, "user": user_layout}))),
            "out": Out(stream.Signature(data.StructLayout({
                "bytes": 8 * max_bytes, "skip": 1, "user": user_layout}))),
            "rd_req": Out(stream.Signature(read_request_layout())),
            "rd_data": In(stream.Signature(read_beat_layout(config.bus_data_width))),
            "err": Out(1),
            "err_addr": Out(32),
            "stall": Out(1),
        })

    @staticmethod
    def max_beats(config, max_bytes):
        """Beats that hold a row of ``max_bytes`` bytes at any byte offset."""
        bb = config.bus_data_width // 8
        return (max_bytes + bb - 1 + bb - 1) // bb

    @classmethod
    def run_beats(cls, config, max_bytes):
        """Beats of one coalesced request (the default): a whole row, or up to
        ``min(max_burst, 16)`` beats of consecutive rows."""
        return max(cls.max_beats(config, max_bytes), min(config.max_burst, 16))

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bb = c.bus_data_width // 8
        sh = _log2(bb)
        maxb = self._max_beats
        pend_layout = data.StructLayout({"off": range(bb), "nbeats": range(maxb + 1),
                                         "skip": 1, "user": self._user})
        if self._slice:
            # (fast clock) its room is a register: at most one row less than its depth at the
            # end of the cycle before, so there is room now (one entry more keeps the rows in
            # flight). No compare of its level is on the path to the descriptor's take.
            pend = fifo.SyncFIFOBuffered(width=pend_layout.size, depth=self._depth + 1)
            pend_room = Signal(name="pend_room", init=1)
            m.d.sync += pend_room.eq(pend.level < self._depth)
        else:
            pend = fifo.SyncFIFO(width=pend_layout.size, depth=self._depth)
            pend_room = pend.w_rdy
        m.submodules.pend = pend

        # A descriptor as the coalescer sees it: its beats formed on the way in.
        in_layout = data.StructLayout({"addr": 32, "nbeats": range(maxb + 1), "skip": 1,
                                       "follows": 1, "user": self._user})
        din = Signal(in_layout)
        m.d.comb += [din.addr.eq(self.desc.payload.addr), din.skip.eq(self.desc.payload.skip),
                     din.user.eq(self.desc.payload.user),
                     din.nbeats.eq(((self.desc.payload.addr[:sh] if sh else 0) +
                                    self.desc.payload.nbytes + bb - 1) >> sh)]
        if self._slice:
            # (fast clock) whether a row's first beat follows the last beat of the row before
            # it (the last one not skipped) is found as it enters: the open run, if any, ends
            # with that row, so the coalescing compare is not on the path from the slice's
            # head to the request
            last_next = Signal(32 - sh)
            m.d.comb += din.follows.eq(din.addr[sh:] == last_next)
            with m.If(self.desc.valid & self.desc.ready & ~din.skip):
                m.d.sync += last_next.eq(din.addr[sh:] + din.nbeats)
        d = Signal(in_layout)
        d_valid, d_ready = Signal(), Signal()
        if self._slice:
            # a skid slice: neither the walker's step nor the coalescing compares below wait
            # on the other's logic, and the compares start from its head's flip-flops
            room, q_valid, q_head, take = skid_slice(m, "desc_slice", self.desc.valid, din,
                                                     in_layout)
            m.d.comb += [self.desc.ready.eq(room), d_valid.eq(q_valid), d.eq(q_head),
                         take.eq(d_ready)]
        else:
            m.d.comb += [d_valid.eq(self.desc.valid), d.eq(din),
                         self.desc.ready.eq(d_ready)]
        off = Signal(range(bb))
        nbeats = Signal(range(maxb + 1))
        m.d.comb += [off.eq(d.addr[:sh] if sh else 0), nbeats.eq(d.nbeats)]
        entry = Signal(pend_layout)
        m.d.comb += [entry.off.eq(off), entry.nbeats.eq(nbeats), entry.skip.eq(d.skip),
                     entry.user.eq(d.user)]

        # The open run: a request being grown, [run_addr, next beat), run_beats beats.
        run_open = Signal()
        run_addr = Signal(32)
        run_beats = Signal(range(self._run + 1))
        run_room = Signal(range(self._run + 1))     # run - run_beats, kept beside it
        if self._slice:
            follows = d.follows
        else:
            first_beat = d.addr[sh:]
            run_next = Signal(32 - sh)     # the beat after the run's last one
            follows = first_beat == run_next
        grow = Signal()                    # the descriptor joins the open run
        m.d.comb += grow.eq(run_open & ~d.skip & follows & (nbeats <= run_room))
        take = Signal()
        if self._slice:
            # (fast clock) requests leave through a skid slice of the reader's own: whether a
            # run can be issued is its room, a flip-flop beside the reader, not the bus
            # master's request slice across the die
            rd_req = stream.Signature(read_request_layout()).create(path=("run_req",))
            wiring.connect(m, stream_slice(m, "req_slice", rd_req, skid=True),
                           wiring.flipped(self.rd_req))
        else:
            rd_req = self.rd_req
        if self._slice:
            # (fast clock) a descriptor is taken only while the request slice has room, even
            # one that would grow the open run (when it is full, the descriptor waits a cycle
            # or more): the take, which enables the descriptor slice's head and the pending
            # FIFO, is a LUT of flip-flops, and the coalescing compare reaches only the run's
            # registers and the request's valid flag
            taken_if = d.skip | ~run_open | rd_req.ready
        else:
            taken_if = d.skip | grow | ~run_open | rd_req.ready
        m.d.comb += [
            # Issue the run whenever it cannot grow this cycle.
            rd_req.valid.eq(run_open & ~(d_valid & pend_room & (d.skip | grow))),
            rd_req.payload.addr.eq(run_addr),
            rd_req.payload.beats.eq(run_beats),
            take.eq(d_valid & pend_room & taken_if),
            d_ready.eq(take),
            pend.w_en.eq(take),
            pend.w_data.eq(entry),
        ]
        with m.If(rd_req.valid & rd_req.ready):
            m.d.sync += run_open.eq(0)
        with m.If(take & ~d.skip):
            if not self._slice:
                m.d.sync += run_next.eq(first_beat + nbeats)
            with m.If(grow):
                m.d.sync += [run_beats.eq(run_beats + nbeats), run_room.eq(run_room - nbeats)]
            with m.Else():
                m.d.sync += [run_open.eq(1), run_addr.eq(d.addr), run_beats.eq(nbeats),
                             run_room.eq(self._run - nbeats)]

        head = Signal(pend_layout)
        m.d.comb += head.eq(pend.r_data)
        # (for a fast clock the beats come through a skid slice of the reader's own: the bus
        # master's beat registers are enabled by its room, a flip-flop, not by this reader's
        # bookkeeping across the die)
        rd_data = (stream_slice(m, "beats", self.rd_data, skid=True) if self._slice
                   else self.rd_data)
        k = Signal(range(maxb + 1))
        words = [Signal(8 * bb, name=f"buf{j}", reset_less=True) for j in range(maxb)]
        beat = rd_data.payload
        nxt = [Mux(k == j, beat.data, words[j]) for j in range(maxb)]
        # the row with this beat, shifted down to byte 0 (emitted on its last beat)
        row = Signal(8 * self._bytes, name="row")
        if self._slice:
            # A row's last beat goes into the word registers like the others, and the row is
            # shifted down from them in the next cycle, with its head's offset, skip and user
            # fields registered (without an enable) as it is emitted: the shift starts from
            # flip-flops, not from the beat's arrival. The row is registered (without an
            # enable: no control fans out to its bits) and written into the output FIFO a
            # cycle later, from that register: the FIFO's write port sees flip-flops only.
            # The FIFO keeps room for the rows in both registers.
            e_valid = Signal(name="emit_d")
            e_head = Signal(pend_layout, name="emit_head", reset_less=True)
            m.d.sync += e_head.eq(head)
            # (the shift in 32-bit parts, each with a copy of the offset of its own: no one
            # register steers the multiplexers of the whole row)
            nbits = 8 * self._bytes
            flat = Cat(*words)
            offs = kept_copies(m, head.off, -(-nbits // 32), "emit_off")
            for g, off in enumerate(offs):
                lo, hi = 32 * g, min(32 * g + 32, nbits)
                window = flat[lo:min(len(flat), hi + 8 * (bb - 1))]
                m.d.comb += row[lo:hi].eq((window >> Cat(Const(0, 3), off))[:hi - lo])
            out_layout = self.out.payload.shape()
            # (the output FIFO in parts of 32 bits, each with its pointers and a copy of the
            # write enable of its own: no one pointer reaches all of the row's LUT RAM)
            ofifo = PartedFIFO(PartedFIFO.split(Shape.cast(out_layout).width, 32), depth=6)
            m.submodules.out_fifo = ofifo
            row_out = Signal(out_layout)
            row_r = Signal(out_layout, name="row_r", reset_less=True)
            emitted = Signal()
            w_ens = kept_copies(m, e_valid, len(ofifo.w_en), "row_r_valid")
            row_r_valid = w_ens[0]
            m.d.sync += [e_valid.eq(emitted), row_r.eq(row_out)]
            m.d.comb += [ofifo.w_en.eq(Cat(*w_ens)), ofifo.w_data.eq(row_r),
                         self.out.valid.eq(ofifo.r_rdy), self.out.payload.eq(ofifo.r_data),
                         ofifo.r_en.eq(self.out.ready)]
            # room for one more row, registered, counted without this cycle's read (the
            # consumer's ready does not reach it; one more entry makes up for it) and as if a
            # row were emitted this cycle (whether one is does not reach it either: one more
            # entry again)
            out_free = Signal(init=1)
            m.d.sync += out_free.eq(ofifo.level + row_r_valid + e_valid + 1 < ofifo.depth)

            # (the register's inputs do not depend on whether a row is emitted: a skipped
            # row's bytes are whatever the beat words hold, which every consumer ignores)
            m.d.comb += [row_out.skip.eq(e_head.skip), row_out.user.eq(e_head.user),
                         row_out.bytes.eq(row)]

            def emit(skip):
                m.d.comb += emitted.eq(1)
        else:
            m.d.comb += row.eq((Cat(*nxt) >> Cat(Const(0, 3), head.off))[:8 * self._bytes])
            out_free = ~self.out.valid | self.out.ready
            with m.If(self.out.valid & self.out.ready):
                m.d.sync += self.out.valid.eq(0)

            def emit(skip):
                m.d.sync += [self.out.valid.eq(1), self.out.payload.skip.eq(skip),
                             self.out.payload.user.eq(head.user),
                             self.out.payload.bytes.eq(0 if skip else row)]
        last_beat = Signal()
        m.d.comb += last_beat.eq(k + 1 == head.nbeats)
        with m.If(pend.r_rdy):
            with m.If(head.skip), m.If(out_free):
                m.d.comb += pend.r_en.eq(1)
                emit(1)
            with m.Else():
                # (a fast clock takes every beat only while the output FIFO has room for a
                # row, not just the last: the beat's READY does not wait for the compare
                # that finds the row's last beat)
                m.d.comb += [rd_data.ready.eq(out_free if self._slice else
                                                   ~last_beat | out_free),
                             self.stall.eq(~rd_data.valid)]
                with m.If(rd_data.valid & rd_data.ready):
                    with m.If(beat.err):
                        m.d.comb += [self.err.eq(1), self.err_addr.eq(beat.addr)]
                    with m.If(last_beat):
                        m.d.comb += pend.r_en.eq(1)
                        m.d.sync += k.eq(0)
                        emit(0)
                    with m.Else():
                        m.d.sync += k.eq(k + 1)
                    if not self._slice:
                        with m.If(~last_beat):
                            for j in range(maxb):
                                m.d.sync += words[j].eq(nxt[j])
        if self._slice:
            # (fast clock) a word register takes the beat on offer for its place whether or
            # not the beat is taken this cycle: a beat not taken is offered again, and taken
            # into the same place, so the words are those of the beats taken, and their
            # enables come from flip-flops (the beat's valid and `k`), not from the row's
            # bookkeeping and the readiness of the output FIFO
            for j in range(maxb):
                with m.If(rd_data.valid & (k == j)):
                    m.d.sync += words[j].eq(beat.data)
        return m


def _held_command(m, port, busy, gen, fast):
    """The command a DMA engine works on (from the stream ``port``), and the statements that
    start its row generator ``gen`` for a command transferred this cycle.

    Without ``fast`` the command is the payload itself (held by the command processor until
    done) and the generator starts in the cycle after the transfer. For a fast clock it is a
    copy, taken in two steps: every cycle into a register (which the placer can put between
    the command queue and the engine), and from there into the engine's copy while the
    engine was idle the cycle before (so the transferred command, its enable a registered
    busy flag); the walk's strides and sizes come from registers beside the engine, not from
    the command queue's memory across the die, and the generator starts a cycle later, when
    the copy holds the command.

    Returns ``(cmd, start, begin, first)``: the row walk starts in the cycle ``begin``, from
    the command's view ``first`` (without ``fast`` the transfer's cycle and the payload; for a
    fast clock the cycle after, from the first register, so the walk's registers are loaded
    from flip-flops, with a registered enable)."""
    if not fast:
        return port.payload, [gen.eq(1)], port.valid & port.ready, port.payload
    staged = Signal(port.payload.shape(), name="cmd_staged", reset_less=True)
    held = Signal(port.payload.shape(), name="cmd_held", reset_less=True)
    busy_d, go = Signal(name="cmd_busy_d"), Signal(name="cmd_go")
    m.d.sync += [staged.eq(port.payload), busy_d.eq(busy), go.eq(0)]
    with m.If(~busy_d):
        m.d.sync += held.eq(staged)
    with m.If(go):
        m.d.sync += gen.eq(1)
    return held, [go.eq(1)], go, staged


class _Walker:
    """Counters that walk a z x y x x block in order (x innermost) and keep running addresses:
    ``walk.add(name, base, (z_stride, y_stride, x_stride), gates)`` keeps ``base + z*zs + y*ys
    + x*xs`` where each step only counts while its gate (a function of the position) is true."""

    def __init__(self, m, name, one_adder, sizes):
        self.m = m
        self.name = name
        self.one_adder = one_adder
        self.sizes = sizes          # (z, y, x): held still from start() to the last step
        self.z = Signal(12, name=f"{name}_z")
        self.y = Signal(12, name=f"{name}_y")
        self.x = Signal(12, name=f"{name}_x")
        self.addrs = []
        if one_adder:
            zs, ys, xs = sizes
            self.z_end, self.y_end, self.x_end = (self.z + 1 == zs, self.y + 1 == ys,
                                                  self.x + 1 == xs)
        else:
            # (a fast clock: whether each level is at its last position is a register, set
            # as the walk steps, so a step's choice of level and adder starts from flip-flops)
            self.z_end, self.y_end, self.x_end = (Signal(name=f"{name}_{lvl}_end")
                                                  for lvl in "zyx")

    def _ends(self, z, y, x):
        """Statements setting the end flags for the position (z, y, x) the walk moves to."""
        return [e.eq(v + 1 == n) for e, v, n in zip((self.z_end, self.y_end, self.x_end),
                                                   (z, y, x), self.sizes)]

    def add(self, name, width):
        sig = [Signal(width, name=f"{self.name}_{name}_{lvl}") for lvl in "zyx"]
        self.addrs.append(sig)
        return sig

    def last(self):
        """The walk is at its last row."""
        return self.x_end & self.y_end & self.z_end

    def step(self, strides, gates=None):
        """Statements advancing to the next row. ``strides[i]`` is (zs, ys, xs) of address i;
        ``gates[i]`` is (ygate, xgate): increments along y/x only count where the gate holds.
        With ``one_adder``, each address has one adder: a step moves along one level only, so
        the level's register and stride are chosen first and added once (fewer LUTs; for a
        fast clock the three levels' sums are formed beside the compares that choose one)."""
        m = self.m
        last = Signal(name=f"{self.name}_last")
        m.d.comb += last.eq(self.last())
        x_step, y_step = Signal(name=f"{self.name}_xstep"), Signal(name=f"{self.name}_ystep")
        m.d.comb += [x_step.eq(~self.x_end), y_step.eq(~self.y_end)]
        sums = []   # per address: the new x, y and z level values
        for i, (a, (zs, ys, xs)) in enumerate(zip(self.addrs, strides)):
            yg, xg = gates[i] if gates else (1, 1)
            if self.one_adder:
                s = Signal(len(a[0]), name=f"{a[0].name}_sum")
                m.d.comb += s.eq(Mux(x_step, a[2], Mux(y_step, a[1], a[0])) +
                                 Mux(x_step, Mux(xg, xs, 0), Mux(y_step, Mux(yg, ys, 0), zs)))
                sums.append((s, s, s))
            else:
                sums.append((a[2] + Mux(xg, xs, 0), a[1] + Mux(yg, ys, 0), a[0] + zs))
        ends = not self.one_adder
        with m.If(x_step):
            m.d.sync += self.x.eq(self.x + 1)
            m.d.sync += [a[2].eq(sx) for a, (sx, _, _) in zip(self.addrs, sums)]
            if ends:
                m.d.sync += self.x_end.eq(self.x + 2 == self.sizes[2])
        with m.Elif(y_step):
            m.d.sync += [self.x.eq(0), self.y.eq(self.y + 1)]
            m.d.sync += [a[k].eq(sy) for a, (_, sy, _) in zip(self.addrs, sums) for k in (1, 2)]
            if ends:
                m.d.sync += [self.x_end.eq(self.sizes[2] == 1),
                             self.y_end.eq(self.y + 2 == self.sizes[1])]
        with m.Else():
            m.d.sync += [self.x.eq(0), self.y.eq(0), self.z.eq(self.z + 1)]
            m.d.sync += [a[k].eq(sz) for a, (_, _, sz) in zip(self.addrs, sums)
                         for k in (0, 1, 2)]
            if ends:
                m.d.sync += self._ends(self.z + 1, 0, 0)
        return last

    def start(self, bases, sizes):
        """Statements starting the walk at ``bases``, of ``sizes`` (z, y, x): the sizes as
        they are in this cycle (``self.sizes`` holds them from the next)."""
        m = self.m
        m.d.sync += [self.z.eq(0), self.y.eq(0), self.x.eq(0)]
        if not self.one_adder:
            m.d.sync += [e.eq(n == 1) for e, n in zip((self.z_end, self.y_end, self.x_end),
                                                      sizes)]
        for a, base in zip(self.addrs, bases):
            m.d.sync += [a[0].eq(base), a[1].eq(base), a[2].eq(base)]


class DmaLoad(wiring.Component):
    """The LOAD engine: one LOAD command (docs/isa.md) at a time.

    A row generator walks the z x y x x block (x innermost), classifies each row as padding or
    interior and hands interior rows' byte ranges to a :class:`RowReader`, which keeps several
    reads in flight; rows come back in order and are written to the target buffer, one per
    cycle, with lanes past ``elems`` (and every lane of a padding row) set to ``pad_value``
    (sign-extended to 32 bits for ACC/PARAM). Bytes are exact at both edges of every row.

    Throughput: one row per cycle for padding rows; an interior row costs its beats on the bus
    (one beat per cycle, several requests in flight).

    Members
    -------
    cmd : In(stream.Signature(hdl.isa.LOAD))
        Accepted when the engine is idle. The payload must hold still from the transfer until
        :attr:`done` (the command processor holds a command until its unit completes it): the
        engine reads its fields there instead of keeping a copy (about 250 flip-flops).
    done : Out(1)
        Pulse: the command's last row has been written.
    busy : Out(1)
        A command is in progress.
    err, err_addr : Out(1), Out(32)
        A read answered SLVERR/DECERR.
    stall : Out(1)
        Waiting for read data.
    wr : Out(buffer_write_signature(config))
        Buffer row writes.
    rd_req, rd_data :
        To the AXI master engine.
    """

    def __init__(self, config):
        self._config = config
        self._row_bytes = load_row_bytes(config)
        super().__init__({
            "cmd": In(stream.Signature(isa.LOAD)),
            "done": Out(1),
            "busy": Out(1),
            "err": Out(1),
            "err_addr": Out(32),
            "stall": Out(1),
            "wr": Out(buffer_write_signature(config)),
            "rd_req": Out(stream.Signature(read_request_layout())),
            "rd_data": In(stream.Signature(read_beat_layout(config.bus_data_width))),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        nb = self._row_bytes
        # (row numbers as wide as the deepest buffer: the static checks keep them in range)
        deepest = max(c.input_depth, c.weight_depth, c.acc_depth, c.param_depth)
        user = data.StructLayout({"row": range(deepest), "last": 1})
        m.submodules.reader = rd = RowReader(c, nb, user, slice=c.slices)
        wiring.connect(m, rd.rd_req, wiring.flipped(self.rd_req))
        wiring.connect(m, wiring.flipped(self.rd_data), rd.rd_data)
        m.d.comb += [self.err.eq(rd.err), self.err_addr.eq(rd.err_addr),
                     self.stall.eq(rd.stall)]

        gen = Signal()      # the generator has rows left
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]
        cmd, start, begin, first = _held_command(m, self.cmd, busy, gen, c.slices)
        w = _Walker(m, "ld", one_adder=not c.slices,
                    sizes=(cmd.z_size, cmd.y_size, cmd.x_size))
        s = w.add("sram", _abits(deepest))     # (exact: the static checks keep rows in range)
        d = w.add("dram", 32)
        wide = Value.cast(cmd.target).matches(isa.Buffer.ACC, isa.Buffer.PARAM)
        # (for a fast clock the rows are written two cycles late, from registers: so is
        # `done`)
        done = Signal(name="load_done_i") if c.slices else self.done
        if c.slices:
            done_d = Signal(name="load_done_d")
            m.d.sync += [done_d.eq(done), self.done.eq(done_d)]
        m.d.sync += done.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += busy.eq(1)
            with m.If((p.x_size == 0) | (p.y_size == 0) | (p.z_size == 0)):
                m.d.sync += [busy.eq(0), done.eq(1)]
            with m.Else():
                m.d.sync += start
        with m.If(begin):
            w.start([first.sram_addr, first.dram_addr],
                    (first.z_size, first.y_size, first.x_size))

        y_hi = Signal(13)
        x_hi = Signal(13)
        if c.slices:
            # (fast clock) the padding's far bounds are registered as the walk starts: the
            # padding compares and the DRAM walk's gates start from flip-flops (the near
            # bounds are the command copy's own)
            with m.If(begin):
                m.d.sync += [y_hi.eq(first.y_size - first.pad_bottom),
                             x_hi.eq(first.x_size - first.pad_right)]
        else:
            m.d.comb += [y_hi.eq(cmd.y_size - cmd.pad_bottom),
                         x_hi.eq(cmd.x_size - cmd.pad_right)]
        # whether the walk is past the near padding along y and x (the DRAM walk's gates)
        if c.slices:
            # (fast clock) registers, set as the walk steps: the gates' compares are formed
            # beside the adders they gate, not in front of them
            y_in, x_in = Signal(name="ld_y_in"), Signal(name="ld_x_in")
            with m.If(begin):
                m.d.sync += [y_in.eq(first.pad_top == 0), x_in.eq(first.pad_left == 0)]
        else:
            y_in, x_in = w.y >= cmd.pad_top, w.x >= cmd.pad_left
        pad = Signal()
        m.d.comb += pad.eq(~y_in | (w.y >= y_hi) | ~x_in | (w.x >= x_hi))
        nbytes = Signal(range(nb + 1))
        m.d.comb += nbytes.eq(Mux(wide, cmd.elems << 2, cmd.elems))
        last = Signal()
        m.d.comb += [
            rd.desc.valid.eq(gen),
            rd.desc.payload.addr.eq(d[2]),
            rd.desc.payload.nbytes.eq(nbytes),
            rd.desc.payload.skip.eq(pad),
            rd.desc.payload.user.row.eq(s[2]),
            rd.desc.payload.user.last.eq(last),
        ]
        with m.If(rd.desc.valid & rd.desc.ready):
            last_ = w.step([(cmd.sram_z_stride, cmd.sram_y_stride, cmd.sram_x_stride),
                            (cmd.dram_z_stride, cmd.dram_y_stride, cmd.dram_x_stride)],
                           gates=[(1, 1), (y_in, x_in)])
            m.d.comb += last.eq(last_)
            if c.slices:
                with m.If(~w.x_end):
                    m.d.sync += x_in.eq(w.x + 1 >= cmd.pad_left)
                with m.Elif(~w.y_end):
                    m.d.sync += [x_in.eq(cmd.pad_left == 0), y_in.eq(w.y + 1 >= cmd.pad_top)]
                with m.Else():
                    m.d.sync += [x_in.eq(cmd.pad_left == 0), y_in.eq(cmd.pad_top == 0)]
            with m.If(last_):
                m.d.sync += gen.eq(0)
        with m.Else():
            m.d.comb += last.eq(w.last())

        # Row formatting: lanes past `elems` and padding rows carry pad_value.
        o, o_valid = rd.out.payload, rd.out.valid & self.wr.ready
        if c.slices:
            # (fast clock) the row taken from the reader's output FIFO is registered before
            # it is formatted: the FIFO's LUT RAM reaches flip-flops beside it
            o_r = Signal.like(o, name="load_row_in", reset_less=True)
            o_valid_r = Signal(name="load_row_in_valid")
            m.d.sync += [o_r.eq(o), o_valid_r.eq(o_valid)]
            o, o_valid = o_r, o_valid_r
        row = Signal(8 * nb)
        n8 = max(c.rows, c.cols)
        # (for a fast clock each lane's "within elems" flag and the element width are
        # registers of their own, formed from the command's copy: it holds for the whole
        # command, and its first row comes from the bus many cycles after it starts)
        within = [i < cmd.elems for i in range(n8)]
        byte_wide = [wide] * nb
        if c.slices:
            within = kept_copies(m, Cat(*within), 1, "load_within")[0]
            byte_wide = kept_copies(m, wide, nb, "load_wide")
            # (whether a lane keeps its bytes, not a skipped row's and within `elems`, is
            # registered with the row, a copy for each lane of each width: no one flag of
            # the row steers all of its multiplexers)
            keep8 = [kept_copies(m, ~rd.out.payload.skip & within[i], 1, f"load_keep8_{i}")[0]
                     for i in range(n8)]
            keep32 = [kept_copies(m, ~rd.out.payload.skip & within[i], 1,
                                  f"load_keep32_{i}")[0] for i in range(c.cols)]
        else:
            keep8 = keep32 = [~o.skip & within[i] for i in range(n8)]
        lanes8, lanes32 = [], []
        for i in range(n8):
            lane = Signal(8, name=f"lane8_{i}")
            m.d.comb += lane.eq(Mux(keep8[i], o.bytes[8 * i:8 * i + 8], cmd.pad_value))
            lanes8.append(lane)
        for i in range(c.cols):
            lane = Signal(32, name=f"lane32_{i}")
            m.d.comb += lane.eq(Mux(keep32[i], o.bytes[32 * i:32 * i + 32],
                                    cmd.pad_value))   # pad_value is signed: sign-extended
            lanes32.append(lane)
        # (each byte of the row chooses between the two widths with its own copy of the flag)
        for q in range(nb):
            b8 = lanes8[q] if q < n8 else 0
            b32 = lanes32[q // 4][8 * (q % 4):8 * (q % 4) + 8] if q < 4 * c.cols else 0
            m.d.comb += row[8 * q:8 * q + 8].eq(Mux(byte_wide[q], b32, b8))
        wr = [self.wr.target, self.wr.addr, self.wr.data, self.wr.en]
        if c.slices:
            # (fast clock) the row is written from registers beside the reader: the output
            # FIFO's memory and the formatting reach flip-flops here, and only those reach
            # the four buffers' write registers across the die
            wr = [Signal.like(v, name=f"load_{n}_r", reset_less=n != "en")
                  for v, n in zip(wr, ("target", "addr", "data", "en"))]
            m.d.comb += [self.wr.target.eq(wr[0]), self.wr.addr.eq(wr[1]),
                         self.wr.data.eq(wr[2]), self.wr.en.eq(wr[3])]
        dom = m.d.sync if c.slices else m.d.comb
        dom += [
            wr[0].eq(cmd.target),
            wr[1].eq(o.user.row),
            wr[2].eq(row),
            wr[3].eq(o_valid),
        ]
        m.d.comb += rd.out.ready.eq(self.wr.ready)
        with m.If(rd.out.valid & self.wr.ready & rd.out.payload.user.last):
            m.d.sync += [busy.eq(0), done.eq(1)]
        return m


class DmaStore(wiring.Component):
    """The STORE engine: one STORE command (docs/isa.md) at a time.

    A row generator walks the z x y x x block and, for each row, asks a :class:`RowReader` for
    the residual row (``elems`` bytes at the residual address; skipped without ``residual``).
    Rows then go to the post-processor (:attr:`pp_req`: ACC row, PARAM rows
    ``param_addr + 3*z``, residual) while their memory address waits in a FIFO; each
    post-processed row (:attr:`pp_out`) is written as ``elems`` bytes at its byte address: one
    engine request covering the beats that hold it, with byte strobes on exactly those bytes.
    The command completes when every write response has come back.

    Members
    -------
    cmd : In(stream.Signature(hdl.isa.STORE))
        Accepted when idle; the payload holds still until :attr:`done`, as :class:`DmaLoad`'s.
    param_addr : In(16)
        PARAM row of the last SETPP.
    done, busy, err, err_addr, stall :
        As :class:`DmaLoad` (``stall``: waiting for the write channel, responses or read data).
    pp_req : Out(stream.Signature(pp_request_layout(config)))
        To the post-processor.
    pp_out : In(stream.Signature(ArrayLayout(signed(8), cols)))
        From the post-processor.
    rd_req, rd_data, wr_req, wr_data, wr_err, wr_err_addr, wr_idle :
        To and from the AXI master engine.
    """

    def __init__(self, config):
        self._config = c = config
        super().__init__({
            "cmd": In(stream.Signature(isa.STORE)),
            "param_addr": In(16),
            "done": Out(1),
            "busy": Out(1),
            "err": Out(1),
            "err_addr": Out(32),
            "stall": Out(1),
            "pp_req": Out(stream.Signature(pp_request_layout(c))),
            "pp_out": In(stream.Signature(data.ArrayLayout(signed(8), c.cols))),
            "rd_req": Out(stream.Signature(read_request_layout())),
            "rd_data": In(stream.Signature(read_beat_layout(c.bus_data_width))),
            "wr_req": Out(stream.Signature(write_request_layout())),
            "wr_data": Out(stream.Signature(write_beat_layout(c.bus_data_width))),
            "wr_err": In(1),
            "wr_err_addr": In(32),
            "wr_idle": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bb = c.bus_data_width // 8
        sh = _log2(bb)
        cols = c.cols
        user = data.StructLayout({"acc": range(c.acc_depth), "param": range(c.param_depth),
                                  "dram": 32, "last": 1})
        m.submodules.reader = rd = RowReader(c, cols, user, depth=store_reader_depth(c),
                                             slice=c.slices)
        wiring.connect(m, rd.rd_req, wiring.flipped(self.rd_req))
        wiring.connect(m, wiring.flipped(self.rd_data), rd.rd_data)

        gen = Signal()
        busy = Signal()
        m.d.comb += [self.busy.eq(busy), self.cmd.ready.eq(~busy)]
        cmd, start, begin, first = _held_command(m, self.cmd, busy, gen, c.slices)
        w = _Walker(m, "st", one_adder=not c.slices,
                    sizes=(cmd.z_size, cmd.y_size, cmd.x_size))
        a = w.add("acc", _abits(c.acc_depth))  # (exact: the static checks keep rows in range)
        off = w.add("off", 32)     # the dram and residual addresses less their bases
        par = Signal(16)
        m.d.sync += self.done.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [busy.eq(1), par.eq(self.param_addr)]
            with m.If((p.x_size == 0) | (p.y_size == 0) | (p.z_size == 0)):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
            with m.Else():
                m.d.sync += start
        with m.If(begin):
            w.start([first.acc_addr, 0], (first.z_size, first.y_size, first.x_size))

        last = Signal()
        m.d.comb += [
            rd.desc.valid.eq(gen),
            rd.desc.payload.addr.eq(cmd.res_addr + off[2]),
            rd.desc.payload.nbytes.eq(cmd.elems),
            rd.desc.payload.skip.eq(~cmd.residual),
            rd.desc.payload.user.acc.eq(a[2]),
            rd.desc.payload.user.param.eq(par),
            rd.desc.payload.user.dram.eq(cmd.dram_addr + off[2]),
            rd.desc.payload.user.last.eq(last),
        ]
        dstr = (cmd.dram_z_stride, cmd.dram_y_stride, cmd.dram_x_stride)
        with m.If(rd.desc.valid & rd.desc.ready):
            last_ = w.step([(cmd.acc_z_stride, cmd.acc_y_stride, cmd.acc_x_stride), dstr])
            m.d.comb += last.eq(last_)
            with m.If(last_):
                m.d.sync += gen.eq(0)
            with m.If(w.x_end & w.y_end):
                m.d.sync += par.eq(par + 3)
        with m.Else():
            m.d.comb += last.eq(w.last())

        # Residual rows -> post-processor; the destination waits in a FIFO as deep as the rows
        # the post-processing path holds at its rate (pp_fifo_depth).
        afifo = fifo.SyncFIFO(width=33, depth=pp_fifo_depth(c))
        m.submodules.afifo = afifo
        o = rd.out.payload
        m.d.comb += [
            self.pp_req.valid.eq(rd.out.valid & afifo.w_rdy),
            self.pp_req.payload.acc_addr.eq(o.user.acc),
            self.pp_req.payload.param_addr.eq(o.user.param),
            self.pp_req.payload.residual.eq(o.bytes),
            self.pp_req.payload.use_residual.eq(~o.skip),
            rd.out.ready.eq(self.pp_req.ready & afifo.w_rdy),
            afifo.w_en.eq(rd.out.valid & rd.out.ready),
            afifo.w_data.eq(Cat(o.user.dram, o.user.last)),
        ]

        # Writer: one engine request per row; the row (as it came, with its byte offset and
        # beats) waits in a row FIFO until the engine has announced its burst, so requests
        # run ahead of the data and a one-beat row takes one cycle. Its beats are formed at
        # the FIFO's output: the row shifted to its byte offset, strobes on exactly its bytes.
        maxb = RowReader.max_beats(c, cols)
        beat_row = data.StructLayout({"row": 8 * cols, "off": range(bb),
                                      "nbeats": range(maxb + 1)})
        # (four rows when a row comes every cycle or two; two when rows are slower than the
        # engine's burst announcements)
        wq = fifo.SyncFIFOBuffered(width=beat_row.size, depth=4 if c.pp_row_cycles <= 2 else 2)
        m.submodules.wrows = wq
        waitb = Signal()
        h_addr = afifo.r_data[:32]
        h_last = afifo.r_data[32]
        off = Signal(range(bb))
        m.d.comb += off.eq(h_addr[:sh] if sh else 0)
        h_beats = Signal(range(maxb + 1))
        m.d.comb += h_beats.eq((off + cmd.elems + bb - 1) >> sh)
        entry = Signal(beat_row)
        m.d.comb += [entry.row.eq(self.pp_out.payload), entry.off.eq(off),
                     entry.nbeats.eq(h_beats), wq.w_data.eq(entry)]
        m.d.comb += [
            self.wr_req.valid.eq(self.pp_out.valid & afifo.r_rdy & wq.w_rdy & ~waitb),
            self.wr_req.payload.addr.eq(h_addr),
            self.wr_req.payload.beats.eq(h_beats),
        ]
        with m.If(self.wr_req.valid & self.wr_req.ready):
            m.d.comb += [self.pp_out.ready.eq(1), afifo.r_en.eq(1), wq.w_en.eq(1)]
            with m.If(h_last):
                m.d.sync += waitb.eq(1)
        head = Signal(beat_row)
        m.d.comb += head.eq(wq.r_data)
        strb = Signal(cols)
        for i in range(cols):
            m.d.comb += strb[i].eq(i < cmd.elems)
        beats_data = Signal(8 * bb * maxb)
        beats_strb = Signal(bb * maxb)
        m.d.comb += [beats_data.eq(head.row << Cat(Const(0, 3), head.off)),
                     beats_strb.eq(strb << head.off)]
        k = Signal(range(maxb + 1))
        m.d.comb += [
            self.wr_data.valid.eq(wq.r_rdy),
            self.wr_data.payload.data.eq(beats_data.word_select(k, 8 * bb)),
            self.wr_data.payload.strb.eq(beats_strb.word_select(k, bb)),
        ]
        with m.If(self.wr_data.valid & self.wr_data.ready):
            with m.If(k + 1 == head.nbeats):
                m.d.sync += k.eq(0)
                m.d.comb += wq.r_en.eq(1)
            with m.Else():
                m.d.sync += k.eq(k + 1)
        with m.If(waitb & self.wr_idle & ~wq.r_rdy):
            m.d.sync += [waitb.eq(0), busy.eq(0), self.done.eq(1)]
        m.d.comb += self.stall.eq((self.wr_data.valid & ~self.wr_data.ready) | waitb |
                                  (self.wr_req.valid & ~self.wr_req.ready))
        with m.If(rd.stall):
            m.d.comb += self.stall.eq(1)
        with m.If(rd.err):
            m.d.comb += [self.err.eq(1), self.err_addr.eq(rd.err_addr)]
        with m.Elif(self.wr_err):
            m.d.comb += [self.err.eq(1), self.err_addr.eq(self.wr_err_addr)]
        return m
