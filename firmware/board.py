"""The board backend of the driver: programs on an FPGA through the UART bridge.

::

    npugen run model.npubin -i x.npy --backend board --port /dev/ttyUSB0
    y = driver.run(prog, x, backend=BoardBackend(port="/dev/ttyUSB0", baud=1_000_000))

The protocol (``hdl/bridge.py``, docs/fpga.md) is encoded and decoded here once, by plain
functions (:func:`encode_request`, :func:`reply_size`, :func:`decode_reply`); :class:`BridgeClient`
runs it over any *link* (an object with ``write(bytes)``, ``read(n) -> bytes`` that returns
fewer bytes when nothing more comes within its timeout, and ``flush_input()``): a pyserial port
(:class:`SerialLink`) on hardware, a simulated UART in the cocotb test (``sim/tb_board.py``).

A run: INFO (protocol version, the memory the board has) and CONFIG_HASH (the bitstream must be
the program's configuration), the image and the inputs written, the window and program
registers set, START, STATUS polled until the NPU stops, the outputs read back.
"""

from __future__ import annotations

import struct
import time

from hdl.bridge import PROTOCOL_VERSION, SYNC, BridgeCommand, BridgeStatus, crc8_update
from hdl.isa import ErrorCode, perf_counters, registers

from .driver import DriverError

__all__ = ["BoardBackend", "BridgeClient", "BridgeError", "SerialLink", "crc8",
           "encode_request", "reply_size", "decode_reply", "MAX_CHUNK"]

#: Bytes per MEM_WRITE / MEM_READ frame.
MAX_CHUNK = 4096


class BridgeError(DriverError):
    """The board did not answer, or answered with an error status, after every retry."""


def crc8(data, crc=0):
    """CRC-8 (polynomial 0x07) of ``data``, as the bridge computes it."""
    for b in data:
        crc = crc8_update(crc, b)
    return crc


def encode_request(cmd, addr=0, length=0, data=b""):
    """The bytes of one host frame."""
    cmd = BridgeCommand(cmd)
    if not 0 <= addr < 1 << 32 or not 0 <= length < 1 << 16:
        raise ValueError(f"address {addr:#x} or length {length} out of range")
    header = struct.pack("<BIH", cmd.value, addr, length)
    frame = bytes([SYNC]) + header + bytes([crc8(header)])
    if cmd in (BridgeCommand.MEM_WRITE, BridgeCommand.REG_WRITE):
        if len(data) != length:
            raise ValueError(f"{cmd.name}: {len(data)} data bytes for LEN = {length}")
        frame += bytes(data) + bytes([crc8(data)])
    return frame


def reply_size(cmd, length, status=BridgeStatus.OK):
    """Bytes of the reply to ``cmd`` with ``status`` (SYNC, STATUS, data, CRC)."""
    if BridgeStatus(status) != BridgeStatus.OK:
        return 3
    cmd = BridgeCommand(cmd)
    data = {BridgeCommand.INFO: 9, BridgeCommand.MEM_READ: length,
            BridgeCommand.REG_READ: length}.get(cmd, 0)
    return 3 + data


def decode_reply(cmd, length, raw):
    """``(status, data)`` from the complete reply ``raw``, or raise :class:`BridgeError` if it
    is malformed (wrong SYNC, unknown status, wrong size, bad CRC)."""
    if len(raw) < 3 or raw[0] != SYNC:
        raise BridgeError(f"malformed reply {bytes(raw[:8]).hex()}")
    try:
        status = BridgeStatus(raw[1])
    except ValueError:
        raise BridgeError(f"reply with unknown status {raw[1]:#x}") from None
    if len(raw) != reply_size(cmd, length, status):
        raise BridgeError(f"reply of {len(raw)} bytes, expected {reply_size(cmd, length, status)}")
    if crc8(raw[1:-1]) != raw[-1]:
        raise BridgeError("reply CRC mismatch")
    return status, bytes(raw[2:-1])


class SerialLink:
    """A pyserial port as a link."""

    def __init__(self, port, baud, timeout=0.5):
        import serial
        try:
            self._port = serial.Serial(port, baud, timeout=timeout)
        except (serial.SerialException, ValueError) as err:
            raise DriverError(f"board backend: cannot open {port}: {err}") from None

    def write(self, data):
        self._port.write(data)

    def read(self, n):
        return self._port.read(n)

    def flush_input(self):
        self._port.reset_input_buffer()

    def close(self):
        self._port.close()


