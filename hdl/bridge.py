"""The UART-to-bus bridge: framed commands from the host to the on-chip RAM and the registers.

Protocol (docs/fpga.md). Every frame, both ways, starts with :data:`SYNC`. All integers are
little-endian; CRC-8 is polynomial 0x07, initial value 0, no reflection (:func:`crc8_update`).

Host to board::

    SYNC  CMD  ADDR[4]  LEN[2]  HCRC                      (INFO, MEM_READ, REG_READ)
    SYNC  CMD  ADDR[4]  LEN[2]  HCRC  DATA[LEN]  DCRC     (MEM_WRITE, REG_WRITE)

``HCRC`` covers CMD, ADDR and LEN; ``DCRC`` covers DATA. Board to host::

    SYNC  STATUS  [DATA]  CRC                              (CRC covers STATUS and DATA)

DATA is present only with STATUS = OK: 9 bytes for INFO (protocol version, memory base, memory
size), LEN bytes for MEM_READ and REG_READ. MEM_WRITE writes each byte as it arrives, so a bad
DCRC is reported after the write (BAD_DATA_CRC: the host writes again); REG_WRITE (LEN = 4)
checks DCRC before it writes the register.

Bad input never hangs the bridge: a bad header CRC or an unknown command is answered at once, a
valid header with a bad address or length is answered after its data bytes are skipped, a frame
that stops arriving is answered TIMEOUT after ``timeout`` cycles without a byte; after each the
bridge hunts for the next SYNC.
"""

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import axi4_lite_signature
from .onchip_ram import host_signature

__all__ = ["SYNC", "PROTOCOL_VERSION", "BridgeCommand", "BridgeStatus", "UartBridge",
           "crc8_update"]

#: First byte of every frame.
SYNC = 0xA5
#: Returned by INFO.
PROTOCOL_VERSION = 1
#: Bytes of a register space the bridge can reach (the Npu's 12-bit AXI4-Lite port).
REG_SPACE = 1 << 12


class BridgeCommand(enum.Enum, shape=8):
    """The CMD byte of a host frame."""
    INFO = 0x00         #: protocol version, memory base and size
    MEM_WRITE = 0x01    #: write LEN bytes of memory from ADDR
    MEM_READ = 0x02     #: read LEN bytes of memory from ADDR
    REG_WRITE = 0x03    #: write the 32-bit register at ADDR (LEN = 4)
    REG_READ = 0x04     #: read LEN / 4 registers from ADDR


class BridgeStatus(enum.Enum, shape=8):
    """The STATUS byte of a reply."""
    OK = 0x00
    BAD_HEADER = 0x01     #: the header CRC did not match
    BAD_COMMAND = 0x02    #: unknown CMD
    BAD_ADDRESS = 0x03    #: ADDR/LEN outside the memory or register space, misaligned, or 0
    BAD_DATA_CRC = 0x04   #: the data CRC did not match (MEM_WRITE: the bytes were written)
    TIMEOUT = 0x05        #: the frame stopped arriving


def crc8_update(crc, byte):
    """CRC-8 (polynomial 0x07) of ``crc`` extended by ``byte``; works on ints and on Amaranth
    values alike (the hardware and the host compute it with this one function). On values it is
    the same linear map, written as one XOR of input bits per output bit."""
    if isinstance(crc, int) and isinstance(byte, int):
        c = crc ^ byte
        for _ in range(8):
            c = ((c << 1) ^ 0x07 if c & 0x80 else c << 1) & 0xFF
        return c
    x = Value.cast(crc ^ byte)
    columns = [crc8_update(1 << i, 0) for i in range(8)]    # the image of each input bit
    return Cat(*(Cat(*(x[i] for i in range(8) if columns[i] >> j & 1)).xor()
                 for j in range(8)))


