"""AXI4 and AXI4-Lite signatures and the NPU's AXI4 master engine (the bus controller)."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .slices import register_slice, skid_slice, stream_slice

__all__ = ["Resp", "Burst", "axi4_signature", "axi4_lite_signature", "read_request_layout",
           "read_beat_layout", "write_request_layout", "write_beat_layout", "AxiMaster"]

#: AXI response codes.
class Resp:
    OKAY = 0
    EXOKAY = 1
    SLVERR = 2
    DECERR = 3


#: AXI burst types.
class Burst:
    FIXED = 0
    INCR = 1
    WRAP = 2


def axi4_signature(addr_width, data_width, id_width):
    """The AXI4 signal set, as seen by the master (five channels, ``valid``/``ready`` each).

    Flattened into Verilog ports as ``<name>__awvalid`` etc., the names cocotbext-axi expects.
    """
    def ax(p):
        return {
            f"{p}id": Out(id_width), f"{p}addr": Out(addr_width), f"{p}len": Out(8),
            f"{p}size": Out(3), f"{p}burst": Out(2), f"{p}lock": Out(1), f"{p}cache": Out(4),
            f"{p}prot": Out(3), f"{p}qos": Out(4), f"{p}valid": Out(1), f"{p}ready": In(1),
        }
    return wiring.Signature({
        **ax("aw"),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "wvalid": Out(1), "wready": In(1),
        "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        **ax("ar"),
        "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def axi4_lite_signature(addr_width=12, data_width=32):
    """The AXI4-Lite signal set, as seen by the master."""
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
        "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


#: Beats a single engine request may ask for.
MAX_REQUEST_BEATS = 1 << 12

#: For a fast clock, the beats each read client's FIFO holds (its credits): a beat taken from
#: R at one cycle is in the FIFO's head three cycles later, and its credit is back two cycles
#: after the client takes it, so five keep one beat a cycle going; eight hold a burst's start
#: while the client is busy.
R_CREDITS = 8


def read_request_layout():
    """A read request: ``beats`` bus beats from the beat holding byte ``addr``."""
    return data.StructLayout({"addr": 32, "beats": range(MAX_REQUEST_BEATS + 1)})


def read_beat_layout(data_width):
    """One beat of read data: ``err`` if the memory answered SLVERR/DECERR, ``addr`` the address
    of the burst it belongs to, ``last`` on the request's last beat."""
    return data.StructLayout({"data": data_width, "err": 1, "addr": 32, "last": 1})


def write_request_layout():
    return read_request_layout()


