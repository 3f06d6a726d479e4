"""Datapath test top: execute unit, INPUT/WEIGHT/ACC/PARAM scratchpads and post-processor."""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import NpuConfig
from .execute import ExecuteUnit
from .postproc import PostProcessor
from .scratchpad import Scratchpad, read_signature, write_signature
from .slices import PartedFIFO, kept_copies, stream_slice

__all__ = ["ExecTop", "pp_request_layout"]


def pp_request_layout(config):
    """A post-processing request: ACC row, first of its three PARAM rows, residual row."""
    return data.StructLayout({
        "acc_addr": range(config.acc_depth),
        "param_addr": range(config.param_depth),
        "residual": data.ArrayLayout(signed(8), config.cols),
        "use_residual": unsigned(1),
    })


class ExecTop(wiring.Component):
    """The compute datapath with plain ports, for tests and for the Verilog of issue 3.

    The memory system and command processor of the full NPU are not here: the buffers are
    written directly through the ``*_wr`` ports, commands are pushed on :attr:`cmd`, ACC rows are
    read back through :attr:`acc_rd`, and post-processed rows are requested on :attr:`pp_req`
    (ACC row + PARAM rows ``param_addr .. + 2`` + residual row) and come out on :attr:`pp_out`.

    ``acc_wr`` may only be used while the execute unit is idle (the execute unit's writes win).
    ``acc_rd`` shares an ACC read port with the post-processing path: use one at a time.
    Latency: ``acc_rd`` 1 cycle (4 for a fast clock: :meth:`acc_read_latency`); ``pp_req``
    to ``pp_out`` 1 + ``PostProcessor.LATENCY`` cycles (for a fast clock,
    :attr:`~hdl.config.NpuConfig.slices`, the post-processor's split pipeline, a row's
    beats but one (it is taken at its first) and six more: the requests pass through a
    slice of two registers, their addresses are registered and copied beside the lanes, the
    ACC rows are registered at the block RAMs' outputs, the rows read wait in a FIFO of five
    and leave through another; the ACC buffer's writes reach its memories a cycle later,
    from registers).

    Parameters
    ----------
    config : NpuConfig
        Array and buffer sizes.
    pp_lanes : int or None
        Lanes the post-processor computes per cycle (default: all ``cols``, one row a cycle).

    Members
    -------
    cmd : In(stream.Signature(hdl.isa.COMMAND))
        COMPUTE and POOL commands for the execute unit.
    done : Out(1)
        One pulse per completed command, in order.
    mac_active : Out(1)
        An input vector enters the array.
    busy : Out(1)
        The execute unit works on a command.
    input_wr, weight_wr, acc_wr, param_wr : In(write_signature(...))
        Buffer write ports (for a fast clock INPUT, WEIGHT and PARAM rows reach their
        memories a cycle later, from registers: a read of a row waits two cycles after its
        write).
    acc_rd : In(read_signature(acc_depth, cols, signed(32)))
        ACC read port.
    pp_config : In(hdl.isa.SETPP)
        Post-processing parameters (for a fast clock, used a cycle after they are set).
    pp_req : In(stream.Signature(pp_request_layout(config)))
        Rows to post-process.
    pp_out : Out(stream.Signature(ArrayLayout(signed(8), cols)))
        Post-processed rows, in order.
    """

    def __init__(self, config, pp_lanes=None):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        self._config = c = config
        self._pp_lanes = pp_lanes
        super().__init__({
            "cmd": In(stream.Signature(isa.COMMAND)),
            "done": Out(1),
            "mac_active": Out(1),
            "busy": Out(1),
            "input_wr": In(write_signature(c.input_depth, c.rows, signed(8))),
            "weight_wr": In(write_signature(c.weight_depth, c.cols, signed(8))),
            "acc_wr": In(write_signature(c.acc_depth, c.cols, signed(32))),
            "param_wr": In(write_signature(c.param_depth, c.cols, signed(32))),
            "acc_rd": In(read_signature(c.acc_depth, c.cols, signed(32))),
            "pp_config": In(isa.SETPP),
            "pp_req": In(stream.Signature(pp_request_layout(c))),
            "pp_out": Out(stream.Signature(data.ArrayLayout(signed(8), c.cols))),
        })

    @property
    def config(self):
        return self._config

    @staticmethod
    def acc_read_latency(config):
        """Cycles from an :attr:`acc_rd` address to its row: 4 for a fast clock (the address
        is registered, then copied beside each lane's block RAMs, and the ACC rows are
        registered at the block RAMs), else 1."""
        return 4 if config.slices else 1

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.execute = exe = ExecuteUnit(c)
        # (for a fast clock the INPUT and WEIGHT buffers' lanes are memories of their own,
        # each written from copies of the write register's address and enable and read from
        # copies of the read address of their own, a cycle later: the block RAMs are pinned
        # beside their lanes, down the array's left edge and along its top)
        rd_regs = (0,) if ExecuteUnit.read_latency(c) == 2 else ()
        m.submodules.input_buf = inp = Scratchpad(c.input_depth, c.rows, signed(8),
                                                  c.input_banks, write_register=c.slices,
                                                  addr_registers=rd_regs,
                                                  lane_groups=c.rows if c.slices else 1)
        m.submodules.weight_buf = wgt = Scratchpad(c.weight_depth, c.cols, signed(8),
                                                   c.weight_banks, write_register=c.slices,
                                                   addr_registers=rd_regs,
                                                   lane_groups=c.cols if c.slices else 1)
        assert inp.read_latency(0) == wgt.read_latency(0) == ExecuteUnit.read_latency(c)
        # (for a fast clock the ACC buffer's lanes are memories of their own, whose read and
        # write addresses are copies of their own: the block RAMs are pinned beside their
        # lanes across the die)
        m.submodules.acc_buf = acc = Scratchpad(c.acc_depth, c.cols, signed(32), c.acc_banks,
                                                read_ports=2, transparent=True,
                                                write_register=c.slices,
                                                read_registers=(0, 1) if c.slices else (),
                                                addr_registers=(0, 1) if c.slices else (),
                                                lane_groups=c.cols if c.slices else 1)
        # (for a fast clock the PARAM buffer is a memory per lane, written from registers and
        # read from copies of its three addresses of its own: three copies of a row of cols
        # int32 in LUT RAM behind one address were nets across the die)
        m.submodules.param_buf = par = Scratchpad(c.param_depth, c.cols, signed(32), 1,
                                                  read_ports=3, write_register=c.slices,
                                                  addr_registers=(0, 1, 2) if c.slices else (),
                                                  lane_groups=c.cols if c.slices else 1)
        wiring.connect(m, wiring.flipped(self.param_wr), par.write)
        m.submodules.postproc = pp = PostProcessor(c.cols, self._pp_lanes, c.pp_steps,
                                                   split=c.slices)

        wiring.connect(m, wiring.flipped(self.cmd), exe.cmd)
        m.d.comb += [self.done.eq(exe.done), self.mac_active.eq(exe.mac_active),
                     self.busy.eq(exe.busy)]
        wiring.connect(m, exe.input_rd, inp.read[0])
        wiring.connect(m, exe.weight_rd, wgt.read[0])
        wiring.connect(m, exe.acc_rd, acc.read[0])
        wiring.connect(m, wiring.flipped(self.input_wr), inp.write)
        wiring.connect(m, wiring.flipped(self.weight_wr), wgt.write)

        # ACC writes: the execute unit's, else the preload port's.
        if c.slices:
            # (fast clock) each lane chooses with the execute unit's mask bit, a copy of its
            # enable of the lane's own (it is all ones as the execute unit writes)
            own = exe.acc_wr.mask
            m.d.comb += [acc.write.en.eq(exe.acc_wr.en | self.acc_wr.en),
                         acc.write.addr.eq(Mux(exe.acc_wr.en, exe.acc_wr.addr,
                                               self.acc_wr.addr)),
                         acc.write.mask.eq(own | self.acc_wr.mask)]
            m.d.comb += [acc.write.data[j].eq(Mux(own[j], exe.acc_wr.data[j],
                                                  self.acc_wr.data[j])) for j in range(c.cols)]
        else:
            with m.If(exe.acc_wr.en):
                m.d.comb += [acc.write.en.eq(1), acc.write.addr.eq(exe.acc_wr.addr),
                             acc.write.data.eq(exe.acc_wr.data),
                             acc.write.mask.eq(exe.acc_wr.mask)]
            with m.Else():
                m.d.comb += [acc.write.en.eq(self.acc_wr.en),
                             acc.write.addr.eq(self.acc_wr.addr),
                             acc.write.data.eq(self.acc_wr.data),
                             acc.write.mask.eq(self.acc_wr.mask)]

        # Post-processing: read the ACC row and three PARAM rows, then the post-processor.
        # (for a fast clock requests wait in a slice of two registers: STORE's row reader and
        # the post-processor's input handshake are separate paths, and a request is taken,
        # and its ACC address chosen, from flip-flops)
        req = stream_slice(m, "pp_req_fifo", self.pp_req, skid=True) if c.slices else self.pp_req
        rd = acc.read[1]
        m.d.comb += self.acc_rd.data.eq(rd.data)
        if c.slices:
            # (fast clock) the post-processor reads a copy of its configuration, a cycle late:
            # a STORE's first row reaches it several cycles after the SETPP before it
            cfg = Signal(self.pp_config.shape(), name="pp_config_r")
            m.d.sync += cfg.eq(self.pp_config)
            m.d.comb += pp.config.eq(cfg)
        else:
            m.d.comb += pp.config.eq(self.pp_config)
        row = Signal(pp.i.payload.shape())      # the rows read, with the request's fields
        m.d.comb += [row.acc.eq(rd.data), row.bias.eq(par.read[0].data),
                     row.mult.eq(par.read[1].data)]
        for lane in range(c.cols):
            m.d.comb += row.shift[lane].eq(par.read[2].data[lane][:6])
        if c.slices:
            # For a fast clock the post-processor's pipeline never stalls: its rows go into a
            # FIFO with room for every row in flight, and a row enters only while it has a
            # credit (a free place in that FIFO), so no pipeline enable fans out to its
            # stages. In front of it, a request's ACC address is registered (stage A), and
            # copied from that register beside each lane's block RAMs (B: no logic in front
            # of the nets across the die), the ACC row is registered at the block RAMs (C)
            # while the PARAM rows are read from C's addresses, and the rows (D) go into a
            # FIFO of five; a request is taken only while that FIFO has room for it and those
            # in A to D: no stage stalls, and nothing from the post-processor's input
            # handshake reaches the buffers' addresses.
            depth = pp.LATENCY + pp.beats + 2
            m.submodules.pp_out_fifo = ofifo = fifo.SyncFIFO(
                width=Shape.cast(pp.o.payload.shape()).width, depth=depth)
            credits = Signal(range(depth + 1), init=depth)
            has_credit = Signal(init=1)         # credits != 0, registered with them
            # (the input FIFO is stored a lane a part, each with pointers of its own: a row
            # of cols x 110 bits is some 330 LUT RAM cells)
            fields = ("acc", "bias", "mult", "shift", "residual")
            widths = [sum(Shape.cast(row.shape()[f].shape.elem_shape).width for f in fields)
                      + (j == 0) for j in range(c.cols)]
            m.submodules.pp_in_fifo = ififo = PartedFIFO(widths, depth=5)
            row_out = Signal.like(row, name="pp_in_row")
            w_parts, r_parts = [], []
            for j in range(c.cols):
                own = [row[f][j] for f in fields] + ([row.use_residual] if j == 0 else [])
                out = [row_out[f][j] for f in fields] + (
                    [row_out.use_residual] if j == 0 else [])
                w_parts.append(Cat(*own))
                r_parts.append(Cat(*out))
            m.d.comb += [ififo.w_data.eq(Cat(*w_parts)), Cat(*r_parts).eq(ififo.r_data)]
            queued = Signal(range(6))           # requests in A to D and the input FIFO
            a_valid, b_valid, c_valid = Signal(), Signal(), Signal()
            a_acc = Signal.like(req.payload.acc_addr, reset_less=True)
            a_par = [Signal.like(req.payload.param_addr, name=f"a_param{k}", reset_less=True)
                     for k in range(3)]
            b_par = [Signal.like(a, name=f"b_param{k}", reset_less=True)
                     for k, a in enumerate(a_par)]
            a_res = Signal.like(req.payload.residual, reset_less=True)
            b_res = Signal.like(req.payload.residual, reset_less=True)
            c_res = Signal.like(req.payload.residual, reset_less=True)
            d_res = Signal.like(req.payload.residual, reset_less=True)
            a_use, b_use, c_use, d_use = (Signal(reset_less=True) for _ in range(4))
            take = Signal()
            # (whether a request can be taken, `queued != 5`, is a register of its own, set
            # as `queued` changes: `take` starts from flip-flops, not from a compare)
            has_room = Signal(init=1)
            m.d.comb += [req.ready.eq(has_room), take.eq(req.valid & req.ready)]
            m.d.sync += [a_valid.eq(take), b_valid.eq(a_valid), c_valid.eq(b_valid),
                         b_res.eq(a_res), b_use.eq(a_use), c_res.eq(b_res), c_use.eq(b_use),
                         d_res.eq(c_res), d_use.eq(c_use),
                         *(b.eq(a) for a, b in zip(a_par, b_par))]
            # (stage D's valid: a copy for each lane's part of the input FIFO)
            m.d.comb += ififo.w_en.eq(Cat(*kept_copies(m, c_valid, c.cols, "d_valid")))
            # (the ACC read port's address is a register: a request's address, or else the
            # host's, registered first, and a host read takes four cycles; the port reads
            # every cycle, so no enable fans out to its block RAMs and bypass registers)
            with m.If(take):
                m.d.sync += [a_res.eq(req.payload.residual), a_use.eq(req.payload.use_residual)]
                m.d.sync += [a.eq(req.payload.param_addr + k) for k, a in enumerate(a_par)]
                m.d.sync += a_acc.eq(req.payload.acc_addr)
            with m.Elif(self.acc_rd.en):
                m.d.sync += a_acc.eq(self.acc_rd.addr)
            m.d.comb += [
                rd.addr.eq(a_acc),
                rd.en.eq(1),
                row.residual.eq(d_res), row.use_residual.eq(d_use),
                pp.i.valid.eq(ififo.r_rdy & has_credit), pp.i.payload.eq(row_out),
                ififo.r_en.eq(pp.i.valid & pp.i.ready),
            ]
            # (the PARAM reads' addresses are registered at the buffer, stage C, a copy for
            # each lane; it reads every cycle)
            m.d.comb += [p.en.eq(1) for p in par.read]
            m.d.comb += [p.addr.eq(a) for p, a in zip(par.read, b_par)]
            queued_next = Signal.like(queued)
            m.d.comb += queued_next.eq(queued + take - ififo.r_en)
            m.d.sync += [queued.eq(queued_next), has_room.eq(queued_next != 5)]
            out = self.pp_out
            m.d.comb += [pp.o.ready.eq(1), ofifo.w_en.eq(pp.o.valid),
                         ofifo.w_data.eq(pp.o.payload), out.valid.eq(ofifo.r_rdy),
                         out.payload.eq(ofifo.r_data), ofifo.r_en.eq(out.ready)]
            credits_next = Signal.like(credits)
            m.d.comb += credits_next.eq(credits - (pp.i.valid & pp.i.ready) +
                                        (out.valid & out.ready))
            m.d.sync += [credits.eq(credits_next), has_credit.eq(credits_next != 0)]
            return m

        st_valid = Signal()
        st_residual = Signal(data.ArrayLayout(signed(8), c.cols), reset_less=True)
        st_use = Signal()
        accept = Signal()
        m.d.comb += [req.ready.eq(~st_valid | pp.i.ready), accept.eq(req.valid & req.ready)]
        with m.If(accept):
            m.d.sync += [st_valid.eq(1), st_residual.eq(req.payload.residual),
                         st_use.eq(req.payload.use_residual)]
        with m.Elif(pp.i.ready):
            m.d.sync += st_valid.eq(0)
        m.d.comb += [
            rd.addr.eq(Mux(accept, req.payload.acc_addr, self.acc_rd.addr)),
            rd.en.eq(accept | (self.acc_rd.en & ~st_valid)),
        ]
        for k in range(3):
            m.d.comb += [par.read[k].addr.eq(req.payload.param_addr + k),
                         par.read[k].en.eq(accept)]
        m.d.comb += [row.residual.eq(st_residual), row.use_residual.eq(st_use),
                     pp.i.valid.eq(st_valid), pp.i.payload.eq(row)]
        wiring.connect(m, pp.o, wiring.flipped(self.pp_out))
        return m