class UartBridge(wiring.Component):
    """Executes host frames (module docstring) on the memory and register ports.

    Memory is reached a byte at a time through :attr:`mem` (a port of
    :class:`hdl.onchip_ram.OnChipRam`), registers a 32-bit word at a time through :attr:`csr`
    (AXI4-Lite, one transaction outstanding). Memory addresses are checked against
    ``[mem_base, mem_base + mem_size)``, register addresses against the 4 KiB register space and
    must be word aligned.

    Latency: a byte costs at most a few cycles on either port, far less than a byte time on the
    line, so with a receive FIFO in front nothing is lost at any baud rate the UART supports.

    Parameters
    ----------
    mem_base, mem_size : int
        The memory's bus address range.
    timeout : int
        Cycles without a byte after which an unfinished frame is answered TIMEOUT.
    registered : bool
        For a fast clock: the memory's and the registers' read data reach the bridge's word
        register from registers of their own, a cycle later (not through its state logic
        from the other blocks' valid signals).

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the host.
    tx : Out(stream.Signature(8))
        Bytes to the host.
    mem : Out(host_signature(mem_size))
        Byte port of the on-chip RAM (addresses relative to ``mem_base``).
    csr : Out(axi4_lite_signature(12, 32))
        The register port.
    active : Out(1)
        A frame is being received or answered.
    """

    def __init__(self, mem_base, mem_size, *, timeout, registered=False):
        for name, v in (("mem_size", mem_size), ("timeout", timeout)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not isinstance(mem_base, int) or mem_base < 0 or mem_base + mem_size > 1 << 32:
            raise ValueError(f"mem_base {mem_base!r} + mem_size {mem_size!r} must lie in 32-bit "
                             f"addresses")
        self._base, self._size, self._timeout = mem_base, mem_size, timeout
        self._registered = bool(registered)
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "mem": Out(host_signature(mem_size)),
            "csr": Out(axi4_lite_signature(12, 32)),
            "active": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        C, S = BridgeCommand, BridgeStatus
        rx, tx = self.rx, self.tx

        hdr = Signal(56)                 # CMD, ADDR[4], LEN[2], as received (LSB first)
        cmd = Signal(8)
        addr = Signal(32)
        length = Signal(16)
        m.d.comb += [cmd.eq(hdr[:8]), addr.eq(hdr[8:40]), length.eq(hdr[40:56])]
        count = Signal(range(8))         # header bytes so far
        crc = Signal(8)
        status = Signal(8)
        left = Signal(17)                # data bytes still to move
        ptr = Signal(32)                 # next memory offset or register address
        word = Signal(32)                # register data
        wbyte = Signal(2)                # byte of ``word``
        payload = Signal(72)             # INFO reply
        pbyte = Signal(range(10))
        aw_done, w_done = Signal(), Signal()   # REG_WRITE: AW, W taken
        mem_rvalid, mem_rdata = self.mem.rvalid, self.mem.rdata
        csr_rvalid, csr_rdata = self.csr.rvalid, self.csr.rdata
        if self._registered:
            mem_rvalid, mem_rdata = (Signal.like(v, name=f"mem_{n}_r")
                                     for v, n in ((mem_rvalid, "rvalid"), (mem_rdata, "rdata")))
            m.d.sync += [mem_rvalid.eq(self.mem.rvalid), mem_rdata.eq(self.mem.rdata)]
            # (a register read is taken at its R handshake, and seen a cycle later)
            csr_rvalid, csr_rdata = Signal(name="csr_rvalid_r"), Signal(32, name="csr_rdata_r")
            m.d.sync += [csr_rvalid.eq(self.csr.rvalid & self.csr.rready),
                         csr_rdata.eq(self.csr.rdata)]

        # Byte timer: an unfinished frame times out when no byte has come for ``timeout``.
        idle = Signal(range(self._timeout + 1))
        timed_out = Signal()
        with m.If(rx.valid):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)
        m.d.comb += timed_out.eq(idle == self._timeout)

        # Argument checks on the header, registered: HCRC takes its byte a cycle after the
        # header is complete (``checked``), when they are of that header.
        end = Signal(33)
        m.d.comb += end.eq(addr + length)
        mem_ok = Signal()
        reg_ok = Signal()
        checked = Signal()
        m.d.sync += [
            mem_ok.eq((length != 0) & (addr >= self._base) &
                      (end <= self._base + self._size)),
            reg_ok.eq((length != 0) & (addr[:2] == 0) & (length[:2] == 0) & (end <= REG_SPACE)),
        ]

        def send(value, then, updates=()):
            """Offer ``value`` on tx; on its transfer update the CRC, apply ``updates`` and go
            to ``then``."""
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(value)]
            with m.If(tx.ready):
                m.d.sync += [crc.eq(crc8_update(crc, value)), *updates]
                m.next = then

        def give_up():
            """The frame stopped arriving: answer TIMEOUT."""
            m.d.sync += status.eq(S.TIMEOUT)
            m.next = "REPLY"

        m.d.comb += self.active.eq(1)
        csr = self.csr
        with m.FSM(name="bridge"):
            with m.State("HUNT"):
                m.d.comb += [rx.ready.eq(1), self.active.eq(0)]
                with m.If(rx.valid & (rx.payload == SYNC)):
                    m.d.sync += [count.eq(0), crc.eq(0)]
                    m.next = "HEADER"

            with m.State("HEADER"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], rx.payload)),
                                 crc.eq(crc8_update(crc, rx.payload)), count.eq(count + 1)]
                    with m.If(count == 6):
                        m.d.sync += checked.eq(0)
                        m.next = "HCRC"
                with m.Elif(timed_out):
                    give_up()

            with m.State("HCRC"):
                m.d.comb += rx.ready.eq(checked)
                m.d.sync += checked.eq(1)
                with m.If(rx.valid & checked):
                    m.d.sync += [ptr.eq(addr - self._base), left.eq(length), crc.eq(0),
                                 wbyte.eq(0), status.eq(S.OK)]
                    with m.If(rx.payload != crc):
                        m.d.sync += status.eq(S.BAD_HEADER)
                        m.next = "REPLY"
                    with m.Elif(cmd == C.INFO):
                        m.d.sync += [payload.eq(Cat(Const(PROTOCOL_VERSION, 8),
                                                    Const(self._base, 32),
                                                    Const(self._size, 32))), pbyte.eq(0)]
                        m.next = "REPLY"
                    with m.Elif(cmd == C.MEM_WRITE):
                        with m.If(mem_ok):
                            m.next = "MEM_WRITE"
                        with m.Else():
                            m.d.sync += status.eq(S.BAD_ADDRESS)
                            m.next = "SKIP"
                    with m.Elif(cmd == C.MEM_READ):
                        with m.If(~mem_ok):
                            m.d.sync += status.eq(S.BAD_ADDRESS)
                        m.next = "REPLY"
                    with m.Elif(cmd == C.REG_WRITE):
                        m.d.sync += ptr.eq(addr)
                        with m.If(reg_ok & (length == 4)):
                            m.next = "REG_DATA"
                        with m.Else():
                            m.d.sync += status.eq(S.BAD_ADDRESS)
                            m.next = "SKIP"
                    with m.Elif(cmd == C.REG_READ):
                        m.d.sync += ptr.eq(addr)
                        with m.If(~reg_ok):
                            m.d.sync += status.eq(S.BAD_ADDRESS)
                        m.next = "REPLY"
                    with m.Else():
                        m.d.sync += status.eq(S.BAD_COMMAND)
                        m.next = "REPLY"
                with m.Elif(timed_out):
                    give_up()

            # -- host data in --------------------------------------------------------------
            with m.State("SKIP"):                # data of a frame with a bad address
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 0):        # (that was DCRC)
                        m.next = "REPLY"
                with m.Elif(timed_out):
                    give_up()

            with m.State("MEM_WRITE"):
                with m.If(left == 0):
                    m.d.comb += rx.ready.eq(1)
                    with m.If(rx.valid):
                        with m.If(rx.payload != crc):
                            m.d.sync += status.eq(S.BAD_DATA_CRC)
                        m.next = "REPLY"
                    with m.Elif(timed_out):
                        give_up()
                with m.Else():
                    m.d.comb += [self.mem.valid.eq(rx.valid), self.mem.we.eq(1),
                                 self.mem.addr.eq(ptr), self.mem.wdata.eq(rx.payload),
                                 rx.ready.eq(self.mem.ready)]
                    with m.If(rx.valid & self.mem.ready):
                        m.d.sync += [crc.eq(crc8_update(crc, rx.payload)), ptr.eq(ptr + 1),
                                     left.eq(left - 1)]
                    with m.Elif(timed_out):
                        give_up()

            with m.State("REG_DATA"):
                m.d.comb += rx.ready.eq(1)
                with m.If(rx.valid):
                    with m.If(left == 0):
                        with m.If(rx.payload != crc):
                            m.d.sync += status.eq(S.BAD_DATA_CRC)
                            m.next = "REPLY"
                        with m.Else():
                            m.next = "REG_WRITE"
                    with m.Else():
                        m.d.sync += [word.eq(Cat(word[8:], rx.payload)), left.eq(left - 1),
                                     crc.eq(crc8_update(crc, rx.payload))]
                with m.Elif(timed_out):
                    give_up()

            with m.State("REG_WRITE"):           # AW and W together, then B
                m.d.comb += [csr.awvalid.eq(~aw_done), csr.awaddr.eq(ptr),
                             csr.wvalid.eq(~w_done), csr.wdata.eq(word), csr.wstrb.eq(0xF)]
                with m.If(csr.awready):
                    m.d.sync += aw_done.eq(1)
                with m.If(csr.wready):
                    m.d.sync += w_done.eq(1)
                m.d.comb += csr.bready.eq(1)
                with m.If(csr.bvalid):
                    m.d.sync += [aw_done.eq(0), w_done.eq(0)]
                    m.next = "REPLY"

            # -- reply ---------------------------------------------------------------------
            with m.State("REPLY"):
                m.d.sync += crc.eq(0)
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(SYNC)]
                with m.If(tx.ready):
                    m.next = "STATUS"

            with m.State("STATUS"):
                with m.If(status != S.OK):
                    send(status, "CRC")
                with m.Elif(cmd == C.INFO):
                    send(status, "INFO")
                with m.Elif(cmd == C.MEM_READ):
                    send(status, "MEM_READ")
                with m.Elif(cmd == C.REG_READ):
                    send(status, "REG_READ")
                with m.Else():
                    send(status, "CRC")

            with m.State("INFO"):
                send(payload[:8], "INFO", [payload.eq(payload >> 8), pbyte.eq(pbyte + 1)])
                with m.If(tx.ready & (pbyte == 8)):
                    m.next = "CRC"

            with m.State("MEM_READ"):
                with m.If(left == 0):
                    m.next = "CRC"
                with m.Else():
                    m.d.comb += [self.mem.valid.eq(1), self.mem.we.eq(0),
                                 self.mem.addr.eq(ptr)]
                    with m.If(self.mem.ready):
                        m.next = "MEM_READ_DATA"
            with m.State("MEM_READ_DATA"), m.If(mem_rvalid):   # valid this one cycle
                m.d.sync += word[:8].eq(mem_rdata)
                m.next = "MEM_READ_SEND"
            with m.State("MEM_READ_SEND"):
                send(word[:8], "MEM_READ", [ptr.eq(ptr + 1), left.eq(left - 1)])

            with m.State("REG_READ"):
                with m.If(left == 0):
                    m.next = "CRC"
                with m.Else():
                    m.d.comb += [csr.arvalid.eq(1), csr.araddr.eq(ptr)]
                    with m.If(csr.arready):
                        m.next = "REG_READ_DATA"
            with m.State("REG_READ_DATA"):
                m.d.comb += csr.rready.eq(1)
                with m.If(csr_rvalid):
                    m.d.sync += [word.eq(csr_rdata), wbyte.eq(0)]
                    m.next = "REG_READ_SEND"
            with m.State("REG_READ_SEND"):
                send(word[:8], "REG_READ_SEND", [word.eq(word >> 8), wbyte.eq(wbyte + 1),
                                                 left.eq(left - 1), ptr.eq(ptr + 1)])
                with m.If(tx.ready & (wbyte == 3)):
                    m.next = "REG_READ"

            with m.State("CRC"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(crc)]
                with m.If(tx.ready):
                    m.next = "HUNT"
        return m