def write_beat_layout(data_width):
    return data.StructLayout({"data": data_width, "strb": data_width // 8})


class AxiMaster(wiring.Component):
    """AXI4 master engine: turns beat-granular requests into INCR bursts.

    A request of ``beats`` beats starting at the beat that holds ``addr`` is split into bursts of
    at most ``max_burst`` beats that never cross a 4 KiB boundary. Reads are arbitrated between
    ``read_clients`` request ports (round robin, one request at a time); up to ``max_reads``
    read bursts are in flight, all with ARID 0, so data returns in request order and is routed to
    the client that asked (a FIFO of in-flight bursts). One write client: its beats follow the
    bursts' AW handshakes in order; WLAST marks burst ends; BRESP is checked per burst; up to
    ``max_writes`` write bursts are outstanding.

    Every burst is full-width (``size`` = log2 bytes per beat), INCR, ``cache`` = 0b0011
    (normal non-cacheable bufferable), ``prot`` = 0 (unprivileged, secure, data). VALID never
    waits for READY: AR/AW payloads are registered before VALID rises and held until READY.

    ``flush`` (held high while the NPU is stopping) discards queued requests and read data,
    completes the write bursts already announced on AW with null strobes (so no byte changes),
    and waits for every response; :attr:`idle` then rises.

    Throughput: one burst per cycle on AR and on AW (a new request is taken in the cycle its
    predecessor's last burst is loaded; a cycle later for a fast clock). Latency: a request's
    first burst is on AR/AW one cycle after the request is accepted (for a fast clock,
    :attr:`~hdl.config.NpuConfig.slices`, two on AW and three on AR: the granted read request
    waits in a skid slice before the splitter); read data reaches the client in the cycle its
    R beat is accepted (three cycles later for a fast clock: the beat is registered, then
    written into its client's FIFO of :data:`R_CREDITS`, whose head is a register).

    Parameters
    ----------
    config : NpuConfig
        ``bus_data_width``, ``bus_id_width``, ``max_burst``, ``max_reads``, ``max_writes``.
    read_clients : int
        Number of read request/data port pairs.

    Members
    -------
    bus : Out(axi4_signature(32, bus_data_width, bus_id_width))
        The AXI4 master port.
    rd_req : In(stream.Signature(read_request_layout())).array(read_clients)
        Read requests, one port per client.
    rd_data : Out(stream.Signature(read_beat_layout(bus_data_width))).array(read_clients)
        Read beats, in request order, per client.
    wr_req : In(stream.Signature(write_request_layout()))
        Write requests.
    wr_data : In(stream.Signature(write_beat_layout(bus_data_width)))
        Write beats, in request order.
    wr_err : Out(1)
        A write burst was answered SLVERR/DECERR (one pulse), at :attr:`wr_err_addr`.
    wr_err_addr : Out(32)
        Address of the failing write burst.
    wr_idle : Out(1)
        No write request or burst outstanding (every B response received).
    flush : In(len(AxiMaster.flush_groups(config, read_clients)))
        Stop: drop requests, discard read data, finish announced bursts. For a fast clock one
        copy of the flush for each part of the master (:meth:`flush_groups`, in that order),
        so that no one flip-flop reaches all of them; all copies are equal. One bit
        otherwise.
    idle : Out(1)
        Nothing outstanding on the bus.
    """

    def __init__(self, config, read_clients=1):
        self._config = c = config
        self._clients = read_clients
        self._beat = c.bus_data_width // 8
        super().__init__({
            "bus": Out(axi4_signature(32, c.bus_data_width, c.bus_id_width)),
            "rd_req": In(stream.Signature(read_request_layout())).array(read_clients),
            "rd_data": Out(stream.Signature(read_beat_layout(c.bus_data_width))).array(
                read_clients),
            "wr_req": In(stream.Signature(write_request_layout())),
            "wr_data": In(stream.Signature(write_beat_layout(c.bus_data_width))),
            "wr_err": Out(1),
            "wr_err_addr": Out(32),
            "wr_idle": Out(1),
            "flush": In(len(self.flush_groups(c, read_clients))),
            "idle": Out(1),
        })

    @staticmethod
    def flush_groups(config, read_clients=1):
        """The parts of the master that take a copy of :attr:`flush` of their own (for a fast
        clock; otherwise one part, ``"all"``): the two burst splitters, each request slice,
        the read arbiter, RREADY, each client's R beats and the W channel."""
        if not config.slices:
            return ("all",)
        return ("ar", "aw", *[f"rd_req_{k}" for k in range(read_clients)], "wr_req",
                "grant", "r", *[f"r_beats_{k}" for k in range(read_clients)], "w")

    def _flush(self, group):
        """The copy of :attr:`flush` that ``group`` (:meth:`flush_groups`) takes: the one bit
        without a fast clock."""
        if not self._config.slices:
            return self.flush[0]
        return self.flush[self.flush_groups(self._config, self._clients).index(group)]

    def _splitter(self, m, name, limit, release, handshake, tag=None, b_tag=None):
        """Burst splitter: holds one request and proposes its bursts, one per cycle.

        The burst on offer (``valid``, ``b_addr``, ``b_len``, ``b_last``) is registered and held
        until ``handshake``; the next one is loaded in the same cycle. For a fast clock the
        bursts wait in a FIFO of two instead, so that ``handshake`` (the slave's READY) reaches
        no further than the FIFO's read side: ``free``, the request ports' READY, depends on
        registers only. At most ``limit`` bursts
        are offered or outstanding: a credit is taken per burst and given back by ``release``.
        ``free`` says a new request may be latched this cycle (the splitter is empty or, but
        for a fast clock, loads its request's last burst now); ``start(addr, beats)`` gives
        the statements that latch one. Returns (free, start, valid, b_addr, b_len, b_last, busy).

        A burst's length is the least of the beats left, ``max_burst`` and the beats to the
        4 KiB boundary. For a fast clock (:attr:`~hdl.config.NpuConfig.slices`) it and
        whether it is the request's last are registered a burst ahead: formed from the
        request as it is latched, then, a cycle after each burst is loaded, from the beats
        left and the beats to the boundary (kept as a count that each burst decreases), so no
        compare chain lies in front of the address adder, and a request's bursts are loaded
        every other cycle. Otherwise they are formed from the registers as the burst is
        loaded (fewer LUTs)."""
        c = self._config
        bb = self._beat
        shift = bb.bit_length() - 1
        page = 4096 // bb
        busy = Signal(name=f"{name}_busy")
        addr = Signal(32, name=f"{name}_addr")
        remaining = Signal(range(MAX_REQUEST_BEATS + 1), name=f"{name}_remaining")
        to_page = Signal(range(page + 1), name=f"{name}_to_page")
        n = Signal(range(c.max_burst + 1), name=f"{name}_n")
        last = Signal(name=f"{name}_last")
        valid = Signal(name=f"{name}_valid")
        b_addr = Signal(32, name=f"{name}_baddr")
        b_len = Signal(range(c.max_burst + 1), name=f"{name}_blen")
        b_last = Signal(name=f"{name}_blast")
        credits = Signal(range(limit + 1), init=limit, name=f"{name}_credits")

        def plan(rem, tp):
            """(n, last) of a burst with ``rem`` beats left and ``tp`` beats to the boundary."""
            n1 = Mux(rem > c.max_burst, c.max_burst, rem)
            return [n.eq(Mux(n1 > tp, tp, n1)), last.eq((rem <= c.max_burst) & (rem <= tp))]

        ahead = c.slices
        if not ahead:
            m.d.comb += [to_page.eq(page - addr[shift:12]), *plan(remaining, to_page)]

        def start(req_addr, beats):
            stmts = [busy.eq(1), addr.eq(req_addr & ~Const(bb - 1, 32)), remaining.eq(beats)]
            if ahead:
                stmts.append(rem_left.eq(beats != 0))
                tp = Signal(range(page + 1), name=f"{name}_start_tp")
                m.d.comb += tp.eq(page - req_addr[shift:12])
                stmts += [to_page.eq(tp), *plan(beats, tp), planned.eq(1)]
            return stmts

        load = Signal(name=f"{name}_load")
        free = Signal(name=f"{name}_free")
        if ahead:
            # the bursts wait in a FIFO of two: READY only pops it, and what is loaded next
            # depends on the FIFO's level, not on READY
            tags = [(b_tag, tag)] if tag is not None else []
            head = Cat(b_addr, b_len, b_last, *[h for h, _ in tags])
            room, q_valid, q_head, take = register_slice(
                m, f"{name}_bursts", load, Cat(addr, n, last, *[t for _, t in tags]),
                len(head))
            m.d.comb += [valid.eq(q_valid), head.eq(q_head), take.eq(handshake)]
        else:
            room = ~valid | handshake
            with m.If(valid & handshake):
                m.d.sync += valid.eq(0)
        planned = Const(1)
        if ahead:
            # (the next burst of a request is planned a cycle after its predecessor is loaded,
            # from the registered beats left and to the boundary: a request's bursts go out
            # every other cycle, and neither the subtraction nor the compares lie between
            # one burst's length and the next's)
            planned = Signal(init=1, name=f"{name}_planned")
            with m.If(busy & ~planned):
                m.d.sync += [planned.eq(1), *plan(remaining, to_page)]
        rem_left, has_credit = remaining != 0, credits != 0
        if ahead:
            # (fast clock) whether beats and credits are left are registers of their own, set
            # as `remaining` and `credits` change: `load` starts from flip-flops
            rem_left = Signal(name=f"{name}_rem_left")
            has_credit = Signal(init=limit != 0, name=f"{name}_has_credit")
            m.d.sync += has_credit.eq(release | Mux(load, credits >= 2, has_credit))
        m.d.comb += [
            load.eq(busy & planned & rem_left & room & has_credit & ~self._flush(name)),
            # (a fast clock takes a request only into an empty splitter: a cycle between
            # requests, and no path from the burst planning into the next request's)
            free.eq(~busy if ahead else ~busy | (load & last)),
        ]
        m.d.sync += credits.eq(credits - load + release)
        with m.If(busy & ((remaining == 0) | self._flush(name))):
            m.d.sync += busy.eq(0)
        with m.If(load):
            rem = Signal(range(MAX_REQUEST_BEATS + 1), name=f"{name}_rem_next")
            m.d.comb += rem.eq(remaining - n)
            m.d.sync += [addr.eq(addr + (n << shift)), remaining.eq(rem)]
            if ahead:
                m.d.sync += rem_left.eq(rem != 0)
                m.d.sync += [to_page.eq(Mux(n == to_page, page, to_page - n)),
                             planned.eq(last)]
            else:
                m.d.sync += [valid.eq(1), b_addr.eq(addr), b_len.eq(n), b_last.eq(last)]
                if tag is not None:
                    m.d.sync += b_tag.eq(tag)      # the request's tag travels with its bursts
            with m.If(last):
                m.d.sync += busy.eq(0)
        return free, start, valid, b_addr, b_len, b_last, busy

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bb = self._beat
        bus = self.bus
        size = bb.bit_length() - 1
        nclients = self._clients
        cbits = max(1, (nclients - 1).bit_length())

        # ---- read path -------------------------------------------------------------------
        # (for a fast clock the head of the bursts in flight is a register, from which the R
        # beats' client is decoded: not the LUT RAM behind a read pointer, 13.3 ns to the beat
        # registers of s57. One entry more: the head register is filled a cycle after an
        # entry is written, and every burst the splitter lets out must find room.)
        # (and its client is one-hot: each client's beat valid reads one flip-flop of it, not
        # a compare of the client's number)
        hbits = nclients if c.slices else cbits
        inflight = (fifo.SyncFIFOBuffered(width=hbits + 32 + 1, depth=c.max_reads + 1)
                    if c.slices else fifo.SyncFIFO(width=hbits + 32 + 1, depth=c.max_reads))
        m.submodules.inflight = inflight
        r_client = Signal(cbits)        # client of the request being split
        b_client = Signal(cbits)        # client of the burst on offer
        r_free, r_start, r_valid, r_addr, r_len, r_last, r_busy = self._splitter(
            m, "ar", c.max_reads, inflight.r_en, bus.arready, r_client, b_client)
        # For a fast clock each client's requests wait in a FIFO of two: the arbiter and the
        # splitter's planning start from registers, and a client's READY is the FIFO's room.
        # (A flush drops what they hold.)
        def request_slice(name, req):
            return stream_slice(m, name, req, drop=self._flush(name)) if c.slices else req

        reqs = [request_slice(f"rd_req_{k}", self.rd_req[k]) for k in range(nclients)]
        # Round-robin arbiter: the client after the last one granted goes first.
        last_grant = Signal(range(nclients))
        grant = Signal(range(nclients))
        any_req = Signal()
        for first in reversed(range(nclients)):
            order = [(first + 1 + k) % nclients for k in range(nclients)]
            with m.If(last_grant == first):
                for k in reversed(order):
                    with m.If(reqs[k].valid):
                        m.d.comb += [grant.eq(k), any_req.eq(1)]
        g_req = Signal(read_request_layout())       # the granted client's request
        for k in range(nclients):
            with m.If(grant == k):
                m.d.comb += g_req.eq(reqs[k].payload)
        granted = Signal()      # the granted client's request is taken this cycle
        with m.If(granted):
            for k in range(nclients):
                with m.If(grant == k):
                    m.d.comb += reqs[k].ready.eq(1)
            m.d.sync += last_grant.eq(grant)
        g_queued = 0
        if c.slices:
            # For a fast clock the granted request waits in a skid slice as well: the
            # splitter's burst planning starts from its head's flip-flops, not from the
            # arbitration, nor from a LUT RAM's read behind its pointer.
            glayout = data.StructLayout({"client": cbits, "req": read_request_layout()})
            g_in = Signal(glayout)
            m.d.comb += [g_in.client.eq(grant), g_in.req.eq(g_req)]
            g_flush = self._flush("grant")
            g_room, g_queued, g_head, g_take = skid_slice(
                m, "rd_granted", any_req & ~g_flush, g_in, glayout)
            m.d.comb += [granted.eq(g_room & ~g_flush & any_req), g_take.eq(g_flush)]
            with m.If(r_free & ~g_flush & g_queued):
                m.d.comb += g_take.eq(1)
                m.d.sync += [*r_start(g_head.req.addr, g_head.req.beats),
                             r_client.eq(g_head.client)]
        else:
            m.d.comb += granted.eq(r_free & ~self._flush("grant") & any_req)
            with m.If(granted):
                m.d.sync += [*r_start(g_req.addr, g_req.beats), r_client.eq(grant)]
        # (an empty request, beats = 0, is accepted and produces nothing)
        m.d.comb += [
            bus.arid.eq(0), bus.araddr.eq(r_addr & ~Const(bb - 1, 32)), bus.arlen.eq(r_len - 1),
            bus.arsize.eq(size), bus.arburst.eq(Burst.INCR), bus.arcache.eq(0b0011),
            bus.arprot.eq(0), bus.arlock.eq(0), bus.arqos.eq(0), bus.arvalid.eq(r_valid),
        ]
        w_client = Cat(*(b_client == k for k in range(nclients))) if c.slices else b_client
        m.d.comb += [inflight.w_en.eq(r_valid & bus.arready),
                     inflight.w_data.eq(Cat(w_client, r_addr, r_last))]
        h_client = inflight.r_data[:hbits]      # (one-hot for a fast clock)
        h_addr = inflight.r_data[hbits:hbits + 32]
        h_last = inflight.r_data[hbits + 32]
        beat = Signal(read_beat_layout(c.bus_data_width))    # the beat on R, tagged
        m.d.comb += [beat.data.eq(bus.rdata), beat.err.eq(bus.rresp[1]), beat.addr.eq(h_addr),
                     beat.last.eq(bus.rlast & h_last)]
        r_held = 0                                  # beats accepted, not yet delivered
        if c.slices:
            # For a fast clock the R beats reach their clients by credits: each client has a
            # FIFO of its own (beside it), and the master a count of the room in each. A beat
            # is taken from R when its client (one-hot, from the in-flight head) has credit; it
            # is registered here with a valid flag per client and written into that client's
            # FIFO a cycle later, and each beat a client takes returns its credit from a
            # register. Nothing crosses the die but flip-flops: the beat and its flags one
            # way, the credits the other (a handshake of two slices had R's valid, the
            # in-flight head and the client's slice state on one path across the die, into the
            # enable of the slice's spare beat).
            # A flush drops what the FIFOs hold (it lasts while the NPU is stopped) and gives
            # every credit back.
            depth = R_CREDITS
            sent = Signal(nclients, name="r_sent")
            r_beat = Signal.like(beat, name="r_beat", reset_less=True)
            m.d.sync += r_beat.eq(beat)
            held, has = [sent.any()], []
            for k in range(nclients):
                k_flush = self._flush(f"r_beats_{k}")
                q = fifo.SyncFIFOBuffered(width=len(beat.as_value()), depth=depth)
                m.submodules[f"r_beats_{k}"] = q
                credits = Signal(range(depth + 1), name=f"r_credits_{k}", init=depth)
                has_credit = Signal(name=f"r_has_credit_{k}", init=1)
                returned = Signal(name=f"r_returned_{k}")
                send = Signal(name=f"r_send_{k}")
                m.d.comb += [
                    send.eq(bus.rvalid & bus.rready & h_client[k] & ~k_flush),
                    q.w_en.eq(sent[k]), q.w_data.eq(r_beat),
                    self.rd_data[k].valid.eq(q.r_rdy & ~k_flush),
                    self.rd_data[k].payload.eq(q.r_data),
                    q.r_en.eq(self.rd_data[k].ready | k_flush),
                ]
                left = Signal.like(credits, name=f"r_credits_left_{k}")
                m.d.comb += left.eq(credits - send + returned)
                m.d.sync += [
                    sent[k].eq(send),
                    returned.eq(q.r_en & q.r_rdy & ~k_flush),
                    credits.eq(Mux(k_flush, depth, left)),
                    has_credit.eq(k_flush | (left != 0)),
                ]
                held.append(q.level != 0)     # (the level counts its head)
                has.append(has_credit)
            r_held = Cat(*held).any()
            room = (Cat(*has) & h_client).any()
            m.d.comb += bus.rready.eq(inflight.r_rdy & (room | self._flush("r")))
        else:
            for k in range(nclients):
                m.d.comb += self.rd_data[k].payload.eq(beat)
            with m.If(inflight.r_rdy):
                with m.If(self._flush("r")):
                    m.d.comb += bus.rready.eq(1)
                with m.Else():
                    for k in range(nclients):
                        with m.If(h_client == k):
                            m.d.comb += [self.rd_data[k].valid.eq(bus.rvalid),
                                         bus.rready.eq(self.rd_data[k].ready)]
        m.d.comb += inflight.r_en.eq(bus.rvalid & bus.rready & bus.rlast)

        # ---- write path ------------------------------------------------------------------
        writes = c.max_writes                       # write bursts in flight
        wq = fifo.SyncFIFO(width=9, depth=writes)   # beats of announced bursts
        bq = fifo.SyncFIFO(width=32, depth=writes)  # addresses awaiting B
        m.submodules.wq, m.submodules.bq = wq, bq
        w_free, w_start, w_valid, w_addr, w_len, _, w_busy = self._splitter(
            m, "aw", writes, bus.bvalid & bus.bready, bus.awready)
        wr_req = request_slice("wr_req", self.wr_req)
        # requests the slices hold (none without them: the ports' valid is the clients')
        r_queued = Cat(*[r.valid for r in reqs], g_queued).any() if c.slices else 0
        w_queued = wr_req.valid if c.slices else 0
        m.d.comb += wr_req.ready.eq(w_free & ~self._flush("aw"))
        with m.If(wr_req.valid & wr_req.ready):
            m.d.sync += w_start(wr_req.payload.addr, wr_req.payload.beats)
        m.d.comb += [
            bus.awid.eq(0), bus.awaddr.eq(w_addr & ~Const(bb - 1, 32)), bus.awlen.eq(w_len - 1),
            bus.awsize.eq(size), bus.awburst.eq(Burst.INCR), bus.awcache.eq(0b0011),
            bus.awprot.eq(0), bus.awlock.eq(0), bus.awqos.eq(0), bus.awvalid.eq(w_valid),
            wq.w_en.eq(w_valid & bus.awready), wq.w_data.eq(w_len),
            bq.w_en.eq(w_valid & bus.awready), bq.w_data.eq(w_addr),
        ]
        w_count = Signal(9)
        w_flush = self._flush("w")
        m.d.comb += [
            bus.wvalid.eq(wq.r_rdy & (self.wr_data.valid | w_flush)),
            bus.wdata.eq(self.wr_data.payload.data),
            bus.wstrb.eq(Mux(w_flush, 0, self.wr_data.payload.strb)),
            bus.wlast.eq(w_count + 1 == wq.r_data),
            self.wr_data.ready.eq(wq.r_rdy & bus.wready & ~w_flush),
        ]
        with m.If(bus.wvalid & bus.wready):
            with m.If(bus.wlast):
                m.d.sync += w_count.eq(0)
                m.d.comb += wq.r_en.eq(1)
            with m.Else():
                m.d.sync += w_count.eq(w_count + 1)
        m.d.comb += [bus.bready.eq(1), bq.r_en.eq(bus.bvalid)]
        with m.If(bus.bvalid & bq.r_rdy & bus.bresp[1] & ~w_flush):
            m.d.comb += [self.wr_err.eq(1), self.wr_err_addr.eq(bq.r_data)]

        m.d.comb += [
            self.wr_idle.eq(~w_busy & ~w_valid & ~bq.r_rdy & ~wq.r_rdy & ~w_queued),
            self.idle.eq(self.wr_idle & ~r_busy & ~r_valid & (inflight.level == 0) & ~r_queued &
                         ~r_held),
        ]
        return m
