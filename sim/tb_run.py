"""cocotb module of the RTL backend: runs compiled programs on ``npu_tb`` with the HDL-side
memory (``sim/hdl/axi_mem.v``), so a long run costs Python nothing per clock edge or bus beat.

The job (``$NPU_JOB/job.json``, written by :class:`sim.rtl.RtlBackend`) is a list of runs; a run
names its program (data image, base, command count, window), loads the image if it is not the
one the memory already holds, writes its inputs, starts the program over AXI4-Lite (cocotbext-axi's
``AxiLiteMaster``, on cocotb's clock), hands the clock to the HDL (``run_int``) and sleeps until
the interrupt (waking every ``progress_cycles`` to report how many commands have retired), takes
the clock back, reads STATUS, the error registers and every performance counter, and dumps the
requested memory ranges and the retirement trace. Results go to
``$NPU_JOB/result.json`` and ``$NPU_JOB/run<i>_read<j>.bin``.
"""

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from hdl.config import NpuConfig
from hdl.isa import ErrorCode, perf_counters, registers
from sim.memfile import from_writememh, to_readmemh

JOB = Path(os.environ.get("NPU_JOB", "."))
PERIOD_NS = 10


class Session:
    def __init__(self, dut, job):
        self.dut = dut
        self.job = job
        self.cfg = NpuConfig.load(job["config"])
        self.bb = self.cfg.bus_data_width // 8
        self.regs = {r.name: r.offset for r in registers(self.cfg)}
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        self.clock = Clock(dut.clk, PERIOD_NS, unit="ns")
        self.load_file = Path(job["files"]["load"])
        self.dump_file = Path(job["files"]["dump"])

    async def reset(self):
        d = self.dut
        d.run_int.value = 0
        d.clk.value = 0
        self.clock.start(start_high=False)
        d.ext_mem.value = 0
        d.mem_load.value = 0
        d.mem_dump.value = 0
        d.trace_dump.value = 0
        d.mem_dump_lo.value = 0
        d.mem_dump_hi.value = 0
        d.rst.value = 1
        await ClockCycles(d.clk, 4)
        d.rst.value = 0
        await ClockCycles(d.clk, 2)

    async def _pulse(self, sig):
        sig.value = 1
        await Timer(1, "ns")
        sig.value = 0
        await Timer(1, "ns")

    async def read_mem(self, addr, size):
        """Bytes [addr, addr + size) of the memory model."""
        if size == 0:
            return b""
        lo, hi = addr // self.bb, (addr + size - 1) // self.bb
        self.dut.mem_dump_lo.value = lo
        self.dut.mem_dump_hi.value = hi
        await self._pulse(self.dut.mem_dump)
        raw = from_writememh(self.dump_file.read_text(), self.bb)
        if len(raw) != (hi - lo + 1) * self.bb:
            raise RuntimeError(f"memory dump of words {lo}..{hi} has {len(raw)} bytes")
        off = addr - lo * self.bb
        return raw[off:off + size]

    async def write_mem(self, chunks):
        """Put ``[(addr, bytes)]`` into the memory model in one bulk load (partial words at the
        edges are merged with what the memory holds)."""
        parts = []
        for addr, raw in chunks:
            if not raw:
                continue
            lo = addr - addr % self.bb
            end = addr + len(raw)
            hi = -(-end // self.bb) * self.bb
            if lo != addr or hi != end:
                buf = bytearray(await self.read_mem(lo, hi - lo))
            else:
                buf = bytearray(hi - lo)
            buf[addr - lo:end - lo] = raw
            parts.append(to_readmemh(bytes(buf), lo, self.bb, skip_zero=False))
        if parts:
            self.load_file.write_bytes(b"".join(parts))
            await self._pulse(self.dut.mem_load)

    async def load_image(self, prog, fresh):
        """Load a program's data image. Into a fresh (all-zero) memory only the words that are
        not zero are written; over another program's image, every word."""
        image = np.load(prog["image"], mmap_mode="r")
        base = prog["base"]
        pad = (-len(image)) % self.bb
        data = np.concatenate([image, np.zeros(pad, np.uint8)]) if pad else image
        self.load_file.write_bytes(to_readmemh(data.tobytes(), base, self.bb, skip_zero=fresh))
        await self._pulse(self.dut.mem_load)

    async def reg(self, name, value=None):
        if value is None:
            return await self.axil.read_dword(self.regs[name])
        await self.axil.write_dword(self.regs[name], value)
        return None

    async def run_program(self, index, prog, progress):
        job = self.job
        d = self.dut
        win_lo, win_hi = prog["window"]
        await self.reg("WIN_BASE", win_lo)
        await self.reg("WIN_LIMIT", win_hi)
        await self.reg("PROG_BASE", prog["prog_base"])
        await self.reg("PROG_LEN", prog["num_commands"])
        await self.reg("IRQ_ENABLE", 3)
        start_cycle = int(d.cycle.value)
        start_macs = int(d.macs.value)
        start_retired = int(d.retired.value)
        t0 = time.perf_counter()
        await self.reg("CTRL", 1)
        # The HDL's clock from here to the interrupt: nothing in Python per edge.
        await FallingEdge(d.clk)
        self.clock.stop()
        d.run_int.value = 1
        budget = int(prog["budget_cycles"])
        tick = int(job.get("progress_cycles", 200_000))
        hung = False
        while not d.irq.value:
            waited = int(d.cycle.value) - start_cycle
            if waited >= budget:
                hung = True
                break
            await First(RisingEdge(d.irq), Timer(min(tick, budget - waited) * PERIOD_NS, "ns"))
            if not d.irq.value and progress is not None:
                done = int(d.retired.value) - start_retired
                progress.write_text(f"{index} {done} {int(d.cycle.value) - start_cycle}\n")
        d.run_int.value = 0
        await Timer(2 * PERIOD_NS, "ns")
        self.clock.start(start_high=False)
        await ClockCycles(d.clk, 2)
        wall = time.perf_counter() - t0
        status = await self.reg("STATUS")
        out = {
            "hung": hung,
            "status": status,
            "busy": bool(status & 1),
            "done": bool(status & 2),
            "error": bool(status & 4),
            "error_code": ErrorCode((status >> 8) & 0xFF).name,
            "error_index": await self.reg("ERR_INDEX"),
            "error_addr": await self.reg("ERR_ADDR"),
            "wall_s": wall,
            "sim_cycles": int(d.cycle.value) - start_cycle,
            "start_cycle": start_cycle,
            "start_macs": start_macs,
            "perf": {},
        }
        for pc in perf_counters(self.cfg):      # (only the counters the hardware has)
            lo = await self.reg(f"PERF_{pc.name}_LO")
            hi = await self.reg(f"PERF_{pc.name}_HI")
            out["perf"][pc.name] = (hi << 32) | lo
        await self.reg("IRQ_STATUS", 3)
        return out

    async def dump_trace(self, index, n):
        stem = Path(self.job["files"]["trace"])
        await self._pulse(self.dut.trace_dump)
        for unit in ("load", "exec", "store"):
            src = Path(f"{stem}.{unit}.hex")
            words = []
            for ln in src.read_text().splitlines()[:n + 64]:
                ln = ln.split("//")[0].strip()
                if not ln or ln.startswith("@"):
                    continue
                words.append(-1 if any(c in "xXzZ" for c in ln) else int(ln, 16))
                if len(words) == n:
                    break
            arr = np.array(words, dtype=np.int64)
            np.save(JOB / f"run{index}_trace_{unit}.npy", arr)
            src.unlink()


@cocotb.test()
async def run_job(dut):
    """Run every program of the job and write the results."""
    job = json.loads((JOB / "job.json").read_text())
    s = Session(dut, job)
    await s.reset()
    progress = Path(job["files"]["progress"]) if job["files"].get("progress") else None
    results = []
    loaded = None
    load_s = 0.0
    for i, run in enumerate(job["runs"]):
        prog = job["programs"][run["program"]]
        if loaded != run["program"]:
            t0 = time.perf_counter()
            await s.load_image(prog, fresh=loaded is None)
            load_s += time.perf_counter() - t0
            loaded = run["program"]
        writes = [(a, Path(f).read_bytes()) for a, f in run["writes"]]
        await s.write_mem(writes)
        res = await s.run_program(i, prog, progress)
        if job.get("trace"):
            await s.dump_trace(i, prog["num_commands"])
        for j, (addr, size) in enumerate(run["reads"]):
            (JOB / f"run{i}_read{j}.bin").write_bytes(await s.read_mem(addr, size))
        results.append(res)
        if res["hung"] or res["busy"]:
            break
    (JOB / "result.json").write_text(json.dumps({"load_s": load_s, "runs": results}, indent=1))
    for res in results:
        assert not res["hung"], "no interrupt within the cycle budget"
