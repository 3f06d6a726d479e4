"""The execute unit: runs COMPUTE and POOL commands on the systolic array and the accumulator."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import NpuConfig
from .scratchpad import read_signature, write_signature
from .slices import KEEP_MARK, kept_copies, register_slice, stream_slice
from .systolic import SystolicArray

__all__ = ["ExecuteUnit", "AccOp", "JobKind"]


class AccOp(enum.Enum, shape=2):
    """How an accumulator row is updated with a new value."""
    OVERWRITE = 0
    ADD = 1
    MAX = 2


class JobKind(enum.Enum, shape=2):
    """A unit of work inside the execute unit: one weight tile of a COMPUTE, a whole POOL, or a
    marker (a command that does no work, which only signals completion in order)."""
    MARKER = 0
    TILE = 1
    POOL = 2


#: Bits of the row addresses and strides the walkers keep: the ISA's 16. (Narrowing them to
#: the buffers' address widths would be exact, since the static checks keep every row a
#: command touches inside its buffer, but it made Yosys 0.70's ``synth_ecp5`` produce a netlist
#: with conflicting drivers on the accumulator update's data register, which nextpnr rejects.)
ROW_BITS = 16


def job_layout(config):
    """A job as the weight loader and the issuer see it: the fields of its COMPUTE or POOL
    that they use (not the whole command)."""
    ib = ab = wb = ROW_BITS
    return data.StructLayout({
        "kind": JobKind,
        "overwrite": unsigned(1),   # TILE: the first reduction step of a non-accumulating COMPUTE
        "last": unsigned(1),        # the command's last job: signals completion
        "wgt": unsigned(wb),        # TILE: first weight row of the tile
        "in_base": unsigned(ib),    # TILE: input row of vector (0, 0) for this reduction step;
                                    # POOL: the first window's first element
        "acc_addr": unsigned(ab),
        "x_size": unsigned(12), "y_size": unsigned(12),
        "in_x_stride": unsigned(ib), "in_y_stride": unsigned(ib),
        "acc_x_stride": unsigned(ab), "acc_y_stride": unsigned(ab),
        # POOL only
        "mode": isa.PoolMode, "accumulate": unsigned(1),
        "win_w": unsigned(8), "win_h": unsigned(8),
        "win_x_stride": unsigned(ib), "win_y_stride": unsigned(ib),
    })


def _sum_or_max(m, old, new, is_max, fast, name):
    """``(old + new wrapped to 32 bits, new > old)`` for signed 32-bit values. With ``fast``
    (a fast clock) on an adder and a comparator side by side; otherwise on one adder, which
    forms ``old - new`` when ``is_max`` (its sign: ``new > old``) and the sum otherwise, so
    only the result ``is_max`` selects is right."""
    if fast:
        return (old + new)[:32], new > old
    d = Signal(signed(33), name=name)
    m.d.comb += d.eq(old + Mux(is_max, ~new, new) + is_max)
    return d[:32], d[32]


def _walk(job, src, pool):
    """Statements setting ``job``'s walk fields from a COMPUTE or (``pool``) POOL view."""
    names = ["acc_addr", "x_size", "y_size", "in_x_stride", "in_y_stride", "acc_x_stride",
             "acc_y_stride"]
    if pool:
        names += ["mode", "accumulate", "win_w", "win_h", "win_x_stride", "win_y_stride"]
    stmts = [getattr(job, n).eq(getattr(src, n)) for n in names]
    if pool:
        stmts.append(job.in_base.eq(src.in_addr))
    return stmts


