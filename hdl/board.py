"""The NPU on an FPGA board: Npu + on-chip RAM + UART bridge + status LEDs.

:class:`NpuSystem` is the board-independent part (plain ports, simulated in cocotb as
``board_tb``); :class:`BoardTop` puts it on an amaranth-boards platform: the clock (through a PLL
when the configuration's clock differs from the board's), a power-on reset, the UART pins and
three LEDs. :data:`BOARDS` lists the boards.
"""

import contextlib
from dataclasses import dataclass

from amaranth.build import Attrs, Pins, Resource, Subsignal
from amaranth.hdl import (
    Cat,
    ClockDomain,
    ClockSignal,
    Elaboratable,
    Instance,
    Module,
    ResetSignal,
    Signal,
)
from amaranth.lib import fifo, io, wiring
from amaranth.lib.wiring import In, Out

from .bridge import UartBridge
from .config import NpuConfig
from .npu import Npu
from .onchip_ram import RAM_KINDS, OnChipRam
from .slices import register_slice, stream_slice
from .uart import UartRx, UartTx, check_divisor, divisor_for

__all__ = ["Board", "BOARDS", "NpuSystem", "BoardTop", "ecp5_pll_params", "ice40_pll_params",
           "ecp5_global_buffer"]

#: Depth of the receive FIFO between the UART and the bridge, in bytes.
RX_FIFO_DEPTH = 16


_AX_FIELDS = ("id", "addr", "len", "size", "burst", "lock", "cache", "prot", "qos")


def _connect_axi_sliced(m, master, slave):
    """``master`` to ``slave`` (AXI4) with the AR, AW, W and R channels through register slices
    (FIFOs of two), for a fast clock: each side's handshakes see a slice's room or level, and
    the slave's choice between a read and a write starts from the slices' registers, so no
    path runs from one side's request logic through the other's arbitration and back, nor
    from the slave's ready or valid into the master's beat logic. B is connected directly."""
    for ch, fields, src, dst in (("aw", _AX_FIELDS, master, slave),
                                 ("ar", _AX_FIELDS, master, slave),
                                 ("w", ("data", "strb", "last"), master, slave),
                                 ("r", ("id", "data", "resp", "last"), slave, master)):
        names = [f"{ch}{f}" for f in fields]
        payload = Cat(*(getattr(src, n) for n in names))
        room, valid, out, take = register_slice(m, f"{ch}_slice", getattr(src, f"{ch}valid"),
                                                payload, len(payload))
        m.d.comb += [getattr(src, f"{ch}ready").eq(room),
                     getattr(dst, f"{ch}valid").eq(valid),
                     Cat(*(getattr(dst, n) for n in names)).eq(out),
                     take.eq(valid & getattr(dst, f"{ch}ready"))]
    m.d.comb += slave.bready.eq(master.bready)
    for name in ("bid", "bresp", "bvalid"):
        m.d.comb += getattr(master, name).eq(getattr(slave, name))


@dataclass(frozen=True)
class Board:
    """A board the flow builds for.

    Attributes
    ----------
    name : str
        As on the command line (``ulx3s-85f``).
    platform : str
        The amaranth-boards class, ``module:Class``.
    device : str
        The ``target.device`` of a configuration made for it.
    ram : str
        What the on-chip memory is built from (:data:`hdl.onchip_ram.RAM_KINDS`).
    leds : tuple of (str, int)
        The three LED resources for busy, done and error.
    uart_pins : tuple or None
        ``(tx, rx, connector)`` when the board has no UART resource of its own (OrangeCrab:
        a 3.3 V USB-serial adapter on the feather header).
    capacity : dict
        What the device has: LUTs, FFs, DSPs, block RAMs (for the utilization report).
    ram_size : int or None
        Bytes of on-chip RAM, when less than the configuration's memory window (the ECP5-85F's
        208 block RAMs hold the small config's scratchpads, 96, and 128 KiB more, not 256).
    """

    name: str
    platform: str
    device: str
    ram: str
    leds: tuple
    uart_pins: tuple | None
    capacity: dict
    ram_size: int | None = None

    def make_platform(self):
        import importlib
        module, cls = self.platform.split(":")
        return getattr(importlib.import_module(module), cls)()


_ECP5_85F = {"LUT": 83640, "FF": 83640, "DSP": 156, "BRAM": 208}
_UP5K = {"LUT": 5280, "FF": 5280, "DSP": 8, "BRAM": 30, "SPRAM": 4}

