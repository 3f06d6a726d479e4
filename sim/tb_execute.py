"""cocotb testbench of the compute datapath top (``npu_datapath``, :class:`hdl.exec_top.ExecTop`).

A test case is an ``.npz`` file named by ``NPU_TB_CASE``, written by tests/test_rtl_execute.py:
initial buffer contents, the commands (32 bytes each), the ACC contents the golden model ends
with, and optionally post-processing requests with their expected int8 rows. The testbench
preloads the buffers, pushes the commands (with random idle cycles), waits for every completion,
reads the whole ACC back, runs the post-processing requests (with random backpressure), and
asserts bit equality. Cycle and MAC-active counts go to the JSON file ``NPU_TB_RESULT``.
"""

import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly


def pack(values, width):
    mask = (1 << width) - 1
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & mask) << (i * width)
    return out


def bit(signal):
    """A one-bit signal as 0/1, X and Z (Icarus before the first edge) as 0."""
    v = signal.value
    return int(v) if v.is_resolvable else 0


def unpack(value, lanes, width):
    value = int(value)
    out = []
    for i in range(lanes):
        v = (value >> (i * width)) & ((1 << width) - 1)
        out.append(v - (1 << width) if v >> (width - 1) else v)
    return out


class TB:
    """Clock, reset, buffer preload and the command/post-processing ports of ``npu_datapath``."""

    def __init__(self, dut, seed=1):
        self.dut = dut
        self.rng = random.Random(seed)
        self.cycles = 0
        self.mac = 0
        self.done = 0
        self.first_mac = None
        self.last_done = None

    async def start(self):
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        for port in ("input_wr", "weight_wr", "acc_wr", "param_wr"):
            getattr(dut, f"{port}__en").value = 0
        dut.cmd__valid.value = 0
        dut.pp_req__valid.value = 0
        dut.pp_out__ready.value = 0
        dut.acc_rd__en.value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        await FallingEdge(dut.clk)
        dut.rst.value = 0
        cocotb.start_soon(self._monitor())
        await FallingEdge(dut.clk)

    # Everything is driven at falling edges and sampled in the read-only phase before the next
    # rising edge, so a handshake seen there completes at that rising edge.

    async def _monitor(self):
        dut = self.dut
        while True:
            await FallingEdge(dut.clk)
            await ReadOnly()
            if bit(dut.mac_active):
                if self.first_mac is None:
                    self.first_mac = self.cycles
                self.mac += 1
            if bit(dut.done):
                self.done += 1
                self.last_done = self.cycles
            self.cycles += 1

    async def preload(self, port, rows, width):
        """Write the non-zero rows of ``rows`` (the buffers start at zero)."""
        dut = self.dut
        lanes = rows.shape[1]
        getattr(dut, f"{port}__mask").value = (1 << lanes) - 1
        for addr in np.nonzero(rows.any(axis=1))[0]:
            getattr(dut, f"{port}__en").value = 1
            getattr(dut, f"{port}__addr").value = int(addr)
            getattr(dut, f"{port}__data").value = pack(rows[addr], width)
            await FallingEdge(dut.clk)
        getattr(dut, f"{port}__en").value = 0

    async def _send(self, valid, ready):
        while True:
            await ReadOnly()
            taken = bit(ready)
            await FallingEdge(self.dut.clk)
            if taken:
                return

    async def push_commands(self, cmds, p_idle=0.0):
        dut = self.dut
        for raw in cmds:
            while self.rng.random() < p_idle:
                dut.cmd__valid.value = 0
                await FallingEdge(dut.clk)
            dut.cmd__valid.value = 1
            dut.cmd__payload.value = int.from_bytes(bytes(raw), "little")
            await self._send(dut.cmd__valid, dut.cmd__ready)
        dut.cmd__valid.value = 0

    async def wait_done(self, count):
        dut = self.dut
        while True:
            await ReadOnly()
            if self.done >= count and not bit(dut.busy):
                break
            await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)

    async def read_acc(self, depth, lanes, latency=1):
        """The first ``depth`` ACC rows, an address a cycle; a row comes ``latency`` cycles
        after its address."""
        dut = self.dut
        rows = []
        dut.acc_rd__en.value = 1
        for addr in range(depth + latency):
            dut.acc_rd__addr.value = min(addr, depth - 1)
            await FallingEdge(dut.clk)
            if latency - 1 <= addr < depth + latency - 1:
                rows.append(unpack(dut.acc_rd__data.value, lanes, 32))
        dut.acc_rd__en.value = 0
        return np.array(rows, dtype=np.int64)

    async def postprocess(self, reqs, residual, use, lanes, offsets, p_stall=0.3):
        dut = self.dut
        out = []

        async def receive():
            while len(out) < len(reqs):
                ready = self.rng.random() >= p_stall
                dut.pp_out__ready.value = ready
                await ReadOnly()
                if ready and bit(dut.pp_out__valid):
                    out.append(unpack(dut.pp_out__payload.value, lanes, 8))
                await FallingEdge(dut.clk)
            dut.pp_out__ready.value = 0

        rx = cocotb.start_soon(receive())
        o_acc, o_param, o_res, o_use = (int(v) for v in offsets)
        for (acc_addr, param_addr), res, u in zip(reqs, residual, use):
            dut.pp_req__valid.value = 1
            dut.pp_req__payload.value = ((int(acc_addr) << o_acc) | (int(param_addr) << o_param)
                                         | (pack(res, 8) << o_res) | (int(u) << o_use))
            await self._send(dut.pp_req__valid, dut.pp_req__ready)
        dut.pp_req__valid.value = 0
        await rx
        return np.array(out, dtype=np.int64)


@cocotb.test()
async def run_case(dut):
    """Preload, run the commands, compare ACC and the post-processed rows with the golden."""
    case = np.load(os.environ["NPU_TB_CASE"])
    tb = TB(dut, seed=int(case["seed"]))
    await tb.start()
    lanes = int(case["cols"])
    await tb.preload("input_wr", case["input"], 8)
    await tb.preload("weight_wr", case["weight"], 8)
    await tb.preload("acc_wr", case["acc"], 32)
    await tb.preload("param_wr", case["param"], 32)
    cmds = case["cmds"]
    tb.cycles = tb.mac = 0
    tb.first_mac = tb.last_done = None
    await tb.push_commands(cmds, p_idle=float(case["p_idle"]))
    await tb.wait_done(len(cmds))
    acc = await tb.read_acc(case["expect_acc"].shape[0], lanes, int(case["acc_latency"]))
    expect = case["expect_acc"].astype(np.int64)
    bad = np.nonzero((acc != expect).any(axis=1))[0]
    assert bad.size == 0, f"ACC rows differ from the golden model: {bad[:8].tolist()}"
    result = {"mac": tb.mac, "done": tb.done, "first_mac": tb.first_mac,
              "last_done": tb.last_done}
    if case["pp_reqs"].size:
        dut.pp_config.value = int.from_bytes(bytes(case["pp_config"]), "little")
        got = await tb.postprocess(case["pp_reqs"], case["pp_residual"], case["pp_use"], lanes,
                                   case["pp_offsets"])
        bad = np.nonzero((got != case["expect_pp"]).any(axis=1))[0]
        assert bad.size == 0, f"post-processed rows differ from the golden model: {bad[:8]}"
        result["pp_rows"] = len(got)
    with open(os.environ["NPU_TB_RESULT"], "w") as f:
        json.dump(result, f)