class BridgeClient:
    """The bridge's operations over a link, with retries.

    A frame that gets no complete reply, a malformed one or an error status is sent again (up to
    ``retries`` times) after waiting ``settle`` seconds and discarding whatever arrived: the
    bridge has by then timed out of any half-received frame and hunts for SYNC again.
    """

    def __init__(self, link, retries=3, settle=0.05, sleep=time.sleep):
        self.link = link
        self.retries = retries
        self.settle = settle
        self._sleep = sleep
        self.errors = 0          # frames that had to be repeated

    def transact(self, cmd, addr=0, length=0, data=b""):
        """Send one frame and return the reply's data."""
        frame = encode_request(cmd, addr, length, data)
        last = None
        for _ in range(self.retries + 1):
            self.link.write(frame)
            head = self.link.read(2)
            try:
                if len(head) < 2:
                    raise BridgeError(f"no reply to {BridgeCommand(cmd).name}")
                want = reply_size(cmd, length, head[1] if head[1] in
                                  {s.value for s in BridgeStatus} else BridgeStatus.OK)
                rest = self.link.read(want - 2)
                status, payload = decode_reply(cmd, length, head + rest)
                if status == BridgeStatus.OK:
                    return payload
                last = BridgeError(f"{BridgeCommand(cmd).name} at {addr:#x}: board answered "
                                   f"{status.name}")
            except BridgeError as err:
                last = err
            self.errors += 1
            self._sleep(self.settle)
            self.link.flush_input()
        raise last

    def info(self):
        """``(protocol version, memory base, memory size)``."""
        return struct.unpack("<BII", self.transact(BridgeCommand.INFO))

    def write_mem(self, addr, data):
        for off in range(0, len(data), MAX_CHUNK):
            chunk = bytes(data[off:off + MAX_CHUNK])
            self.transact(BridgeCommand.MEM_WRITE, addr + off, len(chunk), chunk)

    def read_mem(self, addr, size):
        out = bytearray()
        for off in range(0, size, MAX_CHUNK):
            n = min(MAX_CHUNK, size - off)
            out += self.transact(BridgeCommand.MEM_READ, addr + off, n)
        return bytes(out)

    def write_reg(self, offset, value):
        self.transact(BridgeCommand.REG_WRITE, offset, 4, struct.pack("<I", value))

    def read_regs(self, offset, count=1):
        raw = self.transact(BridgeCommand.REG_READ, offset, 4 * count)
        return list(struct.unpack(f"<{count}I", raw))


class BoardBackend:
    """Run programs on an NPU bitstream through its UART bridge (see the module docstring).

    Parameters
    ----------
    port : str
        Serial device (``/dev/ttyUSB0``); or pass ``link``.
    baud : int
        The bitstream's baud rate (``npugen bitstream --baud``, default 1,000,000).
    link : object or None
        A link (module docstring) to use instead of opening ``port``.
    poll_interval : float
        Seconds between STATUS reads while the NPU runs.
    timeout : float
        Seconds a run may take before it is reported as hung.
    sleep : callable
        ``sleep(seconds)`` (the simulation passes one that advances simulated time).
    """

    name = "board"

    def __init__(self, port=None, baud=1_000_000, link=None, poll_interval=0.01, timeout=60.0,
                 retries=3, sleep=time.sleep, clock=time.monotonic):
        if link is None:
            if not port:
                raise DriverError("board backend: give the serial port (--port /dev/ttyUSB0)")
            link = SerialLink(port, baud)
        self.client = BridgeClient(link, retries=retries, sleep=sleep)
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self.last = None

    def execute(self, program, writes, reads):
        cfg = program.config()
        regs = {r.name: r.offset for r in registers(cfg)}
        c = self.client
        version, base, size = c.info()
        if version != PROTOCOL_VERSION:
            raise DriverError(f"board backend: the board speaks bridge protocol {version}, this "
                              f"driver {PROTOCOL_VERSION}")
        (chash,) = c.read_regs(regs["CONFIG_HASH"])
        if chash != int(program.fingerprint[:8], 16):
            raise DriverError(f"board backend: the bitstream is for another configuration "
                              f"(CONFIG_HASH {chash:08x}, the program's {program.fingerprint[:8]}"
                              f"): build it with npugen bitstream --config "
                              f"{program.manifest['config']['name']}")
        lo, hi = program.window
        if program.base < base or program.base + program.image_size > base + size \
                or any(a < base or a + len(d) > base + size for a, d in writes):
            raise DriverError(f"board backend: the program needs memory {program.base:#x}.."
                              f"{program.base + program.image_size:#x}; the board has "
                              f"{base:#x}..{base + size:#x}")
        c.write_mem(program.base, program.image().tobytes())
        for addr, data in writes:
            c.write_mem(addr, bytes(data))
        c.write_reg(regs["IRQ_STATUS"], 3)
        c.write_reg(regs["WIN_BASE"], lo)
        c.write_reg(regs["WIN_LIMIT"], min(hi, base + size - 1))
        c.write_reg(regs["PROG_BASE"], program.prog_base)
        c.write_reg(regs["PROG_LEN"], program.num_commands)
        c.write_reg(regs["CTRL"], 1)
        t0 = self._clock()
        while True:
            (status,) = c.read_regs(regs["STATUS"])
            if not status & 1:
                break
            if self._clock() - t0 > self.timeout:
                c.write_reg(regs["CTRL"], 2)          # abort
                raise DriverError(f"board backend: the NPU is still busy after "
                                  f"{self.timeout:g} s (aborted)")
            self._sleep(self.poll_interval)
        err_index, err_addr = c.read_regs(regs["ERR_INDEX"], 2)
        perf = {}
        for pc in perf_counters(cfg):           # (only the counters the hardware has)
            lo_w, hi_w = c.read_regs(regs[f"PERF_{pc.name}_LO"], 2)
            perf[pc.name] = hi_w << 32 | lo_w
        self.last = {"status": status, "perf": perf, "link_errors": c.errors}
        if not status & 2:
            code = ErrorCode((status >> 8) & 0xFF)
            raise DriverError(f"board backend: the NPU stopped with {code.name} at command "
                              f"{err_index} (address {err_addr:#x})")
        return [c.read_mem(a, n) for a, n in reads]
