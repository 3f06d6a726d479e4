"""The NPU top: AXI4 memory master, AXI4-Lite control slave, interrupt."""

from amaranth.hdl import (
    Cat,
    ClockDomain,
    ClockSignal,
    DomainRenamer,
    Module,
    Mux,
    ResetInserter,
    Signal,
    Value,
)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .axi import AxiMaster, axi4_lite_signature, axi4_signature
from .command import CommandProcessor
from .csr import CsrBank
from .dma import DmaLoad, DmaStore
from .exec_top import ExecTop
from .slices import KEEP_MARK

__all__ = ["Npu", "TRACE_SIGNATURE", "RUN_RESETS"]

#: Name prefix of the units' run resets (a fast clock's): flip-flops with the same
#: inputs, which synthesis would merge into one unless told to keep them (gen.bitstream does).
RUN_RESETS = f"run_reset_{KEEP_MARK}_"

#: The simulation trace port: per unit, the program index of the command completing this cycle.
TRACE_SIGNATURE = wiring.Signature({
    **{f"{u}_{f}": Out(w) for u in ("load", "exec", "store") for f, w in (("valid", 1),
                                                                           ("index", 32))},
    "mac_active": Out(1),
})


def _command_wire(m, name, src, dst):
    wiring.connect(m, src, dst)


def _command_register(m, name, src, dst, held=False):
    """A command from the command processor (``src``) to its unit (``dst``) through registers
    (a fast clock's): the unit reads a copy of the command, so the queue head's outputs drive
    one register each, not the unit's logic across the die.

    The copy is the head a cycle late. The head holds still from the cycle a command is
    offered until the unit's completion (EXECUTE's until its issue), and an offer is only
    withdrawn by the issue (or, for EXECUTE, by a LOAD into ACC starting), so the unit is
    offered the copy only from the second cycle of the processor's offer, and both sides see
    the same transfer: ``valid`` is the processor's and the copy's, ``ready`` the unit's
    while the copy is offered. Costs a cycle per command.

    With ``held`` (LOAD and STORE, whose offers only the transfer withdraws: the processor's
    ``valid`` holds from the offer to the transfer, or to a halt, which resets the unit as
    well) ``valid`` is the copy's alone, a flip-flop: the queue head's decode does not reach
    the unit's command registers."""
    payload = Signal(src.payload.shape(), name=f"{name}_r", reset_less=True)
    offered = Signal(name=f"{name}_offered")
    m.d.sync += [payload.eq(src.payload), offered.eq(src.valid & ~src.ready)]
    m.d.comb += [dst.valid.eq(offered if held else src.valid & offered),
                 dst.payload.eq(payload), src.ready.eq(dst.ready & offered)]