BOARDS = {b.name: b for b in (
    Board("ulx3s-85f", "amaranth_boards.ulx3s:ULX3S_85F_Platform", "ecp5-85f", "bram",
          (("led", 0), ("led", 1), ("led", 2)), None, _ECP5_85F, 128 << 10),
    Board("orangecrab-85f", "amaranth_boards.orangecrab_r0_2:OrangeCrabR0_2_85FPlatform",
          "ecp5-85f", "bram", (("rgb_led", 0, "b"), ("rgb_led", 0, "g"), ("rgb_led", 0, "r")),
          ("0", "1", ("io", 0)), _ECP5_85F, 128 << 10),
    Board("icebreaker", "amaranth_boards.icebreaker:ICEBreakerPlatform", "ice40-up5k",
          "spram", (("led_g", 0), ("led_r", 0)), None, _UP5K),
)}


class NpuSystem(wiring.Component):
    """The Npu with its memory, its host link and status outputs.

    ``uart_rx`` -> :class:`~hdl.uart.UartRx` -> receive FIFO -> :class:`~hdl.bridge.UartBridge`
    -> (:class:`~hdl.onchip_ram.OnChipRam`'s host port, the Npu's registers) and the bridge's
    replies -> :class:`~hdl.uart.UartTx` -> ``uart_tx``; the Npu's memory port is the RAM's AXI4
    port. The RAM covers the configuration's memory window (``memory.window_base``,
    ``memory.window_size``) unless ``ram_size`` is given.

    Parameters
    ----------
    config : NpuConfig
    divisor : int
        UART clock cycles per bit.
    ram_kind : str
        ``"bram"`` or ``"spram"``.
    ram_size : int or None
        Bytes of RAM (default: the memory window).
    timeout : int or None
        Bridge timeout in cycles (default: 200 byte times).
    reset_buffer : callable or None
        What drives the units' run resets (:class:`~hdl.npu.Npu`).

    Members
    -------
    uart_rx : In(1)
    uart_tx : Out(1)
    busy, done, error : Out(1)
        The Npu's STATUS bits.
    link : Out(1)
        The bridge is handling a frame.
    """

    uart_rx: In(1, init=1)
    uart_tx: Out(1, init=1)
    busy: Out(1)
    done: Out(1)
    error: Out(1)
    link: Out(1)

    def __init__(self, config, *, divisor, ram_kind="bram", ram_size=None, timeout=None,
                 reset_buffer=None):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        if ram_kind not in RAM_KINDS:
            raise ValueError(f"ram_kind must be one of {', '.join(RAM_KINDS)}, not {ram_kind!r}")
        self._config = config
        self._divisor = divisor
        self._ram_kind = ram_kind
        self._ram_size = config.window_size if ram_size is None else ram_size
        self._timeout = 200 * 10 * divisor if timeout is None else timeout
        self._reset_buffer = reset_buffer
        check_divisor(divisor)
        super().__init__()

    @property
    def config(self):
        return self._config

    @property
    def ram_size(self):
        return self._ram_size

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.npu = npu = Npu(c, reset_buffer=self._reset_buffer)
        m.submodules.ram = ram = OnChipRam(c, c.window_base, self._ram_size, self._ram_kind)
        m.submodules.uart_rx = urx = UartRx(self._divisor)
        m.submodules.uart_tx = utx = UartTx(self._divisor)
        m.submodules.rx_fifo = rxq = fifo.SyncFIFOBuffered(width=8, depth=RX_FIFO_DEPTH)
        m.submodules.bridge = br = UartBridge(c.window_base, self._ram_size, registered=c.slices,
                                              timeout=self._timeout)

        if c.slices:
            _connect_axi_sliced(m, npu.m_axi, ram.axi)
        else:
            wiring.connect(m, npu.m_axi, ram.axi)
        wiring.connect(m, br.mem, ram.host)
        wiring.connect(m, br.csr, npu.s_axil)
        m.d.comb += [
            urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx),
            rxq.w_data.eq(urx.o.payload), rxq.w_en.eq(urx.o.valid), urx.o.ready.eq(rxq.w_rdy),
        ]
        if c.slices:
            # (fast clock) the bytes reach the bridge through a FIFO of two as well: the
            # bridge, beside the RAM, and the receive FIFO, beside the UART's pin, are far apart
            wiring.connect(m, stream_slice(m, "rx_slice", rxq.r_stream), br.rx)
            # and the replies reach the transmitter, beside its pin, through another
            wiring.connect(m, stream_slice(m, "tx_slice", br.tx, skid=True), utx.i)
        else:
            m.d.comb += [br.rx.valid.eq(rxq.r_rdy), br.rx.payload.eq(rxq.r_data),
                         rxq.r_en.eq(br.rx.ready)]
            wiring.connect(m, br.tx, utx.i)
        m.d.comb += [self.busy.eq(npu.busy), self.done.eq(npu.done), self.error.eq(npu.error),
                     self.link.eq(br.active)]
        return m


