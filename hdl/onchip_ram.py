"""On-chip RAM as the NPU's memory: an AXI4 slave and a byte port for the host bridge, over
block RAM (``amaranth.lib.memory``) or the iCE40 UP5K's SPRAM (``SB_SPRAM256KA``)."""

from amaranth.hdl import ClockSignal, Instance, Module, Signal
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from .axi import Resp, axi4_signature
from .slices import kept_copies

__all__ = ["OnChipRam", "host_signature", "RAM_KINDS", "SPRAM_WORDS"]

#: What the memory is built from: ``"bram"`` (inferred block RAM) or ``"spram"`` (UP5K SPRAM).
RAM_KINDS = ("bram", "spram")
#: 16-bit words in one ``SB_SPRAM256KA`` (32 KiB).
SPRAM_WORDS = 16384


def host_signature(size):
    """A byte-wide memory port, as seen by its initiator (the bridge).

    ``valid``/``addr``/``we``/``wdata`` request one byte access; it is taken in a cycle with
    ``ready``. A read's byte is on ``rdata`` with ``rvalid`` (for that one cycle), one or more
    cycles after it was taken; the initiator waits for it. ``addr`` is relative to the
    memory's base.
    """
    return wiring.Signature({
        "valid": Out(1), "addr": Out(range(size)), "we": Out(1), "wdata": Out(8),
        "ready": In(1), "rvalid": In(1), "rdata": In(8),
    })


