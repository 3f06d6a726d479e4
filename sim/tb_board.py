"""cocotb tests of the board top (``board_tb``: :class:`hdl.board.NpuSystem`) through its UART
pins, with cocotbext-uart's ``UartSource``/``UartSink`` as the host's serial port.

- ``bad_input``: noise, a corrupted header, a frame cut short; the bridge answers each with
  the right error and then answers a good INFO.
- ``run_program``: the driver's :class:`firmware.board.BoardBackend` runs the program
  ``$BOARD_JOB/prog.npubin`` on the input ``$BOARD_JOB/x.npy`` (int8 NHWC) through the serial
  line and writes the int8 output to ``$BOARD_JOB/y.npy``. The backend runs in a worker thread
  over :class:`SimLink`; the cocotb side moves its bytes to and from the UART models.
"""

import logging
import os
import queue
import struct
import threading
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer
from cocotbext.uart import UartSink, UartSource

from firmware import board as fb
from firmware import driver, npubin
from hdl.bridge import SYNC, BridgeCommand, BridgeStatus
from sim.runner import BOARD_DIVISOR, BOARD_TIMEOUT

PERIOD_NS = 10
BAUD = 1e9 / (PERIOD_NS * BOARD_DIVISOR)
BYTE_NS = 10 * PERIOD_NS * BOARD_DIVISOR


class SimLink:
    """A link (``firmware.board``) between a worker thread and the simulation: writes go to
    ``to_dut``, reads come from ``from_dut``; a read gives up after ``timeout`` wall seconds
    without a byte."""

    def __init__(self, timeout=60.0):
        self.to_dut = queue.Queue()
        self.from_dut = queue.Queue()
        self.timeout = timeout

    def write(self, data):
        self.to_dut.put(bytes(data))

    def read(self, n):
        out = bytearray()
        while len(out) < n:
            try:
                out.append(self.from_dut.get(timeout=self.timeout))
            except queue.Empty:
                break
        return bytes(out)

    def flush_input(self):
        while not self.from_dut.empty():
            self.from_dut.get_nowait()


class TB:
    def __init__(self, dut):
        self.dut = dut
        for name in ("uart_rx", "uart_tx"):
            logging.getLogger(f"cocotb.{dut._name}.{name}").setLevel(logging.WARNING)
        self.source = UartSource(dut.uart_rx, baud=BAUD)
        self.sink = UartSink(dut.uart_tx, baud=BAUD)
        cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 4)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 4)

    async def exchange(self, frame, reply_bytes, wait_bytes=None):
        """Send ``frame``; return what came back within the time of ``wait_bytes`` bytes."""
        await self.source.write(frame)
        await self.source.wait()
        got = bytearray()
        budget = wait_bytes if wait_bytes is not None else reply_bytes + 8
        while budget > 0 and len(got) < reply_bytes:
            await Timer(BYTE_NS, "ns")
            budget -= 1
            if not self.sink.empty():
                got += self.sink.read_nowait()
        return bytes(got)


def _reply(status, data=b""):
    body = bytes([status]) + data
    return bytes([SYNC]) + body + bytes([fb.crc8(body)])


@cocotb.test()
async def bad_input(dut):
    """Bad frames get an error reply, and the bridge resynchronises."""
    tb = TB(dut)
    await tb.reset()
    S = BridgeStatus
    info = fb.encode_request(BridgeCommand.INFO)
    assert await tb.exchange(b"\x00\xff\x42", 0, wait_bytes=8) == b""
    broken = bytearray(info)
    broken[3] ^= 0x10
    assert await tb.exchange(bytes(broken), 3) == _reply(S.BAD_HEADER.value)
    # Cut short: the bridge gives up after its timeout (in cycles) and says so.
    cut = await tb.exchange(fb.encode_request(BridgeCommand.MEM_READ, 0, 4)[:5], 3,
                            wait_bytes=BOARD_TIMEOUT * PERIOD_NS // BYTE_NS + 8)
    assert cut == _reply(S.TIMEOUT.value)
    reply = await tb.exchange(info, 12)
    status, data = fb.decode_reply(BridgeCommand.INFO, 0, reply)
    assert status == S.OK
    version, base, size = struct.unpack("<BII", data)
    assert (version, base) == (1, 0) and size > 0
    assert not dut.busy.value and not dut.error.value


async def _pump(tb, link, stop):
    """Move bytes between the worker's link and the UART models until ``stop`` is set."""
    while not stop.is_set():
        try:
            data = link.to_dut.get_nowait()
        except queue.Empty:
            data = None
        if data:
            await tb.source.write(data)
        if not tb.sink.empty():
            for b in tb.sink.read_nowait():
                link.from_dut.put(b)
        await Timer(BYTE_NS, "ns")


@cocotb.test()
async def run_program(dut):
    """The driver runs a compiled program through the serial link."""
    job = Path(os.environ["BOARD_JOB"])
    tb = TB(dut)
    await tb.reset()
    prog = npubin.load(job / "prog.npubin")
    xq = np.load(job / "x.npy")
    link = SimLink()
    backend = fb.BoardBackend(link=link, poll_interval=0.0, timeout=600.0)
    outcome = {}
    stop = threading.Event()

    def worker():
        try:
            outcome["y"] = driver.run_int8(prog, xq, backend)
        except BaseException as err:       # reported below, in the simulation's thread
            outcome["error"] = err
        finally:
            stop.set()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    await _pump(tb, link, stop)
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    np.save(job / "y.npy", outcome["y"])
    perf = backend.last["perf"]
    dut._log.info("program: %d commands in %d cycles; %d link errors",
                  perf["COMMANDS"], perf["CYCLES"], backend.last["link_errors"])
    assert perf["COMMANDS"] == prog.num_commands
    assert dut.done.value and not dut.error.value
