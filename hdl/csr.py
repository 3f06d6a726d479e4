"""AXI4-Lite slave for the NPU's register map, generated from :func:`hdl.isa.registers`."""

from amaranth.hdl import Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .axi import Resp, axi4_lite_signature
from .slices import KEEP_MARK

__all__ = ["CsrBank", "port_name"]


def port_name(reg):
    """Name of the port a register is reached through: ``PROG_BASE`` -> ``prog_base``."""
    return reg.name.lower()


def _defined_bits(reg):
    """Mask of a register's named (not reserved) bits."""
    if not isinstance(reg.layout, data.Layout):
        return 0xFFFF_FFFF
    mask = 0
    for f in reg.fields:
        if not f.name.lstrip("_").startswith("reserved"):
            mask |= ((1 << f.width) - 1) << f.offset
    return mask


def _is_perf(reg):
    return reg.name.startswith("PERF_")


def _is_constant(reg):
    """Read-only registers whose value is fixed at elaboration (ID, VERSION, configuration)."""
    return reg.access == isa.Access.RO and (reg.from_config or reg.reset != 0)


class CsrBank(wiring.Component):
    """The register map of docs/isa.md on an AXI4-Lite slave port.

    Every register comes from ``hdl.isa.registers(config)``: offsets, access and reset values
    (configuration registers included) are never written by hand here. Each kind of register
    becomes a kind of port:

    - RW (PROG_BASE, PROG_LEN, WIN_BASE, WIN_LIMIT, IRQ_ENABLE): an ``Out`` port with the value,
      reset to the register's reset value;
    - WO (CTRL): an ``Out`` port with the value written and ``<name>_write``, a one-cycle pulse;
    - W1C (IRQ_STATUS): an ``Out`` port with the pending bits and ``<name>_set``, an ``In`` port
      whose bits are set in the register (setting wins over a clear in the same cycle);
    - RO with a fixed value (ID, VERSION, HW_CONFIG*, CONFIG_HASH): constants, no port;
    - other RO (STATUS, ERR_INDEX, ERR_ADDR): ``In`` ports, read live;
    - the performance counters: ``perf``, an array of 64-bit ``In`` ports indexed by
      :class:`hdl.isa.PerfCounter`. Reading a low word latches that counter's high word into
      one latch shared by all counters, which a read of any high word returns (read a counter's
      low word, then its high word). A counter the configuration leaves out
      (``perf.counters``) is not driven: it reads 0.

    Unmapped addresses read as zero and ignore writes; every response is OKAY. Byte strobes are
    honoured for RW registers.

    Latency: a read answers one cycle after AR is accepted (three for a fast clock,
    :attr:`~hdl.config.NpuConfig.slices`); a write takes effect (and B is
    valid) one cycle after both AW and W have been accepted.

    Parameters
    ----------
    config : NpuConfig
        Fills the configuration registers' values.

    Members
    -------
    bus : In(axi4_lite_signature(12, 32))
        The AXI4-Lite slave port.
    irq : Out(1)
        ``|(IRQ_STATUS & IRQ_ENABLE)``.
    <register ports> :
        As listed above, named by :func:`port_name`.
    perf : In(unsigned(64)).array(len(PerfCounter))
        Performance counter values.
    """

    ADDR_WIDTH = 12

    def __init__(self, config):
        self._config = config
        self._regs = isa.registers(config)
        members = {"bus": In(axi4_lite_signature(self.ADDR_WIDTH, 32)), "irq": Out(1),
                   "perf": In(unsigned(64)).array(len(isa.PerfCounter))}
        for reg in self._regs:
            if _is_perf(reg) or _is_constant(reg):
                continue
            name = port_name(reg)
            if reg.access == isa.Access.RW:
                if isinstance(reg.layout, data.Layout):
                    # A structured register's reset value is its fields' inits.
                    assert reg.reset == 0, reg
                    members[name] = Out(reg.layout)
                else:
                    members[name] = Out(reg.layout, init=reg.reset)
            elif reg.access == isa.Access.WO:
                members[name] = Out(reg.layout)
                members[f"{name}_write"] = Out(1)
            elif reg.access == isa.Access.W1C:
                members[name] = Out(reg.layout)
                members[f"{name}_set"] = In(reg.layout)
            else:
                members[name] = In(reg.layout)
        super().__init__(members)

    @property
    def registers(self):
        return self._regs

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        regs = self._regs

        # ---- writes: AW and W are taken independently, the write happens when both are held.
        aw_held, w_held = Signal(), Signal()
        aw_addr = Signal(self.ADDR_WIDTH)
        w_data, w_strb = Signal(32), Signal(4)
        b_valid = Signal()
        m.d.comb += [bus.awready.eq(~aw_held), bus.wready.eq(~w_held),
                     bus.bvalid.eq(b_valid), bus.bresp.eq(Resp.OKAY)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_held.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        do_write = Signal()
        fast = bool(self._config.slices)
        # (for a fast clock the write decodes its register first, into a write pulse of its
        # own, writes a cycle later (`w_go`) and then answers on B: the registers' enables do
        # not come from the bus handshake's logic)
        w_go = Signal() if fast else Const(0, 1)
        m.d.comb += do_write.eq(aw_held & w_held & ~b_valid & ~w_go)
        answer = w_go if fast else do_write
        if fast:
            m.d.sync += w_go.eq(do_write)
        with m.If(answer):
            m.d.sync += [b_valid.eq(1), aw_held.eq(0), w_held.eq(0)]
        with m.If(b_valid & bus.bready):
            m.d.sync += b_valid.eq(0)
        byte_mask = Signal(32)
        for i in range(4):
            m.d.comb += byte_mask[8 * i:8 * i + 8].eq(w_strb[i].replicate(8))
        w_word = aw_addr[2:]

        for reg in regs:
            if _is_perf(reg) or _is_constant(reg):
                continue
            port = getattr(self, port_name(reg))
            value = Value.cast(port)
            strb = w_strb
            if fast:
                # (each register with its own write pulse and byte strobes, registered beside
                # it: the registers lie across the die, by the blocks that read them)
                hit = Signal(name=f"w_hit_{reg.name.lower()}")
                strb = Signal(4, name=f"w_strb_{reg.name.lower()}_{KEEP_MARK}")
                m.d.sync += [hit.eq(do_write & (w_word == reg.offset // 4)), strb.eq(w_strb)]
            else:
                hit = do_write & (w_word == reg.offset // 4)
            if reg.access == isa.Access.RW:
                for i in range(0, len(value), 8):
                    with m.If(hit & strb[i // 8]):
                        m.d.sync += value[i:i + 8].eq(w_data[i:i + 8])
            elif reg.access == isa.Access.WO:
                pulse = getattr(self, f"{port_name(reg)}_write")
                m.d.sync += [pulse.eq(hit), value.eq(w_data)]
            elif reg.access == isa.Access.W1C:
                # (reserved input bits are masked off: they read as 0 even where the driver
                # leaves them undefined, as Icarus does with constant assignments)
                setter = Value.cast(getattr(self, f"{port_name(reg)}_set")) & _defined_bits(reg)
                with m.If(hit):
                    m.d.sync += value.eq((value & ~(w_data & byte_mask)) | setter)
                with m.Else():
                    m.d.sync += value.eq(value | setter)

        m.d.comb += self.irq.eq((Value.cast(self.irq_status) & Value.cast(self.irq_enable)).any())

        # ---- reads
        r_valid = Signal()
        r_data = Signal(32)
        with m.If(r_valid & bus.rready):
            m.d.sync += r_valid.eq(0)
        hi_latch = Signal(32, name="perf_hi")

        def read_value(reg):
            """What a read of ``reg`` returns (0 for a write-only register), or None for a
            counter's low word, which is read from the counter itself."""
            if _is_perf(reg):
                return hi_latch if not reg.name.endswith("_LO") else None
            if _is_constant(reg):
                return reg.reset
            if reg.access == isa.Access.WO:
                return 0
            return Value.cast(getattr(self, port_name(reg))) & _defined_bits(reg)

        def perf_index(reg):
            return (reg.offset - isa.PERF_BASE) // 8

        if self._config.slices:
            # For a fast clock the address is registered first: the read multiplexer starts
            # from a register, not from the bus's ARVALID and ARADDR. The registers are read
            # in two steps: each group of eight into a register of its own (the others' hold
            # 0), then the groups' OR into the read data; a performance counter's index is
            # registered in the first step (a copy for each quarter of the counters' bits),
            # its value read into a register of its own in the second (the counters lie
            # across the die, and neither the address decode nor the read data's choice is on
            # their path), and chosen in the third. Reads answer four cycles after AR.
            r_pend, r_perf, r_last = Signal(), Signal(), Signal()
            r_word = Signal(len(bus.araddr) - 2)
            m.d.comb += bus.arready.eq(~r_valid & ~r_pend & ~r_perf & ~r_last)
            with m.If(bus.arvalid & bus.arready):
                m.d.sync += [r_pend.eq(1), r_word.eq(bus.araddr[2:])]
            with m.If(r_pend):
                m.d.sync += [r_pend.eq(0), r_perf.eq(1)]
            perf_lo = Signal()
            quarters = 4
            perf_idx = [Signal(range(len(isa.PerfCounter)), name=f"perf_idx_{KEEP_MARK}{q}")
                        for q in range(quarters)]
            perf_val = Signal(64, name="perf_val")
            plain = [reg for reg in regs if read_value(reg) is not None]
            groups = [plain[k:k + 8] for k in range(0, len(plain), 8)]
            group_regs = [Signal(32, name=f"r_group{g}") for g in range(len(groups))]
            with m.If(r_pend):
                m.d.sync += perf_lo.eq(0)
                for group, g_reg in zip(groups, group_regs):
                    m.d.sync += g_reg.eq(0)
                    with m.Switch(r_word):
                        for reg in group:
                            with m.Case(reg.offset // 4):
                                m.d.sync += g_reg.eq(read_value(reg))
                with m.Switch(r_word):
                    for reg in regs:
                        if read_value(reg) is None:
                            with m.Case(reg.offset // 4):
                                m.d.sync += [perf_lo.eq(1),
                                             *(i.eq(perf_index(reg)) for i in perf_idx)]
            with m.If(r_perf):
                m.d.sync += [r_perf.eq(0), r_last.eq(1), perf_val.eq(0)]
                part = 64 // quarters
                for q, idx_q in enumerate(perf_idx):
                    with m.Switch(idx_q):
                        for idx in range(len(isa.PerfCounter)):
                            with m.Case(idx):
                                m.d.sync += perf_val[q * part:(q + 1) * part].eq(
                                    self.perf[idx][q * part:(q + 1) * part])
            with m.If(r_last):
                m.d.sync += [r_last.eq(0), r_valid.eq(1),
                             r_data.eq(Mux(perf_lo, perf_val[:32], _or_all(group_regs)))]
                with m.If(perf_lo):
                    m.d.sync += hi_latch.eq(perf_val[32:])
        else:
            m.d.comb += bus.arready.eq(~r_valid)
            read = bus.arvalid & bus.arready
            with m.If(read):
                m.d.sync += [r_data.eq(0), r_valid.eq(1)]
                with m.Switch(bus.araddr[2:]):
                    for reg in regs:
                        with m.Case(reg.offset // 4):
                            value = read_value(reg)
                            if value is not None:
                                m.d.sync += r_data.eq(value)
                            else:
                                idx = perf_index(reg)
                                m.d.sync += [r_data.eq(self.perf[idx][:32]),
                                             hi_latch.eq(self.perf[idx][32:])]
        m.d.comb += [bus.rvalid.eq(r_valid), bus.rdata.eq(r_data), bus.rresp.eq(Resp.OKAY)]
        return m


def _or_all(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out