class Npu(wiring.Component):
    """The whole accelerator of one :class:`hdl.config.NpuConfig`.

    Structure: :class:`~hdl.csr.CsrBank` (registers) -> run control (here) ->
    :class:`~hdl.command.CommandProcessor` (fetch, checks, queues, tokens) -> LOAD unit
    (:class:`~hdl.dma.DmaLoad` into the scratchpads), EXECUTE unit and post-processor
    (:class:`~hdl.exec_top.ExecTop`), STORE unit (:class:`~hdl.dma.DmaStore`); all memory
    traffic goes through one :class:`~hdl.axi.AxiMaster` (read clients: 0 command fetch,
    1 LOAD, 2 STORE residual).

    Run control: a START (CTRL.start) while idle clears STATUS and the performance counters,
    latches PROG_BASE, PROG_LEN, WIN_BASE and WIN_LIMIT, and releases the command processor and
    the units from reset (BAD_PROGRAM is raised at once instead when PROG_BASE is not 32-byte
    aligned or PROG_LEN is zero). The program ends with done or an error, or CTRL.abort
    (ABORTED). The NPU then *drains*: the units are held in reset, read data is discarded and
    write bursts already announced complete with null strobes; when the bus is quiet, busy falls
    and STATUS.done or STATUS.error, with IRQ_STATUS, are set together. A START while busy (also
    while draining) is ignored and sets STATUS.start_ignored.

    Members
    -------
    m_axi : Out(axi4_signature(32, bus_data_width, bus_id_width))
        Memory.
    s_axil : In(axi4_lite_signature(12, 32))
        Registers (docs/isa.md, Register map).
    irq : Out(1)
        ``|(IRQ_STATUS & IRQ_ENABLE)``.
    busy, done, error : Out(1)
        STATUS.busy, STATUS.done and STATUS.error as levels (for status LEDs).
    trace : Out(TRACE_SIGNATURE)
        Only with ``trace=True`` (simulation): the command each unit completes in a cycle
        (``<unit>_valid``, ``<unit>_index``) and ``mac_active`` (the MAC_ACTIVE event).

    Parameters
    ----------
    config : NpuConfig
    trace : bool
    reset_buffer : callable or None
        For a fast clock (``config.slices``) each unit runs in a clock domain of its own
        (``run_<unit>``, the ``sync`` clock) whose reset is a flip-flop of its own, set while
        the NPU is not running; ``reset_buffer(m, signal, name)`` returns what drives that
        reset (adding what it needs to the module ``m``), e.g. the signal through a global
        buffer: an FPGA's clock network, which reaches the resets of thousands of flip-flops
        in a few nanoseconds wherever they are placed. Default: the flip-flop.
    """

    def __init__(self, config, *, trace=False, reset_buffer=None):
        self._config = c = config
        self._trace = bool(trace)
        self._reset_buffer = reset_buffer
        ports = {
            "m_axi": Out(axi4_signature(32, c.bus_data_width, c.bus_id_width)),
            "s_axil": In(axi4_lite_signature(CsrBank.ADDR_WIDTH, 32)),
            "irq": Out(1),
            "busy": Out(1), "done": Out(1), "error": Out(1),
        }
        if trace:
            ports["trace"] = Out(TRACE_SIGNATURE)
        super().__init__(ports)

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        E = isa.ErrorCode
        PC = isa.PerfCounter

        m.submodules.csr = csr = CsrBank(c)
        wiring.connect(m, wiring.flipped(self.s_axil), csr.bus)
        m.d.comb += self.irq.eq(csr.irq)

        m.submodules.axi = axi = AxiMaster(c, read_clients=3)
        wiring.connect(m, axi.bus, wiring.flipped(self.m_axi))

        running = Signal()
        cp = CommandProcessor(c)
        ld = DmaLoad(c)
        st = DmaStore(c)
        exe = ExecTop(c, c.pp_lanes)
        units = {"command": cp, "dma_load": ld, "dma_store": st, "datapath": exe}
        # The units are held in reset while not running. For a fast clock each unit runs in a
        # domain of its own whose reset is a flip-flop of its own (`halts`, set as `running` is
        # cleared; the sync reset sets it a cycle later): no one flip-flop drives the reset of
        # every unit across the die, and the domain's reset is that flip-flop alone (or what the
        # reset buffer makes of it), not an OR with the sync reset. (The FPGA flow keeps the
        # flip-flops from being merged: their names hold KEEP_MARK.)
        halts = {}
        for name, unit in units.items():
            if not c.slices:
                m.submodules[name] = ResetInserter(~running)(unit)
                continue
            halts[name] = halt = Signal(init=1, name=f"{RUN_RESETS}{name}")
            domain = ClockDomain(f"run_{name}", local=True)
            m.domains += domain
            buffer = self._reset_buffer
            m.d.comb += [domain.clk.eq(ClockSignal("sync")),
                         domain.rst.eq(halt if buffer is None else buffer(m, halt, name))]
            m.submodules[name] = DomainRenamer({"sync": f"run_{name}"})(unit)
        # The AXI master flushes while not running. For a fast clock each of its parts takes a
        # flip-flop of its own, set with `running` (kept apart, as the halts are): `running`
        # alone reached every part of the master, and every path through the read beats into
        # the readers started at it.
        flushes = []
        if c.slices:
            flushes = [Signal(init=1, name=f"flush_{g}_{KEEP_MARK}")
                       for g in AxiMaster.flush_groups(c, 3)]
            m.d.comb += axi.flush.eq(Cat(*flushes))
        else:
            m.d.comb += axi.flush.eq(~running)

        def set_running(value):
            return ([running.eq(value)] + [h.eq(~value) for h in halts.values()] +
                    [f.eq(~value) for f in flushes])

        # ---- memory traffic
        wiring.connect(m, cp.rd_req, axi.rd_req[0])
        wiring.connect(m, axi.rd_data[0], cp.rd_data)
        wiring.connect(m, ld.rd_req, axi.rd_req[1])
        wiring.connect(m, axi.rd_data[1], ld.rd_data)
        wiring.connect(m, st.rd_req, axi.rd_req[2])
        wiring.connect(m, axi.rd_data[2], st.rd_data)
        wiring.connect(m, st.wr_req, axi.wr_req)
        wiring.connect(m, st.wr_data, axi.wr_data)
        m.d.comb += [st.wr_err.eq(axi.wr_err), st.wr_err_addr.eq(axi.wr_err_addr),
                     st.wr_idle.eq(axi.wr_idle)]

        # ---- units
        command = _command_register if c.slices else _command_wire
        held = {"held": True} if c.slices else {}
        command(m, "load_cmd", cp.load_cmd, ld.cmd, **held)
        # (for a fast clock LOAD's rows reach the scratchpads a cycle later, from registers
        # below: its completion is delayed with them)
        ld_done = ld.done
        if c.slices:
            ld_done = Signal(name="load_done_r")
            m.d.sync += ld_done.eq(ld.done)
        m.d.comb += [cp.load_done.eq(ld_done), cp.load_err.eq(ld.err),
                     cp.load_err_addr.eq(ld.err_addr)]
        command(m, "exec_cmd", cp.exec_cmd, exe.cmd)
        m.d.comb += cp.exec_done.eq(exe.done)
        command(m, "store_cmd", cp.store_cmd, st.cmd, **held)
        m.d.comb += [cp.store_done.eq(st.done), cp.store_err.eq(st.err),
                     cp.store_err_addr.eq(st.err_addr), st.param_addr.eq(cp.pp_param),
                     exe.pp_config.eq(cp.pp_config)]
        wiring.connect(m, st.pp_req, exe.pp_req)
        wiring.connect(m, exe.pp_out, st.pp_out)
        m.d.comb += [exe.acc_rd.en.eq(0), exe.acc_rd.addr.eq(0)]

        # LOAD rows into the scratchpads. ACC rows wait while the execute unit works (it owns
        # the accumulator's write port then; the command processor issues no EXECUTE command
        # while a LOAD to ACC runs).
        # (For a fast clock LOAD sees the execute unit's busy and its command's target a cycle
        # late: busy falls a cycle later, and it cannot rise under a LOAD to ACC, which no
        # EXECUTE command overlaps and whose first row comes a bus round trip after it starts.)
        wr = ld.wr
        tgt = Value.cast(wr.target)
        if c.slices:
            # (the ready is a register: its inputs, the command's target too, a cycle late)
            wr_ready = Signal(name="load_wr_ready", init=1)
            m.d.sync += wr_ready.eq(~((tgt == isa.Buffer.ACC) & exe.busy))
            m.d.comb += wr.ready.eq(wr_ready)
        else:
            m.d.comb += wr.ready.eq(~((tgt == isa.Buffer.ACC) & exe.busy))
        # (for a fast clock each buffer's write comes from registers of its own, which the
        # placer can put beside that buffer: one write bus from LOAD to all four buffers was
        # a net across the die)
        for port, buf, lanes, bits in ((exe.input_wr, isa.Buffer.INPUT, c.rows, 8),
                                       (exe.weight_wr, isa.Buffer.WEIGHT, c.cols, 8),
                                       (exe.acc_wr, isa.Buffer.ACC, c.cols, 32),
                                       (exe.param_wr, isa.Buffer.PARAM, c.cols, 32)):
            en, addr, data_ = wr.en & (tgt == buf), wr.addr, wr.data[:lanes * bits]
            if c.slices:
                # (kept: the buffers' registers share their inputs, and merged they would be
                # one register again, placed beside one buffer)
                name = f"load_{buf.name.lower()}"
                en_r = Signal(name=f"{name}_en")
                addr_r = Signal.like(port.addr, name=f"{name}_addr_{KEEP_MARK}",
                                     reset_less=True)
                data_r = Signal(lanes * bits, name=f"{name}_data_{KEEP_MARK}", reset_less=True)
                m.d.sync += [en_r.eq(en), addr_r.eq(addr), data_r.eq(data_)]
                en, addr, data_ = en_r, addr_r, data_r
            m.d.comb += [port.en.eq(en), port.addr.eq(addr), port.data.eq(data_),
                         port.mask.eq((1 << lanes) - 1)]

        # ---- run control
        prog_base, prog_len = Signal(32), Signal(32)
        win_base, win_limit = Signal(32), Signal(32)
        m.d.comb += [cp.prog_base.eq(prog_base), cp.prog_len.eq(prog_len),
                     cp.win_base.eq(win_base), cp.win_limit.eq(win_limit)]
        busy = Signal()
        st_done, st_error, st_ignored = Signal(), Signal(), Signal()
        code = Signal(E)
        err_index, err_addr = Signal(32), Signal(32)
        ending_error = Signal()
        # (every bit of the CSR inputs is driven: reserved bits read as 0, never X on Icarus)
        m.d.comb += [csr.status.eq(0), csr.irq_status_set.eq(0)]
        m.d.comb += [
            csr.status.busy.eq(busy), csr.status.done.eq(st_done),
            csr.status.error.eq(st_error), csr.status.start_ignored.eq(st_ignored),
            csr.status.error_code.eq(code),
            csr.err_index.eq(err_index), csr.err_addr.eq(err_addr),
        ]
        m.d.comb += [self.busy.eq(busy), self.done.eq(st_done), self.error.eq(st_error)]
        ctrl = csr.ctrl
        start = Signal()
        abort = Signal()
        bad_program = Signal()
        requests = [start.eq(csr.ctrl_write & ctrl.start & ~ctrl.abort),
                    abort.eq(csr.ctrl_write & ctrl.abort),
                    bad_program.eq((csr.prog_base[:5] != 0) | (csr.prog_len == 0))]
        # (for a fast clock a write of CTRL takes effect a cycle later, from registers: the
        # write pulse and the program's check do not reach the enables of the run's
        # registers and of every performance counter, some 460 flip-flops)
        dom = m.d.sync if c.slices else m.d.comb
        dom += requests
        clear_perf = Signal()
        with m.FSM(name="run"):
            with m.State("IDLE"), m.If(start):
                m.d.comb += clear_perf.eq(1)
                m.d.sync += [st_done.eq(0), st_error.eq(0), st_ignored.eq(0),
                             code.eq(E.NONE), err_index.eq(0), err_addr.eq(0)]
                with m.If(bad_program):
                    m.d.sync += [st_error.eq(1), code.eq(E.BAD_PROGRAM)]
                    m.d.comb += csr.irq_status_set.error.eq(1)
                with m.Else():
                    m.d.sync += set_running(1)
                    m.d.sync += [busy.eq(1), prog_base.eq(csr.prog_base),
                                 prog_len.eq(csr.prog_len), win_base.eq(csr.win_base),
                                 win_limit.eq(csr.win_limit)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(start):
                    m.d.sync += st_ignored.eq(1)
                with m.If(abort):
                    m.d.sync += set_running(0)
                    m.d.sync += [ending_error.eq(1), code.eq(E.ABORTED),
                                 err_index.eq(0), err_addr.eq(0)]
                    m.next = "DRAIN"
                with m.Elif(cp.error):
                    m.d.sync += set_running(0)
                    m.d.sync += [ending_error.eq(1), code.eq(cp.error_code),
                                 err_index.eq(cp.error_index), err_addr.eq(cp.error_addr)]
                    m.next = "DRAIN"
                with m.Elif(cp.done):
                    m.d.sync += set_running(0)
                    m.d.sync += ending_error.eq(0)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(start):
                    m.d.sync += st_ignored.eq(1)
                with m.If(axi.idle):
                    m.d.sync += [busy.eq(0), st_done.eq(~ending_error),
                                 st_error.eq(ending_error)]
                    m.d.comb += [csr.irq_status_set.done.eq(~ending_error),
                                 csr.irq_status_set.error.eq(ending_error)]
                    m.next = "IDLE"

        if self._trace:
            r = cp.retire
            m.d.comb += [getattr(self.trace, f"{u}_{f}").eq(getattr(r, f"{u}_{f}"))
                         for u in ("load", "exec", "store") for f in ("valid", "index")]
            m.d.comb += self.trace.mac_active.eq(exe.mac_active & running)

        # ---- performance counters
        events = {
            PC.CYCLES: running,
            PC.COMMANDS: cp.retired,
            PC.LOAD_BUSY: ld.busy,
            PC.EXECUTE_BUSY: exe.busy,
            PC.STORE_BUSY: st.busy | cp.store_active,
            PC.MAC_ACTIVE: exe.mac_active,
            PC.LOAD_WAIT_TOKEN: cp.load_wait,
            PC.EXECUTE_WAIT_TOKEN: cp.exec_wait,
            PC.STORE_WAIT_TOKEN: cp.store_wait,
            PC.FETCH_STALL: cp.fetch_stall,
            PC.EXECUTE_STARVED: cp.exec_starved,
            PC.LOAD_BUS_STALL: ld.stall,
            PC.STORE_BUS_STALL: st.stall,
        }
        bus = self.m_axi
        bb = c.bus_data_width // 8
        ar, arlen, w, wstrb = (bus.arvalid & bus.arready), bus.arlen, \
            (bus.wvalid & bus.wready), bus.wstrb
        if c.slices:
            # For a fast clock the bus handshakes are registered (and gated by ``running``)
            # before their byte counts are formed: the W strobes come from STORE's data path.
            ar_r, arlen_r = Signal(), Signal.like(arlen)
            w_r, wstrb_r = Signal(), Signal.like(wstrb)
            m.d.sync += [ar_r.eq(ar & running), arlen_r.eq(arlen),
                         w_r.eq(w & running), wstrb_r.eq(wstrb)]
            ar, arlen, w, wstrb = ar_r, arlen_r, w_r, wstrb_r
        read_bytes = Signal(range(256 * bb + 1))
        with m.If(ar):
            m.d.comb += read_bytes.eq((arlen + 1) * bb)
        written = Signal(range(bb + 1))
        with m.If(w):
            m.d.comb += written.eq(sum(wstrb[i] for i in range(bb)))
        events[PC.BYTES_READ] = read_bytes
        events[PC.BYTES_WRITTEN] = written
        gated = {PC.BYTES_READ, PC.BYTES_WRITTEN}
        for counter in isa.perf_counters(c):     # (the others' registers read 0)
            name = f"perf_{counter.name.lower()}"
            value = Signal(c.perf_bits, name=name)
            event = Value.cast(events[counter])
            if c.slices:
                # For a fast clock the event is counted a cycle after it happens, so that the
                # units' event logic and the counter's adder are separate paths; it is gated
                # by ``running`` as it happens (the bus events above already are), so the
                # totals are the same.
                late = Signal(event.shape(), name=f"{name}_event")
                m.d.sync += late.eq(event if counter in gated else Mux(running, event, 0))
                event, gate = late, 1
            else:
                gate = running
            with m.If(clear_perf):
                m.d.sync += value.eq(0)
            with m.Elif(gate):
                m.d.sync += value.eq(value + event)
            m.d.comb += csr.perf[counter.value].eq(value)
        return m
