"""UART receiver and transmitter: 8 data bits, no parity, one stop bit (8N1), LSB first."""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UartRx", "UartTx", "MIN_DIVISOR", "check_divisor", "divisor_for"]

#: Fewest clock cycles per bit the receiver samples reliably (it samples mid-bit).
MIN_DIVISOR = 4


def divisor_for(clk_hz, baud):
    """Clock cycles per bit for ``baud`` at ``clk_hz``, rounded to the nearest integer.

    Raises
    ------
    ValueError
        If the divisor is below :data:`MIN_DIVISOR` or the rounding error exceeds 2% (a UART
        tolerates about 4% between both ends).
    """
    if baud <= 0 or clk_hz <= 0:
        raise ValueError(f"baud and clock must be positive, not {baud!r} and {clk_hz!r}")
    div = round(clk_hz / baud)
    if div < MIN_DIVISOR:
        raise ValueError(f"{baud} baud at {clk_hz / 1e6:g} MHz is {clk_hz / baud:.2f} clocks per "
                         f"bit: at least {MIN_DIVISOR} are needed")
    err = abs(clk_hz / div - baud) / baud
    if err > 0.02:
        raise ValueError(f"{baud} baud at {clk_hz / 1e6:g} MHz: the nearest divisor {div} is off "
                         f"by {err:.1%} (at most 2%)")
    return div


def check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer >= {MIN_DIVISOR} (clock cycles per bit), "
                         f"not {divisor!r}")


class _Uart(wiring.Component):
    """What the receiver and the transmitter share: the validated divisor."""

    def __init__(self, divisor):
        check_divisor(divisor)
        self._divisor = divisor
        super().__init__()

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor


class UartRx(_Uart):
    """UART receiver, 8N1, ``divisor`` clock cycles per bit.

    The line goes through a two-flip-flop synchroniser. A falling edge starts a byte; the start
    bit is checked at its middle (a glitch shorter than half a bit is ignored) and every data bit
    and the stop bit are sampled at their middle. A byte whose stop bit is 0 is dropped and
    :attr:`frame_error` pulses. The receiver is ready for the next start bit from the middle of
    the stop bit on, so back-to-back bytes are received at full rate.

    The line cannot be held off, so ``o`` follows the stream rules by dropping instead of
    overwriting: a byte that arrives while the previous one has not been taken is lost and
    :attr:`overrun` pulses (put a FIFO behind ``o`` if the consumer can stall).

    Latency: ``o.valid`` rises 2 + ``9.5 * divisor`` cycles after the start bit's falling edge.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    rx : In(1)
        The serial line (idle high); asynchronous.
    o : Out(stream.Signature(8))
        Received bytes.
    frame_error : Out(1)
        One pulse per byte dropped for a bad stop bit.
    overrun : Out(1)
        One pulse per byte dropped because ``o`` was still full.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(div))
        bit = Signal(range(9))
        shreg = Signal(8)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM(name="uart_rx"):
            with m.State("IDLE"), m.If(~line):
                m.d.sync += timer.eq(div // 2 - 1)
                m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):          # not a start bit after all
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), shreg.eq(shreg >> 1 | line << 7),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(~line):
                        m.d.comb += self.frame_error.eq(1)
                    with m.Elif(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(shreg)]
                    m.next = "IDLE"
        return m


class UartTx(_Uart):
    """UART transmitter, 8N1, ``divisor`` clock cycles per bit.

    A byte taken from ``i`` goes out as a start bit, 8 data bits (LSB first) and a stop bit;
    ``i.ready`` is high while the transmitter is idle, so bytes offered back to back leave with
    no gap between stop bit and next start bit.

    Latency: the start bit begins the cycle after the transfer on ``i``; a byte takes
    ``10 * divisor`` cycles.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR`.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        The serial line (idle high).
    busy : Out(1)
        A byte is being sent.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        bits = Signal(range(11))
        frame = Signal(10, init=0x3FF)      # stop, data[7:0], start; shifted out LSB first
        m.d.comb += [self.tx.eq(frame[0]), self.busy.eq(bits != 0),
                     self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [frame.eq(1 << 9 | self.i.payload << 1), bits.eq(10),
                         timer.eq(div - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [timer.eq(div - 1), frame.eq(frame >> 1 | 1 << 9),
                             bits.eq(bits - 1)]
        return m
