"""Banked on-chip buffers on ``amaranth.lib.memory`` with synchronous read ports."""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .slices import KEEP_MARK, kept_copies

__all__ = ["READ_COLLISION_X", "Scratchpad", "read_signature", "write_signature"]

#: The attribute marking a memory whose synchronous reads never use what they return in a
#: cycle in which a write reaches the same row (a registered write port's memories): the
#: FPGA flow lets synthesis return anything then (``gen.bitstream.collision_free_reads``),
#: where it would otherwise add logic that returns the old row.
READ_COLLISION_X = "npugen_read_collision_x"


def write_signature(depth, lanes, lane_shape):
    """A write port as seen by its initiator: ``en``, ``addr``, ``data`` (``lanes`` x
    ``lane_shape``) and a per-lane write ``mask``."""
    return wiring.Signature({
        "en": Out(1),
        "addr": Out(range(depth)),
        "data": Out(data.ArrayLayout(lane_shape, lanes)),
        "mask": Out(lanes, init=(1 << lanes) - 1),
    })


def read_signature(depth, lanes, lane_shape):
    """A synchronous read port as seen by its initiator: ``addr`` and ``en`` in one cycle,
    ``data`` in the next (it holds while ``en`` is low)."""
    return wiring.Signature({
        "en": Out(1, init=1),
        "addr": Out(range(depth)),
        "data": In(data.ArrayLayout(lane_shape, lanes)),
    })


def _is(bank, b, bank_bits):
    return (bank == b) if bank_bits else 1