class ExecuteUnit(wiring.Component):
    """Executes COMPUTE and POOL commands (docs/isa.md) over the INPUT, WEIGHT and ACC buffers.

    Structure, in pipeline order:

    - a *job generator* takes commands from :attr:`cmd` and splits a COMPUTE into one job per
      reduction step (kz, ky, kx outermost, in that order); a POOL is one job, and a command that
      does no work (a zero size) is a marker job, so its completion is signalled in order;
    - a *weight loader* reads the next tile's ``rows`` weight rows, one per cycle, into the
      array's shadow weights while the current tile streams (the timing rules are those of
      :class:`~hdl.systolic.SystolicArray`);
    - an *issuer* walks the job's vectors (y, then x), reading one INPUT row per cycle into the
      array, the first with the switch flag; the next tile's first vector follows the current
      tile's last vector in the next cycle, so consecutive tiles and consecutive COMPUTE commands
      run back to back once each tile has at least ``rows`` vectors (the next tile's weight
      rows enter the array behind the current tile's switch and before its own; a tile that finds
      the array idle waits ``rows - 1`` cycles for its weights). A POOL waits for the array to
      drain, then reads its window rows, each added or maxed into its output's ACC row (the
      first with the command's operation) by the accumulator update;
    - the *accumulator update* reads the ACC row (transparent read port) and writes back
      overwrite / add / max one cycle later, at one row per cycle. Because the read of a row sees
      a write of the same cycle, rows repeated back to back (acc stride 0) accumulate in order.
      For a fast clock (:attr:`~hdl.config.NpuConfig.slices`) the row read takes two cycles
      (registered at the block RAMs) and is registered again before the update, which takes
      two cycles (the sum and the compare, then the operation's choice) and is written back a
      cycle later; the four rows written after a read of the same row are forwarded to it;
      the INPUT and WEIGHT reads take two cycles (:meth:`read_latency`);
      commands wait in a FIFO of two, and jobs in another between the generator and the loader;
      a POOL's input rows are registered once more; the array's multipliers take
      their operands from registers.

    Latency of a COMPUTE vector: input read 1 (2 for a fast clock) + array ``rows + cols`` (one
    more for a fast clock) + accumulator update 1 (5 for a fast clock) cycles
    (:attr:`LATENCY`), i.e. an ACC row is written ``LATENCY`` cycles after its input read.

    Parameters
    ----------
    config : NpuConfig
        Array and buffer sizes.

    Members
    -------
    cmd : In(stream.Signature(hdl.isa.COMMAND))
        Decoded COMPUTE and POOL commands (any other opcode completes as a no-op).
    done : Out(1)
        One pulse per command, in command order, in the cycle its last ACC write happens.
    mac_active : Out(1)
        An input vector enters the array this cycle (``rows * cols`` MACs).
    busy : Out(1)
        A command is in progress.
    input_rd : Out(read_signature(input_depth, rows, signed(8)))
        INPUT read port.
    weight_rd : Out(read_signature(weight_depth, cols, signed(8)))
        WEIGHT read port.
    acc_rd : Out(read_signature(acc_depth, cols, signed(32)))
        ACC read port for the read-modify-write; must be transparent for ``acc_wr``, and for
        a fast clock take three cycles, its address registered at the buffer
        (``Scratchpad`` ``read_registers`` and ``addr_registers``).
    acc_wr : Out(write_signature(acc_depth, cols, signed(32)))
        ACC write port.
    """

    def __init__(self, config):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        if config.dataflow != "weight_stationary":
            raise ValueError(f"array.dataflow = {config.dataflow!r}: the execute unit "
                             f"implements only 'weight_stationary'")
        self._config = config
        c = config
        self.LATENCY = (self.read_latency(c) + SystolicArray.latency(c.rows, c.cols, c.slices) +
                        1 + 4 * c.slices)
        super().__init__({
            "cmd": In(stream.Signature(isa.COMMAND)),
            "done": Out(1),
            "mac_active": Out(1),
            "busy": Out(1),
            "input_rd": Out(read_signature(c.input_depth, c.rows, signed(8))),
            "weight_rd": Out(read_signature(c.weight_depth, c.cols, signed(8))),
            "acc_rd": Out(read_signature(c.acc_depth, c.cols, signed(32))),
            "acc_wr": Out(write_signature(c.acc_depth, c.cols, signed(32))),
        })

    @property
    def config(self):
        return self._config

    @staticmethod
    def read_latency(config):
        """Cycles from an INPUT or WEIGHT read address to its row that the unit expects: 1, or
        2 for a fast clock (the buffers register the address, in a copy beside each lane's
        block RAMs: ``Scratchpad`` ``addr_registers``)."""
        return 2 if config.slices else 1

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        rows, cols = cfg.rows, cfg.cols
        lanes = min(rows, cols)
        m.submodules.array = array = SystolicArray(rows, cols, registered_operands=cfg.slices,
                                                  data_reset=not cfg.slices)
        alat = array.LATENCY
        ilat = self.read_latency(cfg)

        # -- job generator -------------------------------------------------------------------
        g_valid = Signal()
        JOB = job_layout(cfg)
        ib = ROW_BITS
        g_job = Signal(JOB)
        g_take = Signal()
        t_busy = Signal()
        t_job = Signal(JOB)         # the COMPUTE being split: its walk fields
        t_k = Signal(data.StructLayout({
            "accumulate": 1, "kx_size": 12, "ky_size": 12, "kz_size": 12,
            "in_kx_stride": ib, "in_ky_stride": ib, "in_kz_stride": ib}))
        kx = Signal(12)
        ky = Signal(12)
        kz = Signal(12)
        t_first = Signal()
        t_wgt = Signal(len(g_job.wgt))
        t_in = Signal(ib)
        t_in_ky = Signal(ib)
        t_in_kz = Signal(ib)

        # For a fast clock commands wait in a FIFO of two: ``cmd.ready`` is its room, and the
        # command processor's token logic does not reach the generator's registers.
        def decode(p):
            """(a COMPUTE with work, a POOL with work) of the command ``p``."""
            cp, pp = p.compute, p.pool
            return ((p.header.op == isa.Opcode.COMPUTE) & (cp.x_size != 0) & (cp.y_size != 0) &
                    (cp.kx_size != 0) & (cp.ky_size != 0) & (cp.kz_size != 0),
                    (p.header.op == isa.Opcode.POOL) & (pp.x_size != 0) & (pp.y_size != 0))

        if cfg.slices:
            # (the two decodes are formed as the command enters and wait beside it: the
            # generator's enables start from the FIFO's head, not from compares of its fields)
            entry = stream.Signature(data.StructLayout({
                "cmd": isa.COMMAND, "compute": 1, "pool": 1})).create(path=("cmd_entry",))
            m.d.comb += [entry.valid.eq(self.cmd.valid), self.cmd.ready.eq(entry.ready),
                         entry.payload.cmd.eq(self.cmd.payload)]
            m.d.comb += Cat(entry.payload.compute, entry.payload.pool).eq(
                Cat(*decode(self.cmd.payload)))
            cmd = stream_slice(m, "commands", entry, parted=True)
            queued = cmd.valid
            p = cmd.payload.cmd
            is_compute, is_pool = cmd.payload.compute, cmd.payload.pool
        else:
            cmd, queued = self.cmd, 0
            p = cmd.payload
            is_compute, is_pool = decode(p)
        can_emit = ~g_valid | g_take
        m.d.comb += cmd.ready.eq(~t_busy & can_emit)
        with m.If(g_take):
            m.d.sync += g_valid.eq(0)

        cp, pp = p.compute, p.pool
        walk_start = [
            t_first.eq(1), kx.eq(0), ky.eq(0), kz.eq(0),
            t_wgt.eq(cp.wgt_addr), t_in.eq(cp.in_addr), t_in_ky.eq(cp.in_addr),
            t_in_kz.eq(cp.in_addr),
            *_walk(t_job, cp, pool=False),
            *[getattr(t_k, n).eq(getattr(cp, n)) for n in t_k.shape().members],
            # (the sizes are kept less one: the last index, compared as it is)
            *[getattr(t_k, n).eq(getattr(cp, n) - 1) for n in ("kx_size", "ky_size", "kz_size")],
        ]
        if cfg.slices:
            # (fast clock) the walk's registers take the command on offer while the generator
            # is idle, so that their enable is `t_busy` alone, not the command's opcode and
            # size checks (only a COMPUTE with work that is taken starts the walk, `t_busy`);
            # and whether each of kx, ky and kz is at its last value is a register, set as
            # they count, so the step's enables start from flip-flops
            last_x, last_y, last_z = (Signal(name=f"t_last_{k}") for k in "xyz")
            with m.If(~t_busy):
                m.d.sync += walk_start
                m.d.sync += [last_x.eq(cp.kx_size == 1), last_y.eq(cp.ky_size == 1),
                             last_z.eq(cp.kz_size == 1)]
            with m.Elif(can_emit):
                with m.If(~last_x):
                    m.d.sync += last_x.eq(kx + 1 == t_k.kx_size)
                with m.Else():
                    m.d.sync += last_x.eq(t_k.kx_size == 0)
                    with m.If(~last_y):
                        m.d.sync += last_y.eq(ky + 1 == t_k.ky_size)
                    with m.Else():
                        m.d.sync += [last_y.eq(t_k.ky_size == 0),
                                     last_z.eq(kz + 1 == t_k.kz_size)]
        else:
            last_x = kx == t_k.kx_size
            last_y = ky == t_k.ky_size
            last_z = kz == t_k.kz_size
        with m.If(cmd.valid & cmd.ready):
            with m.If(is_compute):
                m.d.sync += t_busy.eq(1)
                if not cfg.slices:
                    m.d.sync += walk_start
            with m.Else():
                m.d.sync += [
                    g_valid.eq(1),
                    g_job.kind.eq(Mux(is_pool, JobKind.POOL, JobKind.MARKER)),
                    g_job.last.eq(1),
                    *_walk(g_job, pp, pool=True),
                ]
        with m.Elif(t_busy & can_emit):
            m.d.sync += [
                g_valid.eq(1),
                g_job.eq(t_job),
                g_job.kind.eq(JobKind.TILE),
                g_job.overwrite.eq(t_first & ~t_k.accumulate),
                g_job.last.eq(last_x & last_y & last_z),
                g_job.wgt.eq(t_wgt),
                g_job.in_base.eq(t_in),
                t_first.eq(0),
                t_wgt.eq(t_wgt + rows),
            ]
            with m.If(~last_x):
                m.d.sync += [kx.eq(kx + 1), t_in.eq(t_in + t_k.in_kx_stride)]
            with m.Else():
                m.d.sync += kx.eq(0)
                with m.If(~last_y):
                    nxt = t_in_ky + t_k.in_ky_stride
                    m.d.sync += [ky.eq(ky + 1), t_in_ky.eq(nxt), t_in.eq(nxt)]
                with m.Else():
                    m.d.sync += ky.eq(0)
                    with m.If(~last_z):
                        nxt = t_in_kz + t_k.in_kz_stride
                        m.d.sync += [kz.eq(kz + 1), t_in_kz.eq(nxt), t_in_ky.eq(nxt),
                                     t_in.eq(nxt)]
                    with m.Else():
                        m.d.sync += t_busy.eq(0)

        # -- weight loader -------------------------------------------------------------------
        l_valid = Signal()
        l_job = Signal(JOB, reset_less=True)
        l_loaded = Signal()
        l_take = Signal()             # the issuer takes l_job
        seq_left = Signal(range(rows + 1))
        seq_addr = Signal(16)
        seq_row = Signal(range(rows))
        w_en = Signal()
        w_row = Signal(range(rows))

        # The loader's next job: the generator's register, or for a fast clock the head of a
        # FIFO of two after it (the generator, and so ``cmd.ready``, then waits on the FIFO's
        # level, not on the issuer's progress this cycle).
        if cfg.slices:
            room, n_valid, n_job, n_take = register_slice(m, "jobs", g_valid, g_job, JOB)
            m.d.comb += g_take.eq(g_valid & room)
        else:
            n_valid, n_job, n_take = g_valid, g_job, g_take
        # For a fast clock (and a weight tile of more than one row) the take is decided from
        # three registers formed a cycle ahead (the loader's job is ready, the issuer is free
        # or at a TILE's or MARKER's end, the issuer is at a POOL's end with the array
        # drained), in a copy of its own for each group of the registers it enables: the
        # loader's flags, the loader's job, the issuer's job, the issuer's flags, its counters
        # (``take_at``).
        fast_take = cfg.slices and rows > 1
        take_groups = ("loader", "loader_job", "issuer_job", "issuer", "counters")
        if fast_take:
            l_ready_n, c_free_n, c_pool_go_n = Signal(), Signal(), Signal()
            ready, free, pool_go = (
                kept_copies(m, v, len(take_groups), name, init=init)
                for v, name, init in ((l_ready_n, "l_ready", 0), (c_free_n, "c_free", 1),
                                      (c_pool_go_n, "c_pool_go", 0)))
            take_at = {g: Signal(name=f"take_{g}") for g in take_groups}
            m.d.comb += [t.eq(ready[k] & (free[k] | pool_go[k]))
                         for k, t in enumerate(take_at.values())]
            m.d.comb += l_take.eq(take_at["loader"])
        else:
            take_at = dict.fromkeys(take_groups, l_take)
        m.d.comb += n_take.eq(n_valid & (~l_valid | l_take))
        with m.If(l_take):
            m.d.sync += l_valid.eq(0)
        with m.If(n_take):
            m.d.sync += [l_valid.eq(1), l_loaded.eq(n_job.kind != JobKind.TILE)]
        # (the job register takes the FIFO's head whenever it is free or taken, a stale one
        # too, with ``l_valid`` then clear: its enable is one LUT from flip-flops)
        with m.If(~l_valid | take_at["loader_job"]):
            m.d.sync += l_job.eq(n_job)

        start = Signal()
        # seq_left != 0 (for a fast clock a register, set with seq_left)
        seq_run = Signal(name="seq_run") if cfg.slices else seq_left != 0
        m.d.comb += start.eq(l_valid & ~l_loaded & ~seq_run)
        # (the read address is the sequence's next row while it runs, else the job's first:
        # read whether or not the job starts, so that only the sequence's count, not the
        # loader's and issuer's handshakes, chooses the block RAMs' address)
        m.d.comb += self.weight_rd.en.eq(1)
        if cfg.slices:
            # (fast clock) that address is a register of its own, formed a cycle ahead from
            # the next values of the sequence and the job: no multiplexer between flip-flops
            # and the block RAMs
            wgt_rd = Signal.like(seq_addr, name="wgt_rd_addr")
            l_wgt_next = Mux(n_take, n_job.wgt, l_job.wgt)
            with m.If(start):
                m.d.sync += wgt_rd.eq(l_job.wgt + 1 if rows > 1 else l_wgt_next)
            with m.Elif(seq_run):
                m.d.sync += wgt_rd.eq(Mux(seq_left != 1, seq_addr + 1, l_wgt_next))
            with m.Else():
                m.d.sync += wgt_rd.eq(l_wgt_next)
            m.d.comb += self.weight_rd.addr.eq(wgt_rd)
        else:
            m.d.comb += self.weight_rd.addr.eq(Mux(seq_run, seq_addr, l_job.wgt))
        # seq_left <= 1 (for a fast clock a register, set with seq_left)
        seq_near = Signal(name="seq_near", init=1) if cfg.slices else seq_left <= 1
        with m.If(start):
            m.d.sync += [seq_left.eq(rows - 1), seq_addr.eq(l_job.wgt + 1),
                         seq_row.eq(1 % rows), w_en.eq(1), w_row.eq(0)]
            if cfg.slices:
                m.d.sync += [seq_run.eq(rows > 1), seq_near.eq(rows <= 2)]
            with m.If(~l_take):
                m.d.sync += l_loaded.eq(1)
        with m.Elif(seq_run):
            m.d.sync += [seq_left.eq(seq_left - 1), seq_addr.eq(seq_addr + 1),
                         seq_row.eq(seq_row + 1), w_en.eq(1), w_row.eq(seq_row)]
            if cfg.slices:
                m.d.sync += [seq_run.eq(seq_left != 1), seq_near.eq(seq_left <= 2)]
        with m.Else():
            m.d.sync += w_en.eq(0)
        if ilat == 2:
            # (fast clock) the row arrives a cycle later: so do its enable and number
            w_en_d = Signal(name="w_en_d")
            w_row_d = Signal.like(w_row, name="w_row_d")
            m.d.sync += [w_en_d.eq(w_en), w_row_d.eq(w_row)]
        else:
            w_en_d, w_row_d = w_en, w_row
        m.d.comb += [array.w_en.eq(w_en_d), array.w_row.eq(w_row_d),
                     array.w_data.eq(self.weight_rd.data)]

        # -- issuer --------------------------------------------------------------------------
        c_valid = Signal()
        c_job = Signal(JOB)
        c_first = Signal()
        x = Signal(12)
        y = Signal(12)
        wx = Signal(8)
        wy = Signal(8)
        in_row = Signal(ib)     # TILE: vector (y, 0); POOL: window origin of output (y, 0)
        in_cur = Signal(ib)     # TILE: vector (y, x); POOL: window origin of output (y, x)
        win_row = Signal(ib)    # POOL: window row wy
        win_cur = Signal(ib)    # POOL: window element (wy, wx)
        # the INPUT read address: in_cur (TILE) or win_cur (POOL), kept in a register of its
        # own (the block RAMs' address comes from a flip-flop, not from a multiplexer that
        # the job's kind and the pool's wait select)
        rd_cur = Signal(ib)
        acc_row = Signal(len(c_job.acc_addr))
        acc_cur = Signal(len(c_job.acc_addr))
        inflight = Signal(range(alat + 3))

        a_issue = Signal()      # a vector goes to the array
        a_marker = Signal()     # a completion marker goes down the array's tag pipeline
        a_done = Signal()
        p_issue = Signal()      # a window element goes to the accumulator update
        p_first = Signal()
        p_done = Signal()
        job_end = Signal()      # the current job issues its last slot this cycle
        # the counters' last values, registered as the job is taken, and whether each counter
        # is at its last value, registered as it steps (no compare in front of ``job_end``,
        # which decides whether the next job is taken)
        # (each as its last value less one, `*_pen`, compared with the counter as it is, and
        # whether the last value is 0, `*_one`: no adder in front of the compares; a size of
        # one never compares its `*_pen`)
        x_pen, y_pen = Signal(12), Signal(12)
        wx_pen, wy_pen = Signal(8), Signal(8)
        x_one, wx_one, wy_one = (Signal(name=f"{n}_one") for n in ("x", "wx", "wy"))
        last_x, last_y, last_wx, last_wy = Signal(), Signal(), Signal(), Signal()
        # (their next values, which the take's registers formed ahead read)
        nx_x, nx_y, nx_wx, nx_wy = (Signal(name=f"last_{n}_next") for n in ("x", "y", "wx", "wy"))
        m.d.comb += [nx_x.eq(last_x), nx_y.eq(last_y), nx_wx.eq(last_wx), nx_wy.eq(last_wy)]
        m.d.sync += [last_x.eq(nx_x), last_y.eq(nx_y), last_wx.eq(nx_wx), last_wy.eq(nx_wy)]

        # A tile may be taken in the cycle its last weight row is read (``seq_left == 1``, or
        # ``start`` for a single row): the row enters the array the cycle after, the tile's
        # first vector (its switch) a cycle later. Its rows are read only after the previous
        # tile was taken, so they enter the array after that tile's switch.
        if not fast_take:
            next_ready = l_valid & ((l_loaded | start) if rows == 1 else (l_loaded & seq_near))
            m.d.comb += l_take.eq(next_ready & (~c_valid | job_end))

        # the array has drained (inflight == 0; for a fast clock a register, set with inflight)
        drained = Signal(name="drained", init=1) if cfg.slices else inflight == 0
        with m.If(a_issue | a_marker):
            m.d.sync += inflight.eq(alat + 2)
            if cfg.slices:
                m.d.sync += drained.eq(0)
        with m.Elif(inflight != 0):
            m.d.sync += inflight.eq(inflight - 1)
            if cfg.slices:
                m.d.sync += drained.eq(inflight == 1)

        # the job's kind: for a fast clock one-hot registers set as the job is taken (each
        # false while no job is there), so that an issue is a flip-flop, not a decode
        if cfg.slices:
            c_kind = {k: Signal(name=f"c_is_{k.name.lower()}") for k in JobKind}
        else:
            c_kind = {k: c_valid & (c_job.kind == k) for k in JobKind}
        m.d.comb += [self.input_rd.en.eq(1), self.input_rd.addr.eq(rd_cur)]
        with m.If(c_kind[JobKind.MARKER]):
            m.d.comb += [a_marker.eq(1), a_done.eq(1), job_end.eq(1)]
        with m.If(c_kind[JobKind.TILE]):
            m.d.comb += [
                a_issue.eq(1),
                job_end.eq(last_x & last_y),
                a_done.eq(last_x & last_y & c_job.last),
            ]
            m.d.sync += c_first.eq(0)
            with m.If(~last_x):
                nin = in_cur + c_job.in_x_stride
                m.d.comb += nx_x.eq(x == x_pen)
                m.d.sync += [x.eq(x + 1), in_cur.eq(nin), rd_cur.eq(nin),
                             acc_cur.eq(acc_cur + c_job.acc_x_stride)]
            with m.Else():
                nin = in_row + c_job.in_y_stride
                nacc = acc_row + c_job.acc_y_stride
                m.d.comb += [nx_x.eq(x_one), nx_y.eq(y == y_pen)]
                m.d.sync += [x.eq(0), y.eq(y + 1), in_row.eq(nin), in_cur.eq(nin),
                             rd_cur.eq(nin), acc_row.eq(nacc), acc_cur.eq(nacc)]
        with m.If(c_kind[JobKind.POOL] & drained):
            m.d.comb += [
                p_issue.eq(1),
                p_first.eq((wx == 0) & (wy == 0)),
                p_done.eq(last_wx & last_wy & last_x & last_y),
                job_end.eq(last_wx & last_wy & last_x & last_y),
            ]
            with m.If(~last_wx):
                nwin = win_cur + c_job.win_x_stride
                m.d.comb += nx_wx.eq(wx == wx_pen)
                m.d.sync += [wx.eq(wx + 1), win_cur.eq(nwin), rd_cur.eq(nwin)]
            with m.Elif(~last_wy):
                nwin = win_row + c_job.win_y_stride
                m.d.comb += [nx_wx.eq(wx_one), nx_wy.eq(wy == wy_pen)]
                m.d.sync += [wx.eq(0), wy.eq(wy + 1), win_row.eq(nwin), win_cur.eq(nwin),
                             rd_cur.eq(nwin)]
            with m.Else():
                m.d.comb += [nx_wx.eq(wx_one), nx_wy.eq(wy_one)]
                m.d.sync += [wx.eq(0), wy.eq(0)]
                with m.If(~last_x):
                    nin = in_cur + c_job.in_x_stride
                    m.d.comb += nx_x.eq(x == x_pen)
                    m.d.sync += [x.eq(x + 1), in_cur.eq(nin), win_row.eq(nin),
                                 win_cur.eq(nin), rd_cur.eq(nin),
                                 acc_cur.eq(acc_cur + c_job.acc_x_stride)]
                with m.Else():
                    nin = in_row + c_job.in_y_stride
                    nacc = acc_row + c_job.acc_y_stride
                    m.d.comb += [nx_x.eq(x_one), nx_y.eq(y == y_pen)]
                    m.d.sync += [x.eq(0), y.eq(y + 1), in_row.eq(nin), in_cur.eq(nin),
                                 win_row.eq(nin), win_cur.eq(nin), rd_cur.eq(nin),
                                 acc_row.eq(nacc), acc_cur.eq(nacc)]

        # Taking the next job comes last: it overrides the counter updates above.
        nj = l_job
        with m.If(take_at["issuer_job"]):
            m.d.sync += c_job.eq(nj)
        with m.If(take_at["counters"]):
            m.d.comb += [nx_x.eq(nj.x_size == 1), nx_y.eq(nj.y_size == 1),
                         nx_wx.eq(nj.win_w == 1), nx_wy.eq(nj.win_h == 1)]
            m.d.sync += [
                x.eq(0), y.eq(0), wx.eq(0), wy.eq(0),
                x_pen.eq(nj.x_size - 2), y_pen.eq(nj.y_size - 2),
                wx_pen.eq(nj.win_w - 2), wy_pen.eq(nj.win_h - 2),
                x_one.eq(nj.x_size == 1), wx_one.eq(nj.win_w == 1), wy_one.eq(nj.win_h == 1),
                in_row.eq(nj.in_base), in_cur.eq(nj.in_base),
                win_row.eq(nj.in_base), win_cur.eq(nj.in_base), rd_cur.eq(nj.in_base),
                acc_row.eq(nj.acc_addr), acc_cur.eq(nj.acc_addr),
            ]
        if cfg.slices:
            kind_n = {k: Signal(name=f"c_is_{k.name.lower()}_next") for k in JobKind}
            m.d.comb += [kind_n[k].eq(c & ~job_end) for k, c in c_kind.items()]
            m.d.sync += [c.eq(kind_n[k]) for k, c in c_kind.items()]
        with m.If(take_at["issuer"]):
            m.d.sync += [c_valid.eq(1), c_first.eq(1)]
            if cfg.slices:
                m.d.comb += [kind_n[k].eq(nj.kind == k) for k in JobKind]
        with m.Elif(job_end):
            m.d.sync += c_valid.eq(0)
        if fast_take:
            # the take's registers formed ahead (their next values; ``drained``'s as it is set)
            is_tile, is_pool = kind_n[JobKind.TILE], kind_n[JobKind.POOL]
            drained_n = Mux(a_issue | a_marker, 0, Mux(inflight != 0, inflight == 1, drained))
            l_valid_n = Mux(n_take, 1, l_valid & ~l_take)
            l_loaded_n = Mux(n_take, n_job.kind != JobKind.TILE, l_loaded | (start & ~l_take))
            seq_near_n = Mux(start, rows <= 2, Mux(seq_run, seq_left <= 2, seq_near))
            m.d.comb += [
                l_ready_n.eq(l_valid_n & l_loaded_n & seq_near_n),
                c_free_n.eq(~is_pool & (~is_tile | (nx_x & nx_y))),
                c_pool_go_n.eq(is_pool & drained_n & nx_x & nx_y & nx_wx & nx_wy),
            ]

        # -- array path: input read (ilat cycles), array, tag pipeline alongside -------------
        tag_layout = data.StructLayout({"valid": 1, "done": 1, "op": AccOp,
                                        "addr": range(cfg.acc_depth)})
        tag = Signal(tag_layout)
        m.d.comb += [
            tag.valid.eq(a_issue),
            tag.done.eq(a_done),
            tag.op.eq(Mux(c_job.overwrite, AccOp.OVERWRITE, AccOp.ADD)),
            tag.addr.eq(acc_cur),
        ]
        # (the vector and its switch flag reach the array with the row read, ``ilat`` later)
        a_valid1, a_switch1 = a_issue, a_issue & c_first
        for k in range(ilat):
            v_k, s_k = Signal(name=f"a_valid{k + 1}"), Signal(name=f"a_switch{k + 1}")
            m.d.sync += [v_k.eq(a_valid1), s_k.eq(a_switch1)]
            a_valid1, a_switch1 = v_k, s_k
        m.d.comb += [
            array.i_valid.eq(a_valid1),
            array.i_switch.eq(a_switch1),
            array.i_data.eq(self.input_rd.data),
            self.mac_active.eq(a_valid1),
        ]
        tags = [tag]
        for k in range(ilat + alat):
            t_d = Signal(tag_layout, name=f"tag_d{k + 1}")
            m.d.sync += t_d.eq(tags[-1])
            tags.append(t_d)
        a_tail = tags[-1]

        # -- pool path: input read (ilat cycles), row register -------------------------------
        # A window's elements are reduced in the accumulator itself: the first is written
        # with the job's operation (overwrite, or add or max into the row there), the others
        # added or maxed into it, through the same read-modify-write as the array's rows
        # (forwarded back to back), so there is no reducer of its own.
        mode_op = Mux(c_job.mode == isa.PoolMode.MAX, AccOp.MAX, AccOp.ADD)
        p1 = Signal(data.StructLayout({"valid": 1, "done": 1, "op": AccOp,
                                       "addr": range(cfg.acc_depth)}))
        m.d.sync += [
            p1.valid.eq(p_issue), p1.done.eq(p_done),
            p1.op.eq(Mux(p_first & ~c_job.accumulate, AccOp.OVERWRITE, mode_op)),
            p1.addr.eq(acc_cur),
        ]
        # the element's row: the read row with the last of the stages `ilat` after the issue
        # (p1, and for a fast clock p2), for a fast clock both registered once more (a block
        # RAM's output goes to a register)
        p_stages = [p1]
        for k in range(1, ilat):
            p_k = Signal.like(p1, name=f"p{k + 1}")
            m.d.sync += p_k.eq(p_stages[-1])
            p_stages.append(p_k)
        p_rd = p_stages[-1]
        if cfg.slices:
            pin = Signal.like(p1)
            vals = Signal.like(self.input_rd.data, reset_less=True)
            m.d.sync += [pin.eq(p_rd), vals.eq(self.input_rd.data)]
        else:
            pin, vals = p_rd, self.input_rd.data
        pr_valid = Signal()
        pr_done = Signal()
        pr_op = Signal(AccOp)
        pr_addr = Signal(range(cfg.acc_depth))
        pr_data = Signal(data.ArrayLayout(signed(32), cols), reset_less=True)
        m.d.sync += [pr_valid.eq(pin.valid), pr_done.eq(pin.valid & pin.done),
                     pr_op.eq(pin.op), pr_addr.eq(pin.addr)]
        for lane in range(lanes):
            m.d.sync += pr_data[lane].eq(vals[lane])
        for lane in range(lanes, cols):
            # lanes past min(rows, cols): 0 (overwrite, or +0) or INT32_MIN (max keeps the old)
            m.d.sync += pr_data[lane].eq(Mux(pin.op == AccOp.MAX, -2**31, 0))

        # -- accumulator read-modify-write ---------------------------------------------------
        r_valid = Signal()
        r_done = Signal()
        r_op = Signal(AccOp)
        r_addr = Signal(range(cfg.acc_depth))
        m.d.comb += [
            r_valid.eq(a_tail.valid | pr_valid),
            r_done.eq(a_tail.done | pr_done),
            r_op.eq(Mux(pr_valid, pr_op, a_tail.op)),
            r_addr.eq(Mux(pr_valid, pr_addr, a_tail.addr)),
            self.acc_rd.en.eq(1),
        ]
        if cfg.slices:
            # For a fast clock the read address is given a cycle ahead and registered at the
            # ACC buffer, in a copy for each lane's memories. It is itself a register, formed
            # from the stages two before `r` (the choice between the pool's element and the
            # array's row made there): the copies beside the lanes' block RAMs across the die
            # take it from a flip-flop, with no logic in front of the long nets.
            rd_addr = Signal.like(r_addr, name="acc_rd_addr")
            m.d.sync += rd_addr.eq(Mux(p_rd.valid, p_rd.addr, tags[-3].addr))
            m.d.comb += self.acc_rd.addr.eq(rd_addr)
        else:
            m.d.comb += self.acc_rd.addr.eq(r_addr)
        s_valid = Signal()
        s_done = Signal()
        s_op = Signal(AccOp)
        s_addr = Signal(range(cfg.acc_depth))
        s_data = Signal(data.ArrayLayout(signed(32), cols), reset_less=True)
        m.d.sync += [s_valid.eq(r_valid), s_done.eq(r_done), s_op.eq(r_op), s_addr.eq(r_addr)]
        # the pool's row or the array's: for a fast clock each lane chooses with a copy of
        # pr_valid of its own (no one flip-flop steers all lanes' multiplexers)
        pr_sel = (kept_copies(m, pin.valid, cols, "pr_sel") if cfg.slices
                  else [pr_valid] * cols)
        for lane in range(cols):
            m.d.sync += s_data[lane].eq(Mux(pr_sel[lane], pr_data[lane], array.o_data[lane]))
        if cfg.slices:
            # For a fast clock the ACC read takes two cycles (``acc_rd`` is registered at the
            # block RAMs' outputs), the old row is registered before the update, the update
            # takes two stages and is registered before the write: the row read at `r`
            # arrives at `u`, is registered into `t_old`; at `t` the old row is added to the
            # new and compared with it, both registered at `w`, where the operation chooses
            # the result; it is written from a register at `v` (the ACC buffer's write
            # registers and bypass rows, beside its block RAMs across the die, take it from
            # flip-flops, not from the adders). The read sees every write up to its own
            # cycle; the four written after it (the rows then at `s`, `u`, `t` and `w`) are
            # forwarded, the newest first, with their address matches registered ahead.
            def stage(name, valid, done, op, addr, dat):
                regs = (Signal(name=f"{name}_valid"), Signal(name=f"{name}_done"),
                        Signal(AccOp, name=f"{name}_op"),
                        Signal(range(cfg.acc_depth), name=f"{name}_addr"),
                        Signal(data.ArrayLayout(signed(32), cols), name=f"{name}_data",
                               reset_less=True))
                m.d.sync += [r.eq(v) for r, v in zip(regs, (valid, done, op, addr, dat))]
                return regs
            u_valid, u_done, u_op, u_addr, u_data = stage("u", s_valid, s_done, s_op, s_addr,
                                                          s_data)
            t_valid, t_done, t_op, t_addr, t_data = stage("t", u_valid, u_done, u_op, u_addr,
                                                          u_data)
            w_valid, w_done, _, w_addr, w_new = stage("w", t_valid, t_done, t_op, t_addr,
                                                      t_data)
            v_valid, v_done, v_addr = (Signal(name="v_valid"), Signal(name="v_done"),
                                       Signal(range(cfg.acc_depth), name="v_addr"))
            v_res = Signal(data.ArrayLayout(signed(32), cols), name="v_res", reset_less=True)
            m.d.sync += [v_valid.eq(w_valid), v_done.eq(w_done), v_addr.eq(w_addr)]
            t_old = Signal(data.ArrayLayout(signed(32), cols), reset_less=True)
            prev = Signal(data.ArrayLayout(signed(32), cols), reset_less=True)  # written at v - 1
            # The three older rows are forwarded into `t_old` at `u`: the row then at `w` as
            # its result is chosen (`update`), the rows at `v` and written the cycle before
            # from registers (`v_res`, `prev`). Only the newest, the row at `w`, is forwarded
            # into the old row at `t`, as its result is chosen there.
            # The lanes' copies (across the die) take the matches from central registers
            # formed a cycle ahead, from the stages before (`r` becomes `s`, `s` `u`, `u` `t`,
            # `t` `w` and `w` `v`): no compare lies in front of their long nets.
            # - into `t_old` at `u`: the rows then at `w` (`u` with `r`), at `v` (`t` with `r`)
            #   and written the cycle before (`w` with `r`);
            # - into the old row at `t`: the row then at `w` (`s` with `r`), registered twice;
            # - whether `r`'s operation is OVERWRITE and whether ADD, registered twice as well
            #   and then once more for `w`.
            ahead = Signal(6, name="acc_match_ahead")
            m.d.sync += ahead.eq(Cat(
                t_valid & (t_addr == r_addr), w_valid & (w_addr == r_addr),
                s_valid & (s_addr == r_addr), u_valid & (u_addr == r_addr),
                r_op == AccOp.OVERWRITE, r_op == AccOp.ADD))
            lane_ctl = kept_copies(m, ahead, cols, "acc_fwd")
            sel = [kept_copies(m, Cat(c[2], c[4:6]), 1, f"acc_op{lane}")[0]
                   for lane, c in enumerate(lane_ctl)]
            w_sel = [kept_copies(m, c[1:3], 1, f"acc_w_op{lane}")[0] for lane, c in enumerate(sel)]
            m.d.sync += prev.eq(v_res)
            update = Signal(data.ArrayLayout(signed(32), cols), name="acc_update")
            # (each register the old row can be at `t`, `w_sum`, `w_old` and `t_old`, has a
            # copy for its adder and one for its comparator, and the new row a copy for each
            # of those six: every carry chain starts from flip-flops of its own, beside it)
            t_old_s, t_old_c = (Signal.like(t_old, name=f"t_old_{k}_{KEEP_MARK}")
                                for k in ("sum", "cmp"))
            for lane in range(cols):
                fwd_v, fwd_prev, fwd_u = lane_ctl[lane][0], lane_ctl[lane][1], lane_ctl[lane][3]
                value = Mux(fwd_u, update[lane], Mux(fwd_v, v_res[lane],
                                                     Mux(fwd_prev, prev[lane],
                                                         self.acc_rd.data[lane])))
                m.d.sync += [r[lane].eq(value) for r in (t_old, t_old_s, t_old_c)]
            t_news = [u_data.shape()(c) for c in kept_copies(m, u_data, 6, "acc_t_new")]
            # (and with the fourth, `w_new`, the row now at `t`, the sum and compare are formed
            # a stage ahead, from `u` and `t`, and registered)
            pre_sum = Signal(data.ArrayLayout(signed(32), cols), name="acc_pre_sum",
                             reset_less=True)
            pre_wins = Signal(cols, name="acc_pre_wins", reset_less=True)
            for lane in range(cols):
                total, wins = _sum_or_max(m, t_data[lane], u_data[lane], None, True, None)
                m.d.sync += [pre_sum[lane].eq(total), pre_wins[lane].eq(wins)]
            # (the row written is a copy of `v_res` of its own: `v_res` stays beside the
            # adders it feeds back into, the copy goes to the ACC buffer's write registers)
            v_wr = Signal.like(v_res, name=f"v_res_wr_{KEEP_MARK}")
            m.d.sync += [v_res.eq(update), v_wr.eq(update)]
            m.d.comb += [
                self.acc_wr.en.eq(v_valid),
                self.acc_wr.addr.eq(v_addr),
                self.acc_wr.data.eq(v_wr),
                self.done.eq(v_done),
            ]
        else:
            t_valid = v_valid = 0
            w_old, w_new, w_op = self.acc_rd.data, s_data, s_op
            update = self.acc_wr.data
            m.d.comb += [
                self.acc_wr.en.eq(s_valid),
                self.acc_wr.addr.eq(s_addr),
                self.done.eq(s_done),
            ]
        if cfg.slices:
            # (fast clock) the mask is a copy of `v_valid` per lane: all ones as a row is
            # written; the ACC port's owner chooses each lane's writer with it, not with
            # one enable fanning out over the row
            m.d.comb += self.acc_wr.mask.eq(Cat(*kept_copies(m, w_valid, cols, "acc_wr_lane")))
        else:
            m.d.comb += self.acc_wr.mask.eq((1 << cols) - 1)

        def updated(out, old, new, op, name):
            total, new_wins = _sum_or_max(m, old, new, op == AccOp.MAX, cfg.slices, name)
            with m.Switch(op):
                with m.Case(AccOp.OVERWRITE):
                    m.d.comb += out.eq(new)
                with m.Case(AccOp.ADD):
                    m.d.comb += out.eq(total)
                with m.Case(AccOp.MAX):
                    m.d.comb += out.eq(Mux(new_wins, new, old))

        for lane in range(cols):
            if cfg.slices:
                # (fast clock) at `t` the old row (or the newest row forwarded) plus the new
                # and whether the new is greater, at `w` the operation's choice
                fwd_w = sel[lane][0]
                w_ovw, w_add = w_sel[lane]
                old = Mux(fwd_w, update[lane], t_old[lane])
                w_sum, w_sum_s, w_sum_c, w_old, w_old_s, w_old_c = (
                    Signal(signed(32), name=f"acc_w_{n}{lane}{c}", reset_less=True)
                    for n in ("sum", "old") for c in ("", f"_sum_{KEEP_MARK}",
                                                       f"_cmp_{KEEP_MARK}"))
                w_nw = Signal(name=f"acc_w_new_wins{lane}", reset_less=True)
                # (the sum and the compare are formed with each register `old` can be, the
                # three `update` chooses among at `w` and `t_old`, and the choice follows
                # them: the loop from `w` back to `w` is an adder and the choice, not the
                # choice, the forwarding multiplexer and then the adder. The new is greater
                # than the result of a MAX at `w` when it is greater than both of its
                # operands, so the compare's choice does not wait on `w`'s own: no loop runs
                # through the comparators.)
                w_keep = w_ovw | w_nw
                s0, s2, s4 = ((x + t_new[lane])[:32] for x, t_new in
                              zip((w_sum_s, w_old_s, t_old_s[lane]), t_news[:3]))
                c0, c2, c4 = (t_new[lane] > x for x, t_new in
                              zip((w_sum_c, w_old_c, t_old_c[lane]), t_news[3:]))
                s1, c1 = pre_sum[lane], pre_wins[lane]
                total = Mux(fwd_w, Mux(w_add, s0, Mux(w_keep, s1, s2)), s4)
                m.d.sync += [
                    *(r.eq(total) for r in (w_sum, w_sum_s, w_sum_c)),
                    w_nw.eq(Mux(fwd_w, Mux(w_add, c0, c1 & (w_ovw | c2)), c4)),
                    *(r.eq(old) for r in (w_old, w_old_s, w_old_c)),
                ]
                m.d.comb += update[lane].eq(Mux(w_add, w_sum, Mux(w_keep, w_new[lane], w_old)))
            else:
                updated(update[lane], w_old[lane], w_new[lane], w_op, f"acc_d_{lane}")

        pipe_busy = Signal()
        m.d.comb += pipe_busy.eq((inflight != 0) | Cat(p.valid for p in p_stages).any() |
                                 pin.valid | pr_valid | s_valid | t_valid | v_valid |
                                 (u_valid | w_valid if cfg.slices else 0))
        m.d.comb += self.busy.eq(queued | t_busy | g_valid | n_valid | l_valid | c_valid |
                                 pipe_busy)
        return m