# ---- clocks ------------------------------------------------------------------------------------


def ecp5_pll_params(f_in, f_out, at_most=False):
    """EHXPLLL dividers for ``f_out`` from ``f_in`` (Hz): ``(clki_div, clkfb_div, clkop_div,
    f_actual)``, the closest with the PFD at 3.125..400 MHz, the VCO at 400..800 MHz and the
    output at 3.125..400 MHz (with ``at_most``, the closest not above ``f_out``)."""
    best = None
    for clki in range(1, 129):
        pfd = f_in / clki
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for fb in range(1, 81):
            fout = pfd * fb
            if not 3.125e6 <= fout <= 400e6 or (at_most and fout > f_out + 1):
                continue
            for op in range(1, 129):
                vco = fout * op
                if 400e6 <= vco <= 800e6:
                    err = abs(fout - f_out)
                    if best is None or err < best[0]:
                        best = (err, clki, fb, op, fout)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting for {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best[1:]


def ice40_pll_params(f_in, f_out, at_most=False):
    """SB_PLL40 dividers for ``f_out`` from ``f_in`` (Hz): ``(divr, divf, divq, filter_range,
    f_actual)``, the closest with the PFD at 10..133 MHz, the VCO at 533..1066 MHz and the
    output at 16..275 MHz (with ``at_most``, the closest not above ``f_out``)."""
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                fout = vco / (1 << divq)
                if not 16e6 <= fout <= 275e6 or (at_most and fout > f_out + 1):
                    continue
                err = abs(fout - f_out)
                if best is None or err < best[0]:
                    rng = next(i for i, hi in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 133e6),
                                                        1) if pfd < hi)
                    best = (err, divr, divf, divq, rng, fout)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting for {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz")
    return best[1:]


def ecp5_global_buffer(m, signal, name):
    """``signal`` through an ECP5 ``DCCA`` (submodule ``<name>_dcca`` of ``m``) onto one of the
    die's global networks, as nextpnr routes the output of every DCCA: the reset of thousands
    of flip-flops reaches all of them in a few nanoseconds however far apart they are placed
    (through the fabric, one such net crossed the die in 11 ns), and the placer no longer draws
    them together. Of the die's 16 global networks nextpnr gives nets that reach other than
    clock inputs the first 8; the clock takes one."""
    out = Signal(name=f"{name}_global")
    m.submodules[f"{name}_dcca"] = Instance("DCCA", i_CLKI=signal, i_CE=1, o_CLKO=out)
    return out


class BoardTop(Elaboratable):
    """:class:`NpuSystem` on a board's platform (:data:`BOARDS`).

    The ``sync`` domain runs at the configuration's ``target.clock_mhz`` (or ``clock_mhz``): the
    board clock through an EHXPLLL (ECP5) or SB_PLL40_PAD (iCE40) when they differ, with reset
    held until the PLL locks and for 16 cycles after. On ECP5 the reset, a flip-flop, and the
    Npu units' run resets reach their flip-flops through global buffers
    (:func:`ecp5_global_buffer`). The UART runs at ``baud``; the LEDs show
    busy, done and error (iCEBreaker, two LEDs: green = busy or done, red = error).

    Parameters
    ----------
    config : NpuConfig
    board : Board
    baud : int
        UART baud rate.
    clock_mhz : float or None
        The NPU clock, if not the configuration's ``target.clock_mhz``: the same design (the
        configuration decides its pipeline registers) clocked slower or faster, e.g. at the
        Fmax a build achieved, so that the bitstream runs within its timing.
    """

    def __init__(self, config, board, baud=1_000_000, clock_mhz=None):
        if not isinstance(config, NpuConfig):
            raise TypeError(f"config must be an NpuConfig, not {config!r}")
        if not isinstance(board, Board):
            raise TypeError(f"board must be a Board, not {board!r}")
        self._config = config
        self._board = board
        self._baud = baud
        if clock_mhz is None:
            clock_mhz = config.clock_mhz
        # The PLL's setting: the closest frequency not above the one asked for (the build's
        # timing target is what the PLL makes), within 5% of it.
        want = clock_mhz * 1e6
        self._f_in = f_in = board.make_platform().default_clk_frequency
        self._pll = None
        if abs(f_in - want) >= 1:
            pll = ecp5_pll_params if board.device.startswith("ecp5") else ice40_pll_params
            with contextlib.suppress(ValueError):
                self._pll = pll(f_in, want, at_most=True)
            if self._pll is None or self._pll[-1] < 0.95 * want:
                raise ValueError(f"the {board.device} PLL cannot make {clock_mhz:g} MHz from "
                                 f"the board's {f_in / 1e6:g} MHz")
        self._clk_hz = self._pll[-1] if self._pll else f_in
        self._divisor = divisor_for(self._clk_hz, baud)

    @property
    def clock_mhz(self):
        """The NPU clock in MHz: what the PLL makes (the closest to the frequency asked for,
        not above it), the build's timing target."""
        return round(self._clk_hz / 1e6, 4)

    @property
    def divisor(self):
        return self._divisor

    def _clock(self, m, platform):
        """Drive the ``sync`` clock at the target frequency; returns the PLL's lock signal."""
        f_in = platform.default_clk_frequency
        clk_port = platform.request(platform.default_clk, dir="-")
        clk = Signal(name="npu_clk")
        locked = Signal(name="pll_locked")
        m.d.comb += ClockSignal("sync").eq(clk)
        if self._pll is None:
            m.submodules.clk_buf = buf = io.Buffer("i", clk_port)
            m.d.comb += [clk.eq(buf.i), locked.eq(1)]
            return locked
        if getattr(platform, "family", None) == "ecp5":
            m.submodules.clk_buf = buf = io.Buffer("i", clk_port)
            clki, fb, op, _ = self._pll
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{f_in / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.clock_mhz:g}",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
                p_CLKI_DIV=clki, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=op,
                p_CLKOP_CPHASE=op - 1, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=fb,
                i_RST=0, i_STDBY=0, i_CLKI=buf.i, o_CLKOP=clk, i_CLKFB=clk,
                i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1,
                i_PHASELOADREG=1, i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        else:
            divr, divf, divq, rng, _ = self._pll
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=divr, p_DIVF=divf, p_DIVQ=divq,
                p_FILTER_RANGE=rng,
                io_PACKAGEPIN=clk_port.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=locked)
        # (no clock constraint of our own: nextpnr derives the PLL output's from the input
        # clock's, which the platform constrains; a constraint on `npu_clk` named a net that
        # does not survive synthesis)
        return locked

    def elaborate(self, platform):
        m = Module()
        board = self._board
        m.domains.sync = ClockDomain("sync")
        locked = self._clock(m, platform)
        # Power-on reset: held while the PLL is unlocked and for 16 cycles after.
        m.domains.por = ClockDomain("por", reset_less=True)
        m.d.comb += ClockSignal("por").eq(ClockSignal("sync"))
        count = Signal(5, name="por_count")
        with m.If(~locked):
            m.d.por += count.eq(0)
        with m.Elif(~count[4]):
            m.d.por += count.eq(count + 1)
        ecp5 = getattr(platform, "family", None) == "ecp5"
        if ecp5:
            por = Signal(init=1, name="por_reset")
            m.d.por += por.eq(~count[4])
            m.d.comb += ResetSignal("sync").eq(ecp5_global_buffer(m, por, "por_reset"))
        else:
            m.d.comb += ResetSignal("sync").eq(~count[4])

        ram_size = min(board.ram_size or self._config.window_size, self._config.window_size)
        m.submodules.system = system = NpuSystem(
            self._config, divisor=self._divisor, ram_kind=board.ram, ram_size=ram_size,
            reset_buffer=ecp5_global_buffer if ecp5 else None)
        if board.uart_pins is not None:
            tx, rx, conn = board.uart_pins
            platform.add_resources([Resource(
                "uart", 0, Subsignal("tx", Pins(tx, dir="o", conn=conn)),
                Subsignal("rx", Pins(rx, dir="i", conn=conn)), Attrs(IO_TYPE="LVCMOS33"))])
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [system.uart_rx.eq(rx_buf.i), tx_buf.o.eq(system.uart_tx)]

        requested = {}

        def led(res):
            """An output buffer for ``(resource, number[, subsignal])``."""
            key = res[:2]
            if key not in requested:
                requested[key] = platform.request(*key, dir="-")
            port = getattr(requested[key], res[2]) if len(res) > 2 else requested[key]
            buf = io.Buffer("o", port)
            m.submodules["led_" + "_".join(map(str, res))] = buf
            return buf.o

        outs = [led(res) for res in board.leds]
        if len(outs) == 3:
            m.d.comb += [outs[0].eq(system.busy), outs[1].eq(system.done),
                         outs[2].eq(system.error)]
        else:
            m.d.comb += [outs[0].eq(system.busy | system.done), outs[1].eq(system.error)]
        return m