class Scratchpad(wiring.Component):
    """A buffer of ``depth`` rows of ``lanes`` x ``lane_shape``, split into ``banks`` memories.

    Bank ``b`` holds rows ``[b * depth/banks, (b+1) * depth/banks)`` (the high address bits pick
    the bank), so the two halves of a double-buffered region lie in different block RAMs. Every
    bank is one ``amaranth.lib.memory.Memory`` with one write port (per-lane write enables) and
    ``read_ports`` synchronous read ports, which synthesis maps to block RAM (a memory with
    several read ports is replicated once per port).

    Read latency is one cycle: ``data`` is the row at the ``addr`` of the previous cycle in which
    ``en`` was high. With ``transparent``, a read in the same cycle as a write to the same row
    returns the new data (the accumulator's read-modify-write relies on it); otherwise it returns
    the old data.

    With ``write_register`` (for a fast clock) a write reaches the memories a cycle later, from
    registers: the write port's enables, address and data fan out to the banks from
    flip-flops, not from the writer's logic. For a transparent buffer the behaviour is the
    same: the memories themselves are then not transparent, and a read takes the lanes of the
    write of its cycle and of the write then reaching the memories from bypass registers (no
    transparency logic of the synthesis tool's between the write address and the block RAMs).
    Otherwise a read sees the writes up to two cycles before its own (its writer leaves that
    much time before reading what it wrote). With ``write_register`` the memories themselves
    never serve a read the row that a write reaches in the same cycle (a transparent buffer
    takes it from a bypass register, and otherwise it is a row written in the cycle before
    the read, which the writer does not read back so soon): they carry the attribute
    :data:`READ_COLLISION_X`, with which the FPGA flow leaves such a read's result undefined
    and synthesis adds no logic to return the old row (as it must for a block RAM whose two
    ports' collision is undefined). In simulation a read returns the old row.

    A read port listed in ``read_registers`` (for a fast clock) takes two cycles: each bank's
    output goes into a register first (beside its block RAM), and the bank selection and the
    bypass come after it, so no logic and no other block's control sits between a block RAM and
    a flip-flop. ``data`` is then the row at the ``addr`` of two cycles before, with every write
    up to the cycle of the read (as with one cycle: writes after it are not seen).

    Parameters
    ----------
    depth : int
        Rows; ``depth / banks`` must be a power of two.
    lanes : int
        Elements per row.
    lane_shape : ShapeLike
        Shape of one element: ``signed(8)`` for INPUT/WEIGHT, ``signed(32)`` for ACC/PARAM.
    banks : int
        Memories the rows are split over.
    read_ports : int
        Number of read ports.
    transparent : bool
        Read ports are transparent for the write port.
    write_register : bool
        Register the write port in front of the memories (requires ``transparent``).
    read_registers : tuple of int
        The read ports whose data is registered at the memories' outputs (two-cycle reads).
    addr_registers : tuple of int
        The read ports whose address and enable are registered here (a cycle more of latency),
        in a copy for each group of lanes: the caller gives the address a cycle early, and no
        one flip-flop drives the addresses of all the block RAMs across the die.
    lane_groups : int
        Memories a bank is split into, each holding a group of consecutive lanes (with
        ``write_register``, each group's memories are written from copies of the write
        address and enable of their own).

    Members
    -------
    write : In(write_signature(depth, lanes, lane_shape))
        The write port.
    read : In(read_signature(depth, lanes, lane_shape)).array(read_ports)
        The read ports.
    """

    LATENCY = 1

    def __init__(self, depth, lanes, lane_shape, banks=1, read_ports=1, transparent=False,
                 write_register=False, read_registers=(), addr_registers=(), lane_groups=1):
        for name, value in (("depth", depth), ("lanes", lanes), ("banks", banks),
                            ("read_ports", read_ports)):
            if not isinstance(value, int) or value < 1:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        if depth % banks:
            raise ValueError(f"depth {depth} must be a multiple of banks {banks}")
        bank_depth = depth // banks
        if bank_depth & (bank_depth - 1):
            raise ValueError(f"depth / banks = {bank_depth} must be a power of two")
        self._depth = depth
        self._lanes = lanes
        self._lane_shape = Shape.cast(lane_shape)
        self._banks = banks
        self._read_ports = read_ports
        self._transparent = bool(transparent)
        self._write_register = bool(write_register)
        if not set(read_registers) <= set(range(read_ports)):
            raise ValueError(f"read_registers {read_registers!r} must be ports of "
                             f"0 .. {read_ports - 1}")
        self._read_registers = frozenset(read_registers)
        if not set(addr_registers) <= set(range(read_ports)):
            raise ValueError(f"addr_registers {addr_registers!r} must be ports of "
                             f"0 .. {read_ports - 1}")
        self._addr_registers = frozenset(addr_registers)
        if not isinstance(lane_groups, int) or not 1 <= lane_groups <= lanes:
            raise ValueError(f"lane_groups must be an integer of 1 .. {lanes}, "
                             f"not {lane_groups!r}")
        self._lane_groups = lane_groups
        super().__init__({
            "write": In(write_signature(depth, lanes, lane_shape)),
            "read": In(read_signature(depth, lanes, lane_shape)).array(read_ports),
        })

    @property
    def depth(self):
        return self._depth

    @property
    def lanes(self):
        return self._lanes

    @property
    def banks(self):
        return self._banks

    def read_latency(self, port):
        """Cycles from ``addr`` to ``data`` on read port ``port``: 1, and one more for each of
        its data and address registers."""
        return 1 + (port in self._read_registers) + (port in self._addr_registers)

    def lane_group(self, g):
        """The lanes of group ``g``: ``range``."""
        n = self._lanes
        return range(g * n // self._lane_groups, (g + 1) * n // self._lane_groups)

    def elaborate(self, platform):
        m = Module()
        width = self._lane_shape.width
        bank_depth = self._depth // self._banks
        abits = (bank_depth - 1).bit_length()
        bank_bits = (self._banks - 1).bit_length()

        def split(addr):
            return addr[:abits], addr[abits:abits + bank_bits] if bank_bits else 0

        groups = [self.lane_group(g) for g in range(self._lane_groups)]
        # each read port's address and enable as they reach the memories: the port's, or
        # registers (one for the bypass and the bank choice, a copy for each lane group)
        raddr, ren, g_addr, g_en = [], [], [], []
        for p in range(self._read_ports):
            port = self.read[p]
            if p in self._addr_registers:
                a = Signal.like(port.addr, name=f"read{p}_addr_r", reset_less=True)
                e = Signal(name=f"read{p}_en_r")
                m.d.sync += [a.eq(port.addr), e.eq(port.en)]
                # (reset-less: a read enable tied high then stays a constant, not a LUT of
                # the reset driving every group's copy across the die; a read after a reset
                # changes nothing)
                copies = (kept_copies(m, Cat(port.addr, port.en), len(groups), f"read{p}_ae",
                                      reset_less=True)
                          if len(groups) > 1 else [Cat(a, e)])
                raddr.append(a)
                ren.append(e)
                g_addr.append([c[:len(a)] for c in copies])
                g_en.append([c[len(a)] for c in copies])
            else:
                raddr.append(port.addr)
                ren.append(port.en)
                g_addr.append([port.addr] * len(groups))
                g_en.append([port.en] * len(groups))

        wsrc = self.write
        if self._write_register:
            wsrc = write_signature(self._depth, self._lanes, self._lane_shape).create(
                path=("write_r",))
            m.d.sync += [getattr(wsrc, f).eq(getattr(self.write, f))
                         for f in ("en", "addr", "data", "mask")]
        # each lane group's write address and enable (with write_register and groups, copies
        # of the write register's of their own)
        if self._write_register and len(groups) > 1:
            w_copies = kept_copies(m, Cat(self.write.addr, self.write.en), len(groups), "write_ae")
            g_waddr = [c[:len(wsrc.addr)] for c in w_copies]
            g_wen = [c[len(wsrc.addr)] for c in w_copies]
        else:
            g_waddr, g_wen = [wsrc.addr] * len(groups), [wsrc.en] * len(groups)
        bypass = []     # per read port: (lanes hit, row) pairs, the newest write first
        for p in range(self._read_ports if self._transparent and self._write_register else 0):
            # The memories are not transparent: a read sees the writes that reached them
            # before its cycle. The two after (the write of this cycle, and the one in
            # `write_r` reaching them this cycle) are taken from bypass registers, their
            # address matches formed from the read's address and registers. Each lane group's
            # registers are enabled by its own copy of the read's enable (no one flip-flop
            # enables the bypass registers of all lanes across the die); the match with
            # `write_r` is made per group from its own copies of both addresses. The match
            # with the write of this cycle (whose address comes from the writer) is made once;
            # for a registered read port it is made a cycle later instead, per group, when
            # that write is in `write_r` (with copies of the read's address and enable a
            # cycle on): every match is then formed beside its lanes, from registers, and no
            # match crosses the die.
            # (each lane's match flag a flip-flop of its own, kept: with the mask constant
            # they would be merged into one, steering every lane's multiplexers)
            late = p in self._read_registers
            if late:
                g_ae_d = [kept_copies(m, Cat(g_addr[p][g], g_en[p][g]), 1,
                                      f"read{p}_ae{g}_d")[0] for g in range(len(groups))]
            else:
                match0 = Signal(name=f"read{p}_bypass0_match")
                m.d.comb += match0.eq(self.write.en & (raddr[p] == self.write.addr))
            pairs = []
            for k, w in enumerate((self.write, wsrc)):
                suffix = "_d" if k == 0 and late else ""
                hit = [Signal(name=f"read{p}_bypass{k}_lane{j}{suffix}_{KEEP_MARK}")
                       for j in range(self._lanes)]
                row = Signal(data.ArrayLayout(self._lane_shape, self._lanes),
                             name=f"read{p}_bypass{k}_row{suffix}", reset_less=True)
                for g, group in enumerate(groups):
                    if k == 0 and late:
                        # (the data register's stage: `write_r` holds this write)
                        a_d, e_d = g_ae_d[g][:-1], g_ae_d[g][-1]
                        match, en, w = g_wen[g] & (a_d == g_waddr[g]), e_d, wsrc
                    else:
                        match = match0 if k == 0 else g_wen[g] & (g_addr[p][g] == g_waddr[g])
                        en = g_en[p][g]
                    with m.If(en):
                        m.d.sync += [hit[j].eq(match & w.mask[j]) for j in group]
                        m.d.sync += [row[j].eq(w.data[j]) for j in group]
                pairs.append((hit, row, k == 0 and late))
            bypass.append(pairs)
        selects = []
        for p in range(self._read_ports):
            sel = Signal(range(self._banks), name=f"read{p}_bank")
            with m.If(ren[p]):
                m.d.sync += sel.eq(split(raddr[p])[1])
            sels = [sel] * self._lanes
            if p in self._read_registers:
                # the selection and the bypass follow the data through its register, each
                # lane with a copy of the selection of its own (no one flip-flop steers all
                # lanes' multiplexers across the die)
                sels = (kept_copies(m, sel, self._lanes, f"read{p}_bank_d") if bank_bits
                        else sels)
                if bypass:
                    pairs = []
                    for k, (hit, row, done) in enumerate(bypass[p]):
                        if not done:
                            hit_d = [Signal(name=f"read{p}_bypass{k}_lane{j}_d_{KEEP_MARK}")
                                     for j in range(self._lanes)]
                            row_d = Signal.like(row, name=f"read{p}_bypass{k}_row_d")
                            m.d.sync += [h_d.eq(h) for h_d, h in zip(hit_d, hit)]
                            m.d.sync += row_d.eq(row)
                            hit, row = hit_d, row_d
                        pairs.append((hit, row, True))
                    bypass[p] = pairs
            selects.append(sels)

        raws = [Signal(data.ArrayLayout(self._lane_shape, self._lanes), name=f"read{p}_raw")
                for p in range(self._read_ports)]
        for b in range(self._banks):
            for g, group in enumerate(groups):
                n = len(group)
                mem = memory.Memory(shape=width * n, depth=bank_depth, init=[],
                                    attrs={READ_COLLISION_X: 1} if self._write_register
                                    else None)
                name = f"bank{b}" if len(groups) == 1 else f"bank{b}_g{g}"
                m.submodules[name] = mem
                wp = mem.write_port(granularity=width)
                w_local, w_bank = split(g_waddr[g])
                m.d.comb += [
                    wp.addr.eq(w_local),
                    wp.data.eq(Cat(*(wsrc.data[k] for k in group))),
                    wp.en.eq(wsrc.mask[group.start:group.stop] &
                             (g_wen[g] & _is(w_bank, b, bank_bits)).replicate(n)),
                ]
                transparent = self._transparent and not self._write_register
                for p in range(self._read_ports):
                    rp = mem.read_port(domain="sync",
                                       transparent_for=(wp,) if transparent else ())
                    m.d.comb += [rp.addr.eq(split(g_addr[p][g])[0]), rp.en.eq(g_en[p][g])]
                    out = rp.data
                    if p in self._read_registers:
                        out = Signal.like(rp.data, name=f"{name}_read{p}_data", reset_less=True)
                        m.d.sync += out.eq(rp.data)
                    lanes = data.ArrayLayout(self._lane_shape, n)(out)
                    for i, k in enumerate(group):
                        with m.If(_is(selects[p][k], b, bank_bits)):
                            m.d.comb += raws[p][k].eq(lanes[i])
        for p in range(self._read_ports):
            for k in range(self._lanes):
                value = raws[p][k]
                for hit, row, _ in reversed(bypass[p] if bypass else []):
                    value = Mux(hit[k], row[k], value)
                m.d.comb += self.read[p].data[k].eq(value)
        return m
