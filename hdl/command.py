"""The command processor: fetch, static checks, dispatch into the LOAD/EXECUTE/STORE queues,
dependency tokens, deadlock detection and completion."""

import operator
from functools import reduce
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .axi import read_beat_layout, read_request_layout
from .postproc import shift_add_mul
from .slices import KEEP_MARK, PartedFIFO

__all__ = ["CommandProcessor", "QUEUE_ENTRY", "RETIRE", "FetchKind"]

#: A queued command: the command and its index in the program.
QUEUE_ENTRY = data.StructLayout({"cmd": isa.COMMAND, "index": 32})


class FetchKind:
    """What a fetch-buffer entry holds: a command, or the reason fetching stopped there."""
    CMD = 0
    WINDOW = 1      #: the command's 32 bytes are outside the memory window (not read)
    BUS_ERROR = 2   #: the read was answered SLVERR/DECERR
    PAST_END = 3    #: index == PROG_LEN


_FETCH_ENTRY = data.StructLayout({"cmd": isa.COMMAND, "index": 32, "kind": 2, "addr": 32})
_INFLIGHT = data.StructLayout({"push_prev": 1, "push_next": 1, "index": 32})

#: Commands completing in one cycle, per unit: valid and program index.
RETIRE = data.StructLayout({
    "load_valid": 1, "load_index": 32, "exec_valid": 1, "exec_index": 32,
    "store_valid": 1, "store_index": 32,
})


def _registered(m, value, name):
    """``value`` a cycle later, in a register named ``name``."""
    r = Signal(Value.cast(value).shape(), name=name)
    m.d.sync += r.eq(value)
    return r


def _nm1(n):
    """``n - 1`` as an unsigned value of ``n``'s width (only used where ``n != 0``)."""
    return (n - 1)[:len(n)]