class _Port(wiring.Component):
    """One access per cycle to a word memory: read data arrives ``latency`` cycles after
    ``re`` (one unless a subclass says otherwise)."""

    latency = 1

    def __init__(self, words, width):
        super().__init__({
            "addr": In(range(words)), "re": In(1), "we": In(1), "wdata": In(width),
            "wmask": In(width // 8), "rdata": Out(width),
        })


class _BlockRam(_Port):
    """Inferred block RAM: one ``lib.memory.Memory``, one write and one read port. With
    ``registered`` the address, enables and write data reach the memories from registers, a
    cycle later, and the word read is registered after the block RAMs' multiplexer (read data
    three cycles after ``re``); the word is then stored as memories of ``PART`` bits side by
    side, each with copies of the address and enables of its own, so no one flip-flop drives
    the address of every block RAM across the die (128 KiB of 64-bit words are 64
    ``DP16KD``: a single address register's nets were routed over 10 ns)."""

    #: Bits of each memory of a registered word (a ``DP16KD`` is at most 36 bits wide).
    PART = 16

    def __init__(self, words, width, registered=False):
        self._words, self._width = words, width
        self.latency = 1 + 2 * registered
        super().__init__(words, width)

    def elaborate(self, platform):
        m = Module()
        registered = self.latency == 3
        part = min(self.PART, self._width) if registered else self._width
        rdata = Signal.like(self.rdata, name="rdata_r" if registered else "rdata",
                            reset_less=True)
        for g, lo in enumerate(range(0, self._width, part)):
            hi = min(self._width, lo + part)
            mem = memory.Memory(shape=hi - lo, depth=self._words, init=[])
            m.submodules[f"mem{g}" if registered else "mem"] = mem
            wp = mem.write_port(granularity=8)
            rp = mem.read_port(domain="sync")
            addr, re, we = self.addr, self.re, self.we
            wdata, wmask = self.wdata[lo:hi], self.wmask[lo // 8:hi // 8]
            if registered:
                # (the address and enables in copies of their own, kept apart)
                addr, = kept_copies(m, addr, 1, f"addr_r{g}", reset_less=True)
                re, = kept_copies(m, re, 1, f"re_r{g}")
                we, = kept_copies(m, we, 1, f"we_r{g}")
                wdata_r = Signal(hi - lo, name=f"wdata_r{g}", reset_less=True)
                wmask_r = Signal(len(wmask), name=f"wmask_r{g}", reset_less=True)
                m.d.sync += [wdata_r.eq(wdata), wmask_r.eq(wmask)]
                wdata, wmask = wdata_r, wmask_r
                m.d.sync += rdata[lo:hi].eq(rp.data)
            else:
                m.d.comb += rdata[lo:hi].eq(rp.data)
            m.d.comb += [wp.addr.eq(addr), wp.data.eq(wdata),
                         wp.en.eq(wmask & we.replicate(len(wmask))),
                         rp.addr.eq(addr), rp.en.eq(re)]
        m.d.comb += self.rdata.eq(rdata)
        return m


class _Spram(_Port):
    """``SB_SPRAM256KA`` macros: ``width / 16`` side by side per bank, the high address bits
    choosing the bank. Nibble write masks come from the byte mask."""

    def __init__(self, words, width):
        if width % 16 or words % SPRAM_WORDS:
            raise ValueError(f"SPRAM needs a width that is a multiple of 16 and a depth that is "
                             f"a multiple of {SPRAM_WORDS} words, not {width} x {words}")
        self._words, self._width = words, width
        super().__init__(words, width)

    def elaborate(self, platform):
        m = Module()
        banks = self._words // SPRAM_WORDS
        lanes = self._width // 16
        bank = Signal(range(banks), name="bank")
        rbank = Signal(range(banks), name="rbank")
        m.d.comb += bank.eq(self.addr[14:] if banks > 1 else 0)
        with m.If(self.re):
            m.d.sync += rbank.eq(bank)
        for b in range(banks):
            for k in range(lanes):
                dout = Signal(16, name=f"spram_{b}_{k}_dout")
                mask = Signal(4, name=f"spram_{b}_{k}_mask")
                m.d.comb += mask.eq(self.wmask[2 * k].replicate(2) |
                                    (self.wmask[2 * k + 1].replicate(2) << 2))
                sel = (bank == b) if banks > 1 else 1
                m.submodules[f"spram_{b}_{k}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=self.addr[:14], i_DATAIN=self.wdata[16 * k:16 * k + 16],
                    i_MASKWREN=mask, i_WREN=self.we, i_CHIPSELECT=(self.re | self.we) & sel,
                    i_CLOCK=ClockSignal("sync"), i_STANDBY=0, i_SLEEP=0,
                    i_POWEROFF=1, o_DATAOUT=dout)
                with m.If((rbank == b) if banks > 1 else 1):
                    m.d.comb += self.rdata[16 * k:16 * k + 16].eq(dout)
        return m


class OnChipRam(wiring.Component):
    """``size`` bytes of on-chip memory at ``base``, as an AXI4 slave with a host byte port.

    The memory is one word (``bus_data_width`` bits) wide and has one access per cycle, shared
    by the AXI4 port and the host port: between bursts the host port goes first, AXI reads and
    writes take turns. A burst is served at one beat per cycle. Only INCR bursts of full-width
    beats are supported (all the NPU issues); FIXED and WRAP are treated as INCR. A beat outside
    ``[base, base + size)`` is not performed: reads return 0 with DECERR, writes are dropped and
    answered DECERR.

    Latency: the first R beat is valid two cycles after AR is accepted; B one cycle after the
    last W beat. A host read's byte comes one cycle after the access is taken (for a fast
    clock four: the request is registered first, and the next is taken after it). For a fast
    clock (:attr:`~hdl.config.NpuConfig.slices`) the port is registered on both sides: R
    beats leave from a six-entry FIFO (RREADY only pops it: five cycles to the first beat)
    and each W beat is written to the memory a cycle after it is taken, so no path runs from
    the NPU's ready and valid logic into the memory's address and enables; a read burst's
    next word and range check are registered as its address steps, and the memories'
    address, enables and write data are registered once more beside them, and the word read
    after their multiplexer (reads take two cycles more).

    Parameters
    ----------
    config : NpuConfig
        Bus data and ID widths.
    base, size : int
        Bus address and bytes; ``size`` a multiple of the beat and ``base`` beat aligned.
    kind : str
        ``"bram"`` or ``"spram"`` (:data:`RAM_KINDS`).

    Members
    -------
    axi : In(axi4_signature(32, bus_data_width, bus_id_width))
        The NPU's memory port.
    host : In(host_signature(size))
        The bridge's byte port.
    """

    def __init__(self, config, base, size, kind="bram"):
        bb = config.bus_data_width // 8
        if kind not in RAM_KINDS:
            raise ValueError(f"kind must be one of {', '.join(RAM_KINDS)}, not {kind!r}")
        if not isinstance(size, int) or size <= 0 or size % bb or size & (size - 1):
            raise ValueError(f"size must be a power of two multiple of {bb} bytes, not {size!r}")
        if not isinstance(base, int) or base % bb or base < 0 or base + size > 1 << 32:
            raise ValueError(f"base must be {bb}-byte aligned and base + size within 32 bits, "
                             f"not {base!r}")
        self._config = config
        self._base, self._size, self._kind = base, size, kind
        self._sliced = config.slices
        super().__init__({
            "axi": In(axi4_signature(32, config.bus_data_width, config.bus_id_width)),
            "host": In(host_signature(size)),
        })

    @property
    def size(self):
        return self._size

    @property
    def base(self):
        return self._base

    def elaborate(self, platform):
        m = Module()
        c = self._config
        dw = c.bus_data_width
        bb = dw // 8
        shift = bb.bit_length() - 1
        words = self._size // bb
        # (sliced: the block RAMs' address, enables and data come from registers beside
        # them, not from this state machine's multiplexers, and the word read is registered:
        # reads take two cycles more)
        core = (_Spram(words, dw) if self._kind == "spram" else
                _BlockRam(words, dw, registered=self._sliced))
        late = core.latency - 1         # cycles after the first until read data returns
        m.submodules.core = core
        bus, host = self.axi, self.host

        def in_range(a):
            return (a >= self._base) & (a < self._base + self._size)

        def word_of(a):
            return (a - self._base)[shift:shift + (words - 1).bit_length()]

        # ---- host byte port: a cycle of its own between bursts
        h_lane = Signal(range(bb))
        h_read = Signal()               # a host read was taken this cycle
        m.d.sync += h_read.eq(0)
        if late:
            # the byte's lane and valid follow the read through the core's registers
            h_lane_d, h_rvalid = h_lane, h_read
            for k in range(late):
                lane_k = Signal.like(h_lane, name=f"h_lane_d{k}")
                valid_k = Signal(name=f"h_rvalid{k}")
                m.d.sync += [valid_k.eq(h_rvalid), lane_k.eq(h_lane_d)]
                h_lane_d, h_rvalid = lane_k, valid_k
            if self._sliced:
                # (and the byte is registered once more, chosen from the word beside the
                # memories, so the bridge's register does not read the memories' outputs)
                h_byte = Signal(8, name="h_rdata")
                m.d.sync += [host.rvalid.eq(h_rvalid),
                             h_byte.eq(core.rdata.word_select(h_lane_d, 8))]
                m.d.comb += host.rdata.eq(h_byte)
            else:
                m.d.comb += [host.rvalid.eq(h_rvalid),
                             host.rdata.eq(core.rdata.word_select(h_lane_d, 8))]
        else:
            m.d.comb += [host.rvalid.eq(h_read),
                         host.rdata.eq(core.rdata.word_select(h_lane, 8))]
        # (sliced: a host request is registered first and performed from the register, so the
        # bridge's state logic does not reach the memories' address and enables)
        if self._sliced:
            hq = Signal(data.StructLayout({"valid": 1, "we": 1, "addr": len(host.addr),
                                           "wdata": 8}))
            m.d.comb += host.ready.eq(~hq.valid)
            with m.If(host.valid & ~hq.valid):
                m.d.sync += [hq.valid.eq(1), hq.we.eq(host.we), hq.addr.eq(host.addr),
                             hq.wdata.eq(host.wdata)]
            h_valid, h_we, h_addr, h_wdata = hq.valid, hq.we, hq.addr, hq.wdata
        else:
            h_valid, h_we, h_addr, h_wdata = host.valid, host.we, host.addr, host.wdata

        # ---- AXI read beat pipeline: ``pend`` = the core returns a beat this cycle,
        # ``hold`` = a beat parked because R was not ready.
        pend, p_last, p_err = Signal(), Signal(), Signal()
        hold, h_data, h_last, h_err = Signal(), Signal(dw), Signal(), Signal()
        rid = Signal(len(bus.arid))
        m.d.comb += bus.rid.eq(rid)
        # (a beat issued to the core: `pend` the cycle its data returns; with a registered
        # core the issue sets the first of `late` stages `a_pend<k>`, which `pend` follows)
        in_flight = 0                   # beats issued whose data has not returned
        if late:
            stages = [(Signal(name=f"a_pend{k}"), Signal(name=f"a_last{k}"),
                       Signal(name=f"a_err{k}")) for k in range(late)]
            m.d.sync += stages[0][0].eq(0)
            for prev, nxt in zip(stages, stages[1:] + [(pend, p_last, p_err)]):
                m.d.sync += [n.eq(v) for n, v in zip(nxt, prev)]
            i_pend, i_last, i_err = stages[0]
            in_flight = sum(st[0] for st in stages)
        else:
            m.d.sync += pend.eq(0)
            i_pend, i_last, i_err = pend, p_last, p_err
        beat = Signal(data.StructLayout({"data": dw, "last": 1, "err": 1}))
        m.d.comb += [beat.data.eq(core.rdata & ~p_err.replicate(dw)), beat.last.eq(p_last),
                     beat.err.eq(p_err)]
        if self._sliced:
            # R beats leave from a FIFO's registers: RREADY only pops it, and a beat is read
            # from the core only while the FIFO has room for it and the one returning.
            # (room for the beats in flight: one a cycle with RREADY high)
            rq = fifo.SyncFIFOBuffered(width=beat.shape().size, depth=4 + late)
            m.submodules.r_fifo = rq
            head = Signal(beat.shape())
            m.d.comb += [rq.w_en.eq(pend), rq.w_data.eq(beat), head.eq(rq.r_data),
                         bus.rvalid.eq(rq.r_rdy), bus.rdata.eq(head.data),
                         bus.rlast.eq(head.last), bus.rresp.eq(head.err.replicate(2) & Resp.DECERR),
                         rq.r_en.eq(bus.rready)]
            r_room = rq.level + pend + in_flight < rq.depth
        else:
            m.d.comb += bus.rvalid.eq(pend | hold)
            with m.If(hold):
                m.d.comb += [bus.rdata.eq(h_data), bus.rlast.eq(h_last),
                             bus.rresp.eq(h_err.replicate(2) & Resp.DECERR)]
            with m.Else():
                m.d.comb += [bus.rdata.eq(beat.data), bus.rlast.eq(p_last),
                             bus.rresp.eq(p_err.replicate(2) & Resp.DECERR)]
            with m.If(pend & ~bus.rready):
                m.d.sync += [hold.eq(1), h_data.eq(beat.data), h_last.eq(p_last),
                             h_err.eq(p_err)]
            with m.If(hold & bus.rready):
                m.d.sync += hold.eq(0)
            r_room = ~hold & (~pend | bus.rready)

        # ---- AXI write beats: sliced, each is registered and written to the core a cycle
        # later (the core is free then: nothing else uses it in WRITE or RESP)
        if self._sliced:
            wr = Signal(data.StructLayout({"en": 1, "addr": range(words), "we": 1, "data": dw,
                                           "mask": bb}))
            m.d.sync += wr.en.eq(0)
            with m.If(wr.en):
                m.d.comb += [core.addr.eq(wr.addr), core.we.eq(wr.we), core.wdata.eq(wr.data),
                             core.wmask.eq(wr.mask)]

        addr = Signal(32)
        # (sliced: the next read beat's word and range check, registered as the address
        # steps, so the memories' read address and enables come from flip-flops)
        r_word = Signal(range(words))
        r_ok = Signal()
        left = Signal(9)                 # beats still to issue (reads) or accept (writes)
        w_err = Signal()
        prefer_write = Signal()
        bid = Signal(len(bus.awid))
        with m.FSM(name="ram"):
            with m.State("IDLE"):
                with m.If(h_valid):
                    m.d.comb += [core.addr.eq(h_addr >> shift),
                                 core.re.eq(~h_we), core.we.eq(h_we),
                                 core.wdata.eq(h_wdata.replicate(bb)),
                                 core.wmask.eq(1 << h_addr[:shift] if shift else 1)]
                    m.d.sync += [h_lane.eq(h_addr[:shift] if shift else 0),
                                 h_read.eq(~h_we)]
                    if self._sliced:
                        m.d.sync += hq.valid.eq(0)
                    else:
                        m.d.comb += host.ready.eq(1)
                with m.Elif(bus.arvalid & (~bus.awvalid | ~prefer_write)):
                    m.d.comb += bus.arready.eq(1)
                    m.d.sync += [addr.eq(bus.araddr), left.eq(bus.arlen + 1), rid.eq(bus.arid),
                                 prefer_write.eq(1)]
                    if self._sliced:
                        m.d.sync += [r_word.eq(word_of(bus.araddr)),
                                     r_ok.eq(in_range(bus.araddr))]
                    m.next = "READ"
                with m.Elif(bus.awvalid):
                    m.d.comb += bus.awready.eq(1)
                    m.d.sync += [addr.eq(bus.awaddr), bid.eq(bus.awid), w_err.eq(0),
                                 prefer_write.eq(0)]
                    m.next = "WRITE"
            with m.State("READ"):
                issue = Signal()
                m.d.comb += issue.eq((left != 0) & r_room)
                with m.If(issue):
                    if self._sliced:
                        m.d.comb += [core.addr.eq(r_word), core.re.eq(r_ok)]
                        m.d.sync += [i_err.eq(~r_ok), r_word.eq(r_word + 1),
                                     r_ok.eq(in_range(addr + bb))]
                    else:
                        m.d.comb += [core.addr.eq(word_of(addr)), core.re.eq(in_range(addr))]
                        m.d.sync += i_err.eq(~in_range(addr))
                    m.d.sync += [i_pend.eq(1), i_last.eq(left == 1), addr.eq(addr + bb),
                                 left.eq(left - 1)]
                with m.If((left == 0) & bus.rvalid & bus.rready & bus.rlast):
                    m.next = "IDLE"
            with m.State("WRITE"):
                m.d.comb += bus.wready.eq(1)
                with m.If(bus.wvalid):
                    if self._sliced:
                        m.d.sync += [wr.en.eq(1), wr.addr.eq(word_of(addr)),
                                     wr.we.eq(in_range(addr)), wr.data.eq(bus.wdata),
                                     wr.mask.eq(bus.wstrb)]
                    else:
                        m.d.comb += [core.addr.eq(word_of(addr)), core.we.eq(in_range(addr)),
                                     core.wdata.eq(bus.wdata), core.wmask.eq(bus.wstrb)]
                    m.d.sync += [addr.eq(addr + bb), w_err.eq(w_err | ~in_range(addr))]
                    with m.If(bus.wlast):
                        m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += [bus.bvalid.eq(1), bus.bid.eq(bid),
                             bus.bresp.eq(w_err.replicate(2) & Resp.DECERR)]
                with m.If(bus.bready):
                    m.next = "IDLE"
        return m