class CommandProcessor(wiring.Component):
    """Fetches, checks and dispatches the program; runs the three queues' token protocol.

    Held in reset while the NPU is not running; it starts fetching at PROG_BASE when released.

    - *Fetch*: one command (32 bytes) at a time through read port ``rd_req``/``rd_data``, into a
      fetch buffer of ``fetch_depth`` entries (the next command is read while the buffer is
      full, and waits in the fetch unit's assembly register; a buffer of one entry is that
      register itself, and the next command is read when it is free). A command outside the
      memory window is not read: a WINDOW entry is queued instead; so is PAST_END at index
      PROG_LEN, and a BUS_ERROR entry for a read answered with an error. Fetching stops after
      such an entry. (For a fast clock the first command's window and length checks take a cycle
      after the start, the next ones' compare with bounds formed ahead.)
    - *Decode*: each entry is checked at the buffer's head, in place (it leaves the buffer as
      it is dispatched), exactly as ``firmware.golden.GoldenNpu._fetch`` and the
      ``_check_*`` methods do (opcode, reserved bits, END and neighbour token flags, field ranges,
      buffer row ranges, memory window), in program order; the spans (the last buffer row and
      byte a strided block touches) take one multiply-add a cycle on a single shared
      multiplier, pipelined over three register stages (6 terms for LOAD, STORE and POOL, 9
      for COMPUTE), or with ``queues.span_steps`` > 1 one term every ``span_steps + 2``
      cycles (``span_steps + 3`` for a fast clock, each digit's partial product registered)
      on a narrow multiplier and an adder (:attr:`~hdl.config.NpuConfig.span_steps`);
      the first failing
      check sets :attr:`error`. A command that passes goes to its queue (a full queue stalls
      here: FETCH_STALL); END stops decoding.
    - *Units*: each reads the head of its queue in place (the FIFO's output register, or for
      a fast clock its memory at the read pointer; a queue's depth counts the command its unit
      runs), waits until its pop tokens are available and its
      push channels have room (``token_depth``), starts it, and pushes its tokens and removes
      it from the queue when it completes (EXECUTE: when it is issued). LOAD and STORE run
      one command at a time; EXECUTE issues commands back to back into the execute unit,
      reserving room for their pushes, and pushes as they complete (in order). SETPP
      completes as it starts: it sets :attr:`pp_config` and :attr:`pp_param`. While LOAD
      writes the accumulator, EXECUTE issues nothing.
    - *End*: after END, when every queue and unit is empty, :attr:`done` rises. If every unit
      is idle or blocked on tokens (at least one blocked) and the decoder cannot dispatch or has
      seen END, for 3 cycles in a row, the error is TOKEN_DEADLOCK at the oldest blocked command.

    Latency: a command reaches its queue 7 cycles after its fetch-buffer entry is at the head,
    plus one per span term (0 to 9), plus 2 for COMPUTE (its second term waits for its first)
    (with ``span_steps`` > 1 a term takes ``span_steps + 2`` cycles, and COMPUTE's second
    term waits no more than any other),
    plus 2 for a fast clock (:attr:`~hdl.config.NpuConfig.slices`: the window compares and
    the verdict are registered; 3 with ``span_steps`` > 1, whose terms' operands are
    registered too).

    Members
    -------
    prog_base, prog_len, win_base, win_limit : In(32)
        Held constant while running.
    rd_req, rd_data :
        Command fetch read port of the AXI master engine.
    load_cmd : Out(stream.Signature(hdl.isa.LOAD))
        The payload holds still from the transfer until ``load_done`` (the DMA units read the
        command's fields from it while they run); likewise ``store_cmd`` until ``store_done``.
    load_done, load_err : In(1)
    load_err_addr : In(32)
    load_to_acc : Out(1)
        The LOAD unit holds or runs a command with target ACC.
    exec_cmd : Out(stream.Signature(hdl.isa.COMMAND))
    exec_done : In(1)
        One pulse per completed EXECUTE command, in order.
    store_cmd : Out(stream.Signature(hdl.isa.STORE))
    store_done, store_err : In(1)
    store_err_addr : In(32)
    pp_config : Out(hdl.isa.SETPP)
        The last SETPP's fields (for a fast clock from the cycle after it completes).
    pp_param : Out(16)
        Its PARAM address (likewise).
    done : Out(1)
        The program has ended and drained (level).
    error : Out(1)
        The program stopped (level, from the first error on).
    error_code : Out(hdl.isa.ErrorCode)
    error_index, error_addr : Out(32)
    retired : Out(3)
        Commands that completed this cycle (END included).
    retire : Out(RETIRE)
        Which unit completed which command this cycle (for the simulation trace).
    load_wait, exec_wait, store_wait, fetch_stall, exec_starved : Out(1)
        Performance events (see ``hdl.isa.PERF_DOCS``).
    load_active, store_active : Out(1)
    """

    def __init__(self, config):
        self._config = c = config
        super().__init__({
            "prog_base": In(32), "prog_len": In(32), "win_base": In(32), "win_limit": In(32),
            "rd_req": Out(stream.Signature(read_request_layout())),
            "rd_data": In(stream.Signature(read_beat_layout(c.bus_data_width))),
            "load_cmd": Out(stream.Signature(isa.LOAD)),
            "load_done": In(1), "load_err": In(1), "load_err_addr": In(32),
            "load_to_acc": Out(1),
            "exec_cmd": Out(stream.Signature(isa.COMMAND)),
            "exec_done": In(1),
            "store_cmd": Out(stream.Signature(isa.STORE)),
            "store_done": In(1), "store_err": In(1), "store_err_addr": In(32),
            "pp_config": Out(isa.SETPP),
            "pp_param": Out(16),
            "done": Out(1),
            "error": Out(1),
            "error_code": Out(isa.ErrorCode),
            "error_index": Out(32),
            "error_addr": Out(32),
            "retired": Out(3),
            "retire": Out(RETIRE),
            "load_wait": Out(1), "exec_wait": Out(1), "store_wait": Out(1),
            "fetch_stall": Out(1), "exec_starved": Out(1),
            "load_active": Out(1), "store_active": Out(1),
        })

    @staticmethod
    def _fetch_slot(m, f_cmd):
        """A fetch buffer of one entry with the FIFO's interface, whose command is the fetch
        unit's assembly register ``f_cmd`` itself (written only while the slot is free): the
        command is held once, not twice."""
        meta = data.StructLayout({"index": 32, "kind": 2, "addr": 32})
        slot = SimpleNamespace(w_en=Signal(name="slot_w_en"), w_rdy=Signal(name="slot_w_rdy"),
                               w_data=Signal(_FETCH_ENTRY, name="slot_w_data"),
                               r_en=Signal(name="slot_r_en"), r_rdy=Signal(name="slot_r_rdy"),
                               r_data=Signal(_FETCH_ENTRY, name="slot_r_data"))
        full = Signal(name="slot_full")
        held = Signal(meta, name="slot_meta")
        m.d.comb += [slot.w_rdy.eq(~full), slot.r_rdy.eq(full),
                     slot.r_data.cmd.eq(f_cmd), slot.r_data.index.eq(held.index),
                     slot.r_data.kind.eq(held.kind), slot.r_data.addr.eq(held.addr)]
        with m.If(slot.w_en & ~full):
            m.d.sync += [full.eq(1), held.index.eq(slot.w_data.index),
                         held.kind.eq(slot.w_data.kind), held.addr.eq(slot.w_data.addr)]
        with m.Elif(slot.r_en):
            m.d.sync += full.eq(0)
        return slot

    def elaborate(self, platform):
        m = Module()
        c = self._config
        bb = c.bus_data_width // 8
        beats = isa.CMD_BYTES // bb
        E = isa.ErrorCode

        # ---- error register (first error wins) -------------------------------------------
        err_set = Signal()
        err_code = Signal(E)
        err_index = Signal(32)
        err_addr = Signal(32)
        m.d.comb += [self.error.eq(err_set), self.error_code.eq(err_code),
                     self.error_index.eq(err_index), self.error_addr.eq(err_addr)]
        raised = []   # (condition, code, index, addr), in priority order

        # ---- fetch -------------------------------------------------------------------------
        f_idx = Signal(32)
        f_addr = Signal(40)
        f_cmd = Signal(isa.CMD_BITS, reset_less=True)
        if c.fetch_depth > 1:
            # (for a fast clock its head is read from its memory, as the queues' are below, its
            # entry stored in parts with pointers of their own, written from registers a cycle
            # after the fetch's state pushes it)
            fbuf = (PartedFIFO(PartedFIFO.split(_FETCH_ENTRY.size, 32), c.fetch_depth,
                               write_register=True) if c.slices else
                    fifo.SyncFIFOBuffered(width=_FETCH_ENTRY.size, depth=c.fetch_depth))
            m.submodules.fetch_buffer = fbuf
            may_read = 1        # the next command is assembled in f_cmd while the buffer is full
        else:
            fbuf = self._fetch_slot(m, f_cmd)
            may_read = fbuf.w_rdy   # f_cmd is the one entry: read the next when it is free
        f_beat = Signal(range(beats + 1))
        f_err = Signal()
        entry = Signal(_FETCH_ENTRY)
        m.d.comb += fbuf.w_data.eq(entry)
        # The next command's index and address, and their checks, are registered as they are
        # set (START, PUSH): REQ reads flip-flops, not adders and comparators.
        f_hi = Signal(41)
        f_past = Signal()
        f_below = Signal()
        f_above = Signal()

        # For a fast clock the checks compare registers only: the first command's a cycle
        # after START (FIRST), the next ones' with bounds formed ahead, each less one command
        # (idx + 1 >= len as idx >= len - 1, and so on): no adder before a compare.
        if c.slices:
            lim_past, lim_below, lim_above = (Signal(signed(34), name=f"lim_{n}")
                                              for n in ("past", "below", "above"))
            m.d.sync += [lim_past.eq(self.prog_len - 1),
                         lim_below.eq(self.win_base - isa.CMD_BYTES),
                         lim_above.eq(self.win_limit - isa.CMD_BYTES)]

        def fetch_next(idx, addr):
            """The command after the current one (``idx``, ``addr``: its index and address)."""
            if c.slices:
                m.d.sync += [f_idx.eq(idx), f_addr.eq(addr), f_hi.eq(f_hi + isa.CMD_BYTES),
                             f_past.eq(f_idx >= lim_past), f_below.eq(f_addr < lim_below),
                             f_above.eq(f_hi > lim_above)]
            else:
                hi = addr + isa.CMD_BYTES - 1
                m.d.sync += [f_idx.eq(idx), f_addr.eq(addr), f_hi.eq(hi),
                             f_past.eq(idx >= self.prog_len), f_below.eq(addr < self.win_base),
                             f_above.eq(hi > self.win_limit)]

        def first_checks(addr, hi):
            """The first command's checks (index 0, at ``addr`` .. ``hi``)."""
            return [f_past.eq(self.prog_len == 0), f_below.eq(addr < self.win_base),
                    f_above.eq(hi > self.win_limit)]

        with m.FSM(name="fetch"):
            with m.State("START"):
                first_hi = self.prog_base + isa.CMD_BYTES - 1
                m.d.sync += [f_idx.eq(0), f_addr.eq(self.prog_base), f_hi.eq(first_hi)]
                if c.slices:
                    m.next = "FIRST"
                else:
                    m.d.sync += first_checks(self.prog_base, first_hi)
                    m.next = "REQ"
            if c.slices:
                with m.State("FIRST"):
                    m.d.sync += first_checks(f_addr, f_hi)
                    m.next = "REQ"
            with m.State("REQ"):
                m.d.comb += [entry.index.eq(f_idx)]
                with m.If(f_past):
                    m.d.comb += [entry.kind.eq(FetchKind.PAST_END), fbuf.w_en.eq(1)]
                    with m.If(fbuf.w_rdy):
                        m.next = "STOP"
                with m.Elif(f_below | f_above):
                    m.d.comb += [entry.kind.eq(FetchKind.WINDOW), fbuf.w_en.eq(1),
                                 entry.addr.eq(Mux(f_below, f_addr, f_hi))]
                    with m.If(fbuf.w_rdy):
                        m.next = "STOP"
                with m.Elif(may_read):
                    m.d.comb += [self.rd_req.valid.eq(1),
                                 self.rd_req.payload.addr.eq(f_addr),
                                 self.rd_req.payload.beats.eq(beats)]
                    with m.If(self.rd_req.ready):
                        m.d.sync += [f_beat.eq(0), f_err.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += self.rd_data.ready.eq(1)
                with m.If(self.rd_data.valid):
                    word = self.rd_data.payload.data
                    for k in range(beats):
                        with m.If(f_beat == k):
                            m.d.sync += f_cmd[8 * bb * k:8 * bb * (k + 1)].eq(word)
                    m.d.sync += [f_beat.eq(f_beat + 1),
                                 f_err.eq(f_err | self.rd_data.payload.err)]
                    with m.If(f_beat + 1 == beats):
                        m.next = "PUSH"
            with m.State("PUSH"):
                m.d.comb += [entry.cmd.eq(f_cmd), entry.index.eq(f_idx), entry.addr.eq(f_addr),
                             entry.kind.eq(Mux(f_err, FetchKind.BUS_ERROR, FetchKind.CMD)),
                             fbuf.w_en.eq(1)]
                with m.If(fbuf.w_rdy):
                    fetch_next(f_idx + 1, f_addr + isa.CMD_BYTES)
                    m.next = "REQ"
                    with m.If(f_err):
                        m.next = "STOP"
            with m.State("STOP"):
                pass

        # ---- decode and static checks ------------------------------------------------------
        # The command being checked is the fetch buffer's head, read in place (the buffer's
        # output register holds it until it is dispatched): no copy of it.
        cur = Signal(_FETCH_ENTRY)
        m.d.comb += cur.eq(fbuf.r_data)
        cmd = cur.cmd
        if c.slices:
            # For a fast clock the checks read a copy of it, taken every cycle (the head holds
            # still from NEXT until DISPATCH pops it, so the copy is the command from CHECK1
            # on, when the first checks start): the fetch buffer's outputs drive the queues
            # and this copy, not the checks' logic spread beside them.
            cmd = Signal(isa.COMMAND, name="chk_cmd", reset_less=True)
            m.d.sync += cmd.eq(cur.cmd)
        op = cmd.header.op
        # (for a fast clock the queues' heads are read from their memories (LUT RAM), not from
        # an output register: a pop moves the read pointer, and no enable fans out over the
        # head's ~290 flip-flops; each unit reads a registered copy of its command, in npu.py)
        # Each queue's entry is stored in parts of 32 bits with read and write pointers of
        # their own (PartedFIFO): no one pointer reaches all of the head's LUT RAM cells.
        if c.slices:
            def queue_fifo(width, depth):
                return PartedFIFO(PartedFIFO.split(width, 32), depth)
        else:
            queue_fifo = fifo.SyncFIFOBuffered
        queues = {
            isa.Queue.LOAD: queue_fifo(width=QUEUE_ENTRY.size, depth=c.load_depth),
            isa.Queue.EXECUTE: queue_fifo(width=QUEUE_ENTRY.size, depth=c.execute_depth),
            isa.Queue.STORE: queue_fifo(width=QUEUE_ENTRY.size, depth=c.store_depth),
        }
        for q, f in queues.items():
            m.submodules[f"{q.name.lower()}_queue"] = f
        qentry = Signal(QUEUE_ENTRY)
        m.d.comb += [qentry.cmd.eq(cur.cmd), qentry.index.eq(cur.index)]
        for f in queues.values():
            m.d.comb += f.w_data.eq(qentry)

        seen_setpp = Signal()
        pp_static = Signal(16)
        ended = Signal()
        wb, wl = self.win_base, self.win_limit
        if c.slices:
            # (fast clock) the window compares read copies of the window of their own, a cycle
            # late: the window is set as the run starts, and the first command's compares
            # come dozens of cycles after (its fetch, CHECK1, SPAN)
            wb, wl = _registered(m, wb, "chk_win_base"), _registered(m, wl, "chk_win_limit")

        # Check 1 (registered): every quantity the checks compare, for every command type.
        L, S, C, P = cmd.load, cmd.store, cmd.compute, cmd.pool
        chk = {}

        def reg(name, expr, width=None):
            sig = Signal(width or len(Value.cast(expr)), name=f"chk_{name}")
            m.d.sync += sig.eq(expr)
            chk[name] = sig
            return sig

        tgt = Value.cast(L.target)
        is_wide = tgt.matches(isa.Buffer.ACC, isa.Buffer.PARAM)
        width = Mux(tgt == isa.Buffer.INPUT, c.rows, c.cols)
        depth = Signal(17)
        with m.Switch(tgt):
            for b, dep in ((isa.Buffer.INPUT, c.input_depth), (isa.Buffer.WEIGHT, c.weight_depth),
                           (isa.Buffer.ACC, c.acc_depth), (isa.Buffer.PARAM, c.param_depth)):
                with m.Case(b):
                    m.d.comb += depth.eq(dep)
        # (For a fast clock the checks below that take more than a LUT or two are formed in
        # registered steps: the command's copy reaches them over nets that can cross the die
        # (6 to 9 ns in s80, s81 and s85), so little logic may follow. The verdict reads them
        # after SPAN, several cycles on.)
        def zero(name, sizes):
            """Check ``name``: one of ``sizes`` is 0 (for a fast clock each compare registered
            first)."""
            if c.slices:
                sizes = [_registered(m, n == 0, f"chk_{name}_{k}") for k, n in enumerate(sizes)]
                reg(name, Cat(*sizes).any(), 1)
            else:
                reg(name, reduce(operator.or_, [n == 0 for n in sizes]), 1)

        # LOAD
        reg("l_elems", (L.elems < 1) | (L.elems > width), 1)
        zero("l_zero", [L.x_size, L.y_size, L.z_size])
        pad_y, pad_x = L.pad_top + L.pad_bottom, L.pad_left + L.pad_right
        if c.slices:
            pad_y, pad_x = _registered(m, pad_y, "chk_pad_y"), _registered(m, pad_x, "chk_pad_x")
        reg("l_pad", (pad_y > L.y_size) | (pad_x > L.x_size), 1)
        iy = Signal(13)
        ix = Signal(13)
        m.d.comb += [iy.eq(L.y_size - pad_y), ix.eq(L.x_size - pad_x)]
        # span operands: valid from SPAN on (for a fast clock a cycle later, from the second
        # cycle of SPAN; the LOAD's terms read them from its fifth on)
        iy_r, ix_r = Signal(13), Signal(13)
        m.d.sync += [iy_r.eq(iy), ix_r.eq(ix)]
        if c.slices:
            reg("l_nowin", (iy_r == 0) | (ix_r == 0), 1)
        else:
            reg("l_nowin", (iy == 0) | (ix == 0), 1)
        # STORE
        reg("s_elems", (S.elems < 1) | (S.elems > c.cols), 1)
        zero("s_zero", [S.x_size, S.y_size, S.z_size])
        z1 = _nm1(S.z_size)                 # (z - 1) * 3 as a shift and an add: no multiplier
        if c.slices:
            z1 = _registered(m, z1, "chk_s_z1")
        z3 = (z1 << 1) + z1 + 2
        reg("s_param", pp_static + (_registered(m, z3, "chk_s_z3") if c.slices else z3)
            >= c.param_depth, 1)
        # COMPUTE
        zero("c_zero", [C.x_size, C.y_size, C.kx_size, C.ky_size, C.kz_size])
        # POOL
        reg("p_win", (P.win_w < 1) | (P.win_h < 1), 1)
        zero("p_zero", [P.x_size, P.y_size])

        # Spans (the last row or byte a strided block touches), one multiply-add a cycle on
        # one shared multiplier: span[i] = base + sum((n - 1) * stride) over the command's
        # terms (COMPUTE also forms kz * ky * kx for its weight rows). Up to 9 cycles.
        span = [Signal(48, name=f"span_{i}") for i in range(3)]
        tiles = Signal(36)
        step = Signal(4)
        ma = Signal(13)
        mb = Signal(24)
        msub = Signal()
        reads_tiles = Signal()      # the term at `step` reads `tiles`
        dest = Signal(2)            # 0..2: span[dest] += ma * mb; 3: tiles = ma * mb
        nsteps = Signal(4)
        A, B, Cc, T = 0, 1, 2, 3
        # Per opcode: (span, base, [(n, stride), ...]) for each span it checks, as in
        # GoldenNpu's checks; COMPUTE first forms its tile count kz * ky * kx (dest T).
        spans = {
            isa.Opcode.LOAD: [
                (A, L.sram_addr, [(L.z_size, L.sram_z_stride), (L.y_size, L.sram_y_stride),
                                  (L.x_size, L.sram_x_stride)]),
                (B, L.dram_addr + Mux(is_wide, L.elems << 2, L.elems) - 1,
                 [(L.z_size, L.dram_z_stride), (iy_r, L.dram_y_stride),
                  (ix_r, L.dram_x_stride)])],
            isa.Opcode.STORE: [
                (A, S.acc_addr, [(S.z_size, S.acc_z_stride), (S.y_size, S.acc_y_stride),
                                 (S.x_size, S.acc_x_stride)]),
                (B, S.elems - 1, [(S.z_size, S.dram_z_stride), (S.y_size, S.dram_y_stride),
                                  (S.x_size, S.dram_x_stride)])],
            isa.Opcode.COMPUTE: [
                (B, C.in_addr, [(C.y_size, C.in_y_stride), (C.x_size, C.in_x_stride),
                                (C.kz_size, C.in_kz_stride), (C.ky_size, C.in_ky_stride),
                                (C.kx_size, C.in_kx_stride)]),
                (Cc, C.acc_addr, [(C.y_size, C.acc_y_stride), (C.x_size, C.acc_x_stride)])],
            isa.Opcode.POOL: [
                (B, P.in_addr, [(P.y_size, P.in_y_stride), (P.x_size, P.in_x_stride),
                                (P.win_h, P.win_y_stride), (P.win_w, P.win_x_stride)]),
                (Cc, P.acc_addr, [(P.y_size, P.acc_y_stride), (P.x_size, P.acc_x_stride)])],
        }
        # A span term (n - 1) * stride is formed as n * stride - stride: the subtraction of
        # the stride (`sub`) happens as the product is accumulated, not before the multiplier.
        tiles_operand = tiles[:24]
        pre = {isa.Opcode.COMPUTE: [(C.kz_size, C.ky_size, T, 0),
                                    (C.kx_size, tiles_operand, T, 0)]}
        programs = {o: pre.get(o, []) + [(n, st, d, 1) for d, _, ts in sp for n, st in ts]
                    for o, sp in spans.items()}
        inits = {o: [(d, base) for d, base, _ in sp] for o, sp in spans.items()}
        # Each opcode's term at `step`, and the one of the command's opcode chosen as an
        # AND-OR by one-hot flags (for a fast clock registered from the fetch buffer's head
        # as the command's copy is: no opcode decode in front of the operand registers).
        if c.slices:
            op_is = {o: _registered(m, cur.cmd.header.op == o, f"chk_is_{o.name.lower()}")
                     for o in programs}
        else:
            op_is = {o: op == o for o in programs}
        sigs = {"ma": ma, "mb": mb, "dest": dest, "msub": msub, "reads_tiles": reads_tiles}
        chosen = {n: [] for n in sigs}
        # (a fast clock with a multi-cycle span multiplier registers each opcode's operands
        # at `step` before they are ORed: the choice by step and the one by opcode are not
        # one path; a term then waits a cycle more for its operands, below)
        staged = c.slices and c.span_steps > 1
        # (for a fast clock each opcode keeps `step` one-hot in a register of its own, and
        # its terms are chosen as an AND-OR by those flip-flops: no decode of `step` shared
        # by every opcode's multiplexers (s81: 10.74 ns from `step` through four LUTs of
        # other opcodes' choices))
        step_onehot = {}
        for o, terms in programs.items():
            own = {n: Signal.like(sig, name=f"span_{o.name.lower()}_{n}")
                   for n, sig in sigs.items()}
            values = [{"ma": a, "mb": b, "dest": d, "msub": sub,
                       "reads_tiles": int(b is tiles_operand)} for a, b, d, sub in terms]
            if c.slices:
                onehot = Signal(len(terms) + 1, name=f"span_{o.name.lower()}_step", init=1)
                step_onehot[o] = onehot
                for n in values[0]:
                    m.d.comb += own[n].eq(reduce(operator.or_, [
                        Mux(onehot[k], v[n], 0) for k, v in enumerate(values)]))
            else:
                with m.Switch(step):
                    for k, v in enumerate(values):
                        with m.Case(k):
                            m.d.comb += [own[n].eq(x) for n, x in v.items()]
            for n, v in own.items():
                if staged and n in ("ma", "mb", "msub", "dest"):
                    v = _registered(m, v, f"span_{o.name.lower()}_{n}_r")
                chosen[n].append(v & op_is[o].replicate(len(v)))
        # The command's number of terms. (A fast clock's is a register, decoded from the fetch
        # buffer's head as the opcode's flags are: not an AND-OR by those flags in front of
        # SPAN's compare with `step`, and the enables of the multiplier's registers behind it.)
        if not c.slices:
            m.d.comb += nsteps.eq(reduce(operator.or_, [
                Mux(op_is[o], len(terms), 0) for o, terms in programs.items()]))
        else:
            with m.Switch(cur.cmd.header.op):
                for o, terms in programs.items():
                    with m.Case(o):
                        m.d.sync += nsteps.eq(len(terms))
                with m.Default():
                    m.d.sync += nsteps.eq(0)
        m.d.comb += [sigs[n].eq(reduce(operator.or_, vs)) for n, vs in chosen.items()]
        product = Signal(37)
        span_init = Signal()        # decode: load the bases (CHECK1)
        span_step = Signal()        # decode: one term (SPAN)
        span_busy = Signal()        # a term is in the pipeline
        can_step = Signal()         # SPAN may start a term this cycle
        acc_valid = Signal()        # `product` is a finished term, to accumulate into span[dest]
        acc_dest = Signal(2)
        if c.span_steps == 1:
            # Three register stages a term (operands; product; accumulate), one term a cycle:
            # the multiplier has neither the operand multiplexers nor the accumulating adder in
            # its path. COMPUTE's second term reads `tiles`, written by its first: it waits.
            ma_r = Signal(13)
            mb_r = Signal(24)
            # (for a fast clock the product takes two stages: 7- and 6-bit partial products,
            # then their sum; one term a cycle still)
            stages = 2 + c.slices
            dest_r = [Signal(2, name=f"span_dest_{k}") for k in range(stages)]
            valid_r = [Signal(name=f"span_valid_{k}") for k in range(stages)]
            sub_r = Signal()
            stride_r = Signal(24)       # the stride to subtract, beside the product
            tiles_busy = Signal()       # a term writing `tiles` is in the pipeline
            m.d.comb += [
                span_busy.eq(Cat(*valid_r).any()),
                tiles_busy.eq(Cat(*[v & (d == T) for v, d in zip(valid_r, dest_r)]).any()),
                can_step.eq(~(reads_tiles & tiles_busy)),
                acc_valid.eq(valid_r[-1]), acc_dest.eq(dest_r[-1]),
            ]
            m.d.sync += [ma_r.eq(ma), mb_r.eq(mb), dest_r[0].eq(dest), valid_r[0].eq(span_step),
                         sub_r.eq(msub), stride_r.eq(Mux(sub_r, mb_r, 0))]
            if c.slices:
                p_lo, p_hi = Signal(31), Signal(30)
                stride_r1 = Signal(24)
                m.d.sync += [p_lo.eq(ma_r[:7] * mb_r), p_hi.eq(ma_r[7:] * mb_r),
                             product.eq(p_lo + (p_hi << 7)), stride_r1.eq(stride_r)]
                stride = stride_r1
            else:
                m.d.sync += product.eq(ma_r * mb_r)
                stride = stride_r
            m.d.sync += [r.eq(prev) for lst in (dest_r, valid_r)
                         for r, prev in zip(lst[1:], lst[:-1])]
        else:
            # `span_steps` cycles a term, one term at a time, on a (13 / steps)-bit by 24-bit
            # multiplier and a 37-bit adder: the size less one (the stride is not subtracted
            # afterwards) enters most significant digit first, and the product is formed by
            # Horner's rule, product = product * 2^k + digit * stride.
            k = -(-13 // c.span_steps)
            mcand = Signal(k * c.span_steps)
            mplier = Signal(24)
            mcount = Signal(range(c.span_steps + 1))
            # (the digit's product as shifted adds: a multiplier this narrow would take a DSP;
            # a zero top bit makes the digit unsigned for shift_add_mul)
            partial = shift_add_mul(m, Cat(mcand[-k:], Const(0, 1)), mplier, "span_digit")
            operands_ok = 1
            if c.slices:
                # (fast clock) the term's operands are chosen a cycle ahead, into registers:
                # the choice by opcode and step is not in front of the subtraction. A term
                # starts only when they were chosen with its step (not in the cycle after the
                # bases are loaded or a term started: one more cycle a command)
                ma, mb, msub, dest = (_registered(m, v, f"span_{n}_r") for v, n in
                                      ((ma, "ma"), (mb, "mb"), (msub, "msub"), (dest, "dest")))
                # (nor in the cycle after a term wrote `tiles`, which the next may read; with
                # each opcode's operands registered as well, in neither of the two cycles after)
                operands_ok = Signal(name="span_operands_ok")
                settled = ~span_init & ~span_step & ~(acc_valid & (acc_dest == T))
                m.d.sync += operands_ok.eq(settled)
                operands_ok = operands_ok & _registered(m, operands_ok, "span_settled_2")
            # the digit's product accumulated, a digit at a time (`adding`), the term's last at
            # `last`
            term, adding, last = partial, mcount != 0, mcount == 1
            if c.slices:
                # (fast clock) each digit's partial product is registered before it is
                # accumulated, a cycle later: the shifted adds and the accumulating adder
                # are not in one path (one more cycle a term)
                term = Signal.like(partial, name="span_partial_r", reset_less=True)
                adding, last = Signal(name="span_partial_valid"), Signal()
                m.d.sync += [term.eq(partial), adding.eq(mcount != 0), last.eq(mcount == 1)]
            with m.If(span_step):
                m.d.sync += [mcand.eq((ma - msub)[:13]), mplier.eq(mb), acc_dest.eq(dest),
                             product.eq(0), mcount.eq(c.span_steps)]
            with m.Else():
                with m.If(mcount != 0):
                    m.d.sync += [mcand.eq(mcand << k), mcount.eq(mcount - 1)]
                with m.If(adding):
                    m.d.sync += product.eq((product << k) + term)
            m.d.sync += acc_valid.eq(adding & last)
            m.d.comb += [span_busy.eq((mcount != 0) | adding | acc_valid),
                         can_step.eq(~span_busy & operands_ok)]
            stride = 0
        with m.If(span_init):
            m.d.sync += [step.eq(0), tiles.eq(0)]
        if c.slices:
            # (fast clock) each opcode's bases are formed from the command every cycle into
            # registers of their own, the command's opcode's are chosen into three more, and
            # these are loaded two cycles after CHECK1 (a term's first accumulation comes
            # later still): neither the bases' adders nor the op's choice is in front of the
            # spans', nor the adders behind the choice (s68: 14.5 ns from the command's copy
            # through both)
            base_r = [Signal(48, name=f"span_base_{i}", reset_less=True) for i in range(3)]
            base = [Signal(48, name=f"span_base_next_{i}") for i in range(3)]
            op_bases = {o: [(d, _registered(m, b, f"span_base_{o.name}_{d}")) for d, b in bases]
                        for o, bases in inits.items()}
            with m.Switch(op):
                for o, bases in op_bases.items():
                    with m.Case(o):
                        m.d.comb += [base[d].eq(b) for d, b in bases]
            m.d.sync += [r.eq(b) for r, b in zip(base_r, base)]
            span_load = _registered(m, _registered(m, span_init, "span_load_1"), "span_load")
            with m.If(span_load):
                m.d.sync += [sp.eq(b) for sp, b in zip(span, base_r)]
        else:
            with m.If(span_init), m.Switch(op):
                for o, bases in inits.items():
                    with m.Case(o):
                        m.d.sync += [sp.eq(0) for sp in span]
                        m.d.sync += [span[d].eq(b) for d, b in bases]
        with m.If(span_step):
            m.d.sync += step.eq(step + 1)
        for onehot in step_onehot.values():
            with m.If(span_init):
                m.d.sync += onehot.eq(1)
            with m.If(span_step):
                m.d.sync += onehot.eq(onehot << 1)
        with m.If(acc_valid), m.Switch(acc_dest):
            for i in range(3):
                with m.Case(i):
                    m.d.sync += span[i].eq(span[i] + product - stride)
                with m.Case(T):
                    m.d.sync += tiles.eq(product)
        # tiles * rows as shifts and adds (a constant product would take a DSP)
        wrows = sum((tiles << b) for b in range(c.rows.bit_length()) if c.rows >> b & 1)
        if c.slices:
            # (fast clock) registered before its check: `tiles` is final in SPAN's last cycle,
            # and the verdict reads the checks three cycles after SPAN_DONE
            wrows = _registered(m, wrows, "span_wrows")
        # the weight rows' end, for a fast clock registered before its compare as well (the
        # verdict reads the check two cycles later still)
        w_end = C.wgt_addr + wrows - 1
        if c.slices:
            w_end = _registered(m, w_end, "span_wrows_end")
        span_checks = {
            "l_rows": (span[A] >= depth, 1), "l_hi": (span[B], 48),
            "s_acc": (span[A] >= c.acc_depth, 1), "s_hi": (S.dram_addr + span[B], 48),
            "r_hi": (S.res_addr + span[B], 48),
            "c_wgt": (w_end >= c.weight_depth, 1),
            "c_in": (span[B] >= c.input_depth, 1), "c_acc": (span[Cc] >= c.acc_depth, 1),
            "p_in": (span[B] >= c.input_depth, 1), "p_acc": (span[Cc] >= c.acc_depth, 1),
        }
        for name, (expr, w) in span_checks.items():
            reg(name, expr, w)     # registered every cycle: valid the cycle after SPAN ends
        l_hi, s_hi, r_hi = chk["l_hi"], chk["s_hi"], chk["r_hi"]

        # Header
        if c.slices:
            # (fast clock) the reserved tails are nested: each opcode's runs from a bit of its
            # own to the command's end (END's from bit 8). The check is formed in three
            # registered steps, each a LUT or two deep: the ORs of up to 16 bits of each stretch
            # between two tails' starts, each stretch's OR if the opcode's tail covers it, and
            # their OR. (As one OR of up to 248 bits chosen by the opcode it was the deepest
            # logic behind the command's copy, whose nets cross the die: it ended the slowest
            # path of s80, s81 and s85, 80.8 to 85.1 MHz.) It is valid from WINDOW on (two
            # cycles after SPAN starts, at the latest); the verdict reads it in VERDICT.
            raw = Value.cast(cmd)
            tails = {o: t for o, t in isa.RESERVED_TAILS.items() if t is not None}
            assert all(off + w == len(raw) for off, w in tails.values())
            starts = sorted({off for off, _ in tails.values()})
            stretches = []
            for lo, hi in zip(starts, starts[1:] + [len(raw)]):
                ors = [_registered(m, raw[a:min(a + 16, hi)].any(), f"chk_res_{a}")
                       for a in range(lo, hi, 16)]
                covers = _registered(m, Value.cast(op).matches(
                    *[o.value for o, (off, _) in tails.items() if off <= lo]),
                    f"chk_res_covers_{lo}")
                stretches.append(_registered(m, Cat(*ors).any() & covers, f"chk_res_from_{lo}"))
            reg("reserved", Cat(*stretches).any(), 1)
        else:
            reserved = Signal()
            with m.Switch(op):
                for o in isa.COMMANDS:
                    with m.Case(o):
                        res = getattr(cmd, o.name.lower()).reserved
                        m.d.comb += reserved.eq(Value.cast(res).any())
            reg("reserved", reserved, 1)
        h = cmd.header
        reg("flags", Cat(h.pop_prev, h.pop_next, h.push_prev, h.push_next), 4)
        legal = Value.cast(op).matches(*[o.value for o in isa.Opcode])
        reg("legal", legal, 1)

        # Check 2: decide, in the golden model's order.
        verdict_ok = Signal()
        v_code = Signal(E)
        v_addr = Signal(32)

        def window(lo, hi):
            # (registered for a fast clock, in two steps: the compares, then the verdict and
            # the address; the WINDOW states wait for them)
            k = len(raised_w)
            bad = Signal(name=f"win_bad_{k}")
            addr = Signal(32, name=f"win_addr_{k}")
            below, above = lo < wb, hi > wl
            if c.slices:
                below, above = (_registered(m, v, f"win_{n}_{k}") for v, n in
                                ((below, "below"), (above, "above")))
            dom = m.d.sync if c.slices else m.d.comb
            dom += [bad.eq(below | above), addr.eq(Mux(below, lo, hi))]
            raised_w.append(1)
            return bad, addr
        raised_w = []
        l_win, l_waddr = window(L.dram_addr, l_hi)
        s_win, s_waddr = window(S.dram_addr, s_hi)
        r_win, r_waddr = window(S.res_addr, r_hi)
        flags = chk["flags"]

        def verdict_setter(code_sig, addr_sig):
            """A `fail(code, addr=0)` that sets ``code_sig`` and ``addr_sig``."""
            def fail(code, addr=0):
                m.d.comb += [code_sig.eq(code), addr_sig.eq(addr)]
            return fail
        fail = verdict_setter(v_code, v_addr)

        # Each opcode's checks, in the golden model's order (`fail` sets the verdict).
        def end_checks(fail):
            with m.If(flags.any()):
                fail(E.ILLEGAL_FIELD)

        def load_checks(fail):
            with m.If(flags[0] | flags[2]):          # pop_prev, push_prev
                fail(E.ILLEGAL_FIELD)
            with m.Elif(chk["l_elems"]):
                fail(E.ILLEGAL_FIELD)
            with m.Elif(chk["l_zero"]):
                pass
            with m.Elif(chk["l_pad"]):
                fail(E.ILLEGAL_FIELD)
            with m.Elif(chk["l_rows"]):
                fail(E.BUFFER_OVERFLOW)
            with m.Elif(~chk["l_nowin"] & l_win):
                fail(E.WINDOW, l_waddr)

        def store_checks(fail):
            with m.If(flags[1] | flags[3]):          # pop_next, push_next
                fail(E.ILLEGAL_FIELD)
            with m.Elif(op == isa.Opcode.SETPP):
                pass
            with m.Elif(chk["s_elems"]):
                fail(E.ILLEGAL_FIELD)
            with m.Elif(chk["s_zero"]):
                pass
            with m.Elif(~seen_setpp):
                fail(E.ILLEGAL_FIELD)
            with m.Elif(chk["s_acc"] | chk["s_param"]):
                fail(E.BUFFER_OVERFLOW)
            with m.Elif(s_win):
                fail(E.WINDOW, s_waddr)
            with m.Elif(S.residual & r_win):
                fail(E.WINDOW, r_waddr)

        def compute_checks(fail):
            with m.If(chk["c_zero"]):
                pass
            with m.Elif(chk["c_wgt"] | chk["c_in"] | chk["c_acc"]):
                fail(E.BUFFER_OVERFLOW)

        def pool_checks(fail):
            with m.If(chk["p_win"]):
                fail(E.ILLEGAL_FIELD)
            with m.Elif(chk["p_zero"]):
                pass
            with m.Elif(chk["p_in"] | chk["p_acc"]):
                fail(E.BUFFER_OVERFLOW)

        groups = [((isa.Opcode.END,), end_checks), ((isa.Opcode.LOAD,), load_checks),
                  ((isa.Opcode.STORE, isa.Opcode.SETPP), store_checks),
                  ((isa.Opcode.COMPUTE,), compute_checks), ((isa.Opcode.POOL,), pool_checks)]
        if c.slices:
            # (fast clock) each opcode's verdict is registered (every cycle: its checks and
            # windows hold still from the cycle before VERDICT), and VERDICT chooses among
            # them: the opcode's chain of checks and the fetch's and header's are not one
            # path (s68: 16.3 ns through both)
            def registered_verdict(checks, k):
                code, addr = Signal(E, name=f"v_code_{k}"), Signal(32, name=f"v_addr_{k}")
                checks(verdict_setter(code, addr))
                return (_registered(m, code, f"v_code_{k}_r"),
                        _registered(m, addr, f"v_addr_{k}_r"))
            verdicts = [(ops, registered_verdict(checks, k))
                        for k, (ops, checks) in enumerate(groups)]
            groups = [(ops, lambda fail, v=v: fail(*v)) for ops, v in verdicts]

        with m.If(cur.kind == FetchKind.WINDOW):
            fail(E.WINDOW, cur.addr)
        with m.Elif(cur.kind == FetchKind.BUS_ERROR):
            fail(E.BUS_ERROR, cur.addr)
        with m.Elif(cur.kind == FetchKind.PAST_END):
            fail(E.PROGRAM_END)
        with m.Elif(~chk["legal"]):
            fail(E.ILLEGAL_OPCODE)
        with m.Elif(chk["reserved"]):
            fail(E.ILLEGAL_FIELD)
        with m.Else(), m.Switch(op):
            for ops, checks in groups:
                with m.Case(*ops):
                    checks(fail)
        if c.slices:
            vr_code = Signal(E)
            vr_addr = Signal(32)
        else:
            vr_code, vr_addr = v_code, v_addr
        m.d.comb += verdict_ok.eq(vr_code == E.NONE)

        target_q = Signal(2)
        with m.Switch(op):
            for o, q in isa.QUEUE_OF.items():
                with m.Case(o):
                    m.d.comb += target_q.eq(q)
        room = Signal()
        for q, f in queues.items():
            with m.If(target_q == q):
                m.d.comb += room.eq(f.w_rdy)
        dec_stuck = Signal()
        static_err = Signal()
        if c.slices:
            # (fast clock) CHECK1's loading of the spans' bases is a register, set as the
            # decoder enters CHECK1: the spans' enables do not come from the state's decoding
            span_init_r = Signal(name="span_init_r")
            m.d.sync += span_init_r.eq(0)
            m.d.comb += span_init.eq(span_init_r)
            pop_r = Signal(name="dispatch_pop")
            # (a copy of each queue's push for each part of its entry)
            push_r = {q: [Signal(name=f"dispatch_push_{q.name.lower()}_{KEEP_MARK}{k}")
                          for k in range(len(f.w_en))] for q, f in queues.items()}
            m.d.sync += [pop_r.eq(0)] + [p.eq(0) for q in queues for p in push_r[q]]
            m.d.comb += [fbuf.r_en.eq(pop_r)] + [f.w_en.eq(Cat(*push_r[q]))
                                                  for q, f in queues.items()]
        with m.FSM(name="decode"):
            with m.State("NEXT"), m.If(fbuf.r_rdy):
                if c.slices:
                    m.d.sync += span_init_r.eq(1)
                m.next = "CHECK1"
            with m.State("CHECK1"):
                if not c.slices:
                    m.d.comb += span_init.eq(1)
                m.next = "SPAN"
            with m.State("SPAN"):
                with m.If(step == nsteps), m.If(~span_busy):
                    m.next = "SPAN_DONE"
                with m.Elif(can_step):
                    m.d.comb += span_step.eq(1)
            with m.State("SPAN_DONE"):
                m.next = "WINDOW" if c.slices else "CHECK2"
            if c.slices:
                # a fast clock's three more cycles: the window compares, their verdicts and
                # addresses, then the command's verdict, each registered
                with m.State("WINDOW"):
                    m.next = "WINDOW2"
                with m.State("WINDOW2"):
                    m.next = "VERDICT"
                with m.State("VERDICT"):
                    m.d.sync += [vr_code.eq(v_code), vr_addr.eq(v_addr)]
                    m.next = "CHECK2"
            with m.State("CHECK2"):
                with m.If(~verdict_ok):
                    m.d.comb += static_err.eq(1)
                    m.next = "STOP"
                with m.Elif(op == isa.Opcode.END):
                    m.d.sync += ended.eq(1)
                    m.next = "STOP"
                with m.Else():
                    with m.If(op == isa.Opcode.SETPP):
                        m.d.sync += [seen_setpp.eq(1), pp_static.eq(cmd.setpp.param_addr)]
                    m.next = "DISPATCH"
            with m.State("DISPATCH"):
                with m.If(room):
                    if c.slices:
                        # a fast clock's push and pop come from registers, a cycle later
                        # (POP): the head and the queue's room hold still until then
                        m.d.sync += [p.eq(target_q == q) for q in queues for p in push_r[q]]
                        m.d.sync += pop_r.eq(1)
                        m.next = "POP"
                    else:
                        for q, f in queues.items():
                            m.d.comb += f.w_en.eq(target_q == q)
                        m.d.comb += fbuf.r_en.eq(1)
                        m.next = "NEXT"
                with m.Else():
                    m.d.comb += [dec_stuck.eq(1), self.fetch_stall.eq(1)]
            if c.slices:
                with m.State("POP"):
                    m.next = "NEXT"
            with m.State("STOP"):
                m.d.comb += dec_stuck.eq(ended)
        raised.append((static_err, vr_code, cur.index, vr_addr))

        # ---- tokens ------------------------------------------------------------------------
        D = c.token_depth
        tok = [Signal(range(D + 1), name=f"tokens_{n}") for n in
               ("load_exec", "exec_load", "exec_store", "store_exec")]
        inc = [Signal(name=f"tok_inc_{i}") for i in range(4)]
        dec = [Signal(name=f"tok_dec_{i}") for i in range(4)]
        for i in range(4):
            m.d.sync += tok[i].eq(tok[i] + inc[i] - dec[i])

        def head(q):
            """A unit's command: its queue's head, read in place (the FIFO's output register, or
            its memory, holds it until the unit pops it); whether there is one."""
            f = queues[q]
            return f.r_rdy, data.View(QUEUE_ENTRY, f.r_data)

        # ---- LOAD unit ---------------------------------------------------------------------
        l_active = Signal()
        l_held, l_e = head(isa.Queue.LOAD)
        lh = l_e.cmd.header
        l_ready = Signal()
        m.d.comb += l_ready.eq((~lh.pop_next | (tok[1] != 0)) & (~lh.push_next | (tok[0] != D)))
        m.d.comb += [self.load_cmd.valid.eq(l_held & ~l_active & l_ready),
                     self.load_cmd.payload.eq(l_e.cmd.load)]
        with m.If(self.load_cmd.valid & self.load_cmd.ready):
            m.d.sync += l_active.eq(1)
            m.d.comb += dec[1].eq(lh.pop_next)
        with m.If(self.load_done):
            m.d.sync += l_active.eq(0)
            m.d.comb += [inc[0].eq(lh.push_next), queues[isa.Queue.LOAD].r_en.eq(1)]
        to_acc = Value.cast(l_e.cmd.load.target) == isa.Buffer.ACC
        if c.slices:
            # (fast clock) a register, set and cleared with `l_active`: the EXECUTE unit's
            # issue does not wait on the LOAD queue's head
            l_to_acc = Signal(name="load_to_acc_r")
            with m.If(self.load_cmd.valid & self.load_cmd.ready):
                m.d.sync += l_to_acc.eq(to_acc)
            with m.If(self.load_done):
                m.d.sync += l_to_acc.eq(0)
            m.d.comb += self.load_to_acc.eq(l_to_acc)
        else:
            m.d.comb += self.load_to_acc.eq(l_held & l_active & to_acc)
        m.d.comb += [
            self.load_wait.eq(l_held & ~l_active & ~l_ready),
            self.load_active.eq(l_active),
        ]
        raised.append((self.load_err & l_active, E.BUS_ERROR, l_e.index, self.load_err_addr))

        # ---- EXECUTE unit ------------------------------------------------------------------
        e_held, e_e = head(isa.Queue.EXECUTE)
        eh = e_e.cmd.header
        infl = fifo.SyncFIFOBuffered(width=_INFLIGHT.size, depth=8)
        m.submodules.exec_inflight = infl
        pend = [Signal(range(D + 9), name="pend_exec_load"),
                Signal(range(D + 9), name="pend_exec_store")]
        e_ready = Signal()
        m.d.comb += e_ready.eq((~eh.pop_prev | (tok[0] != 0)) & (~eh.pop_next | (tok[3] != 0)) &
                               (~eh.push_prev | (tok[1] + pend[0] < D)) &
                               (~eh.push_next | (tok[2] + pend[1] < D)) &
                               infl.w_rdy & ~self.load_to_acc)
        issue = Signal()
        if c.slices:
            # For a fast clock the head's token and in-flight checks are registered: a cycle
            # late, they can only be stale on the safe side (the other units' token moves only
            # make room), except after this unit's own issue or a new head, when the register
            # is cleared. LOAD's writes into ACC are checked as they happen.
            e_go = Signal(name="exec_ready_r")
            m.d.sync += e_go.eq(e_held & e_ready & ~issue)
            m.d.comb += self.exec_cmd.valid.eq(e_held & e_go & ~self.load_to_acc)
        else:
            m.d.comb += self.exec_cmd.valid.eq(e_held & e_ready)
        m.d.comb += [self.exec_cmd.payload.eq(e_e.cmd),
                     issue.eq(self.exec_cmd.valid & self.exec_cmd.ready)]
        ientry = Signal(_INFLIGHT)
        m.d.comb += [ientry.push_prev.eq(eh.push_prev), ientry.push_next.eq(eh.push_next),
                     ientry.index.eq(e_e.index), infl.w_data.eq(ientry), infl.w_en.eq(issue)]
        with m.If(issue):
            m.d.comb += [dec[0].eq(eh.pop_prev), dec[3].eq(eh.pop_next),
                         queues[isa.Queue.EXECUTE].r_en.eq(1)]
        ihead = Signal(_INFLIGHT)
        m.d.comb += ihead.eq(infl.r_data)
        with m.If(self.exec_done):
            m.d.comb += [infl.r_en.eq(1), inc[1].eq(ihead.push_prev), inc[2].eq(ihead.push_next)]
        m.d.sync += [
            pend[0].eq(pend[0] + (issue & eh.push_prev) - (self.exec_done & ihead.push_prev)),
            pend[1].eq(pend[1] + (issue & eh.push_next) - (self.exec_done & ihead.push_next)),
        ]
        e_quiet = Signal()
        m.d.comb += e_quiet.eq(~infl.r_rdy & (infl.level == 0))
        m.d.comb += [
            self.exec_wait.eq(e_held & ~e_ready & ~self.load_to_acc),
            self.exec_starved.eq(~e_held & e_quiet),
        ]

        # ---- STORE unit --------------------------------------------------------------------
        s_active = Signal()
        s_held, s_e = head(isa.Queue.STORE)
        sh = s_e.cmd.header
        s_ready = Signal()
        m.d.comb += s_ready.eq((~sh.pop_prev | (tok[2] != 0)) & (~sh.push_prev | (tok[3] != D)))
        pp = Signal(isa.SETPP)
        pp_param = Signal(16)
        m.d.comb += [self.pp_config.eq(pp), self.pp_param.eq(pp_param)]
        s_complete = Signal()
        is_setpp = sh.op == isa.Opcode.SETPP
        pp_load = Signal()
        if c.slices:
            # (fast clock) the configuration is set a cycle after its SETPP completes, from a
            # copy of the queue head taken every cycle: the queue's read pointer and the
            # SETPP's decode do not reach the enable of its ~250 flip-flops. (A STORE's rows
            # reach the post-processor many cycles after the SETPP before it.)
            pp_head = Signal(isa.SETPP, name="pp_head", reset_less=True)
            pp_go = Signal(name="pp_go")
            m.d.sync += [pp_head.eq(s_e.cmd.setpp), pp_go.eq(pp_load)]
            # (and the PARAM address with it: STORE reads it as it takes its next command,
            # which reaches it through a register, a cycle later still)
            with m.If(pp_go):
                m.d.sync += [pp.eq(pp_head), pp_param.eq(pp_head.param_addr)]
        if c.slices:
            # (fast clock) a SETPP completes a cycle after it is found ready, from a register:
            # the queue's head and its decode are not in front of the queue's pop. (Only this
            # unit takes from the tokens it waits on, so they stay ready for that cycle.)
            setpp_go = Signal(name="setpp_go")
            m.d.sync += setpp_go.eq(s_held & ~s_active & s_ready & is_setpp & ~setpp_go)
            with m.If(setpp_go):
                m.d.comb += [pp_load.eq(1), dec[2].eq(sh.pop_prev), s_complete.eq(1)]
        with m.If(s_held & ~s_active & s_ready):
            with m.If(is_setpp):
                if not c.slices:
                    m.d.comb += [pp_load.eq(1), dec[2].eq(sh.pop_prev), s_complete.eq(1)]
                    m.d.sync += [pp.eq(s_e.cmd.setpp), pp_param.eq(s_e.cmd.setpp.param_addr)]
            with m.Else():
                m.d.comb += self.store_cmd.valid.eq(1)
                with m.If(self.store_cmd.ready):
                    m.d.sync += s_active.eq(1)
                    m.d.comb += dec[2].eq(sh.pop_prev)
        m.d.comb += self.store_cmd.payload.eq(s_e.cmd.store)
        with m.If(self.store_done & s_active):
            m.d.comb += s_complete.eq(1)
        with m.If(s_complete):
            m.d.sync += s_active.eq(0)
            m.d.comb += [inc[3].eq(sh.push_prev), queues[isa.Queue.STORE].r_en.eq(1)]
        m.d.comb += [self.store_wait.eq(s_held & ~s_active & ~s_ready),
                     self.store_active.eq(s_active)]
        raised.append((self.store_err & s_active, E.BUS_ERROR, s_e.index, self.store_err_addr))

        # ---- completion and deadlock -------------------------------------------------------
        l_blocked = Signal()
        e_blocked = Signal()
        s_blocked = Signal()
        l_idle = Signal()
        e_idle = Signal()
        s_idle = Signal()
        m.d.comb += [
            l_blocked.eq(l_held & ~l_active & ~l_ready),
            e_blocked.eq(e_held & ~e_ready & e_quiet & ~self.load_to_acc),
            s_blocked.eq(s_held & ~s_active & ~s_ready),
            l_idle.eq(~l_held),
            e_idle.eq(~e_held & e_quiet),
            s_idle.eq(~s_held),
        ]
        quiet = Signal()
        m.d.comb += quiet.eq(dec_stuck & (l_blocked | l_idle) & (e_blocked | e_idle) &
                             (s_blocked | s_idle))
        # (registered: with every unit blocked or idle nothing moves, so a cycle's delay only
        # delays the verdict, and keeps the token logic out of the error registers' paths)
        quiet_r, blocked_r = Signal(), Signal()
        m.d.sync += [quiet_r.eq(quiet), blocked_r.eq(l_blocked | e_blocked | s_blocked)]
        settle = Signal(2)
        with m.If(quiet_r), m.If(settle != 3):
            m.d.sync += settle.eq(settle + 1)
        with m.Else():
            m.d.sync += settle.eq(0)
        deadlock = Signal()
        drained = Signal()
        m.d.comb += [deadlock.eq((settle == 3) & quiet_r & blocked_r),
                     drained.eq((settle == 3) & quiet_r & ~blocked_r & ended)]
        oldest = Signal(32)
        blocked_each = [Signal(name=f"blocked_{u}_r") for u in ("load", "exec", "store")]
        m.d.sync += [b.eq(v) for b, v in zip(blocked_each, (l_blocked, e_blocked, s_blocked))]
        indices = (l_e.index, e_e.index, s_e.index)
        if c.slices:
            # (fast clock) the queue heads' indices registered with the blocked flags: the
            # heads are read from LUT RAM, and the compares start from flip-flops
            indices = [_registered(m, i, f"blocked_{u}_index")
                       for u, i in zip(("load", "exec", "store"), indices)]
        cand = list(zip(blocked_each, indices))
        best = Signal(32, name="oldest_0")
        m.d.comb += best.eq(Mux(cand[0][0], cand[0][1], 0xFFFFFFFF))
        for i, (b, idx) in enumerate(cand[1:], 1):
            if c.slices:
                # (fast clock) one compare a cycle, from registers: the first candidate (or
                # none) is registered with the second, their older with the third (the verdict
                # waits 3 quiet cycles anyway, and the indices hold still through them)
                best, b, idx = (_registered(m, v, f"oldest_r{i}_{k}") for k, v in
                                enumerate((best, b, idx)))
            nb = Signal(32, name=f"oldest_{i}")
            m.d.comb += nb.eq(Mux(b & (idx < best), idx, best))
            best = nb
        m.d.sync += oldest.eq(best)
        raised.append((deadlock, E.TOKEN_DEADLOCK, oldest, 0))

        done = Signal()
        with m.If(drained & ~err_set):
            m.d.sync += done.eq(1)
        m.d.comb += self.done.eq(done)
        m.d.comb += self.retired.eq(self.load_done + self.exec_done + s_complete +
                                    (drained & ~done & ~err_set))
        m.d.comb += [
            self.retire.load_valid.eq(self.load_done & l_active),
            self.retire.load_index.eq(l_e.index),
            self.retire.exec_valid.eq(self.exec_done),
            self.retire.exec_index.eq(ihead.index),
            self.retire.store_valid.eq(s_complete),
            self.retire.store_index.eq(s_e.index),
        ]

        if c.slices:
            # For a fast clock every source of an error is registered first, all alike (their
            # order of priority and the first-error-wins rule are the same a cycle later): the
            # units' bus errors come through their row readers and the AXI master, from
            # blocks across the die, and no longer run on into the error registers.
            late = []
            for k, (cond, code, index, addr) in enumerate(raised):
                r = (Signal(name=f"err_src{k}"), Signal(E, name=f"err_src{k}_code"),
                     Signal(32, name=f"err_src{k}_index"), Signal(32, name=f"err_src{k}_addr"))
                m.d.sync += [r[0].eq(cond), r[1].eq(code), r[2].eq(index), r[3].eq(addr)]
                late.append(r)
            raised = late
        with m.If(~err_set & ~done):
            for cond, code, index, addr in reversed(raised):
                with m.If(cond):
                    m.d.sync += [err_set.eq(1), err_code.eq(code), err_index.eq(index),
                                 err_addr.eq(addr)]
        return m
