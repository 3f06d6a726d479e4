"""The RTL backend of the driver: compiled programs on the generated Verilog, in cocotb.

::

    from firmware import driver
    y = driver.run(program, x, backend="rtl")                       # Verilator
    y = driver.run(program, x, backend=RtlBackend(simulator="icarus", waves=True))

The backend writes a job (the data image, each run's input writes and output reads) into a
work directory and runs ``sim/tb_run.py`` on the cached ``npu_tb`` build of the program's
configuration (:mod:`sim.runner`). The memory lives in the simulator (``sim/hdl/axi_mem.v``,
loaded in bulk) and the clock in the HDL, so the testbench sleeps until the interrupt; a
progress bar follows the retired-command count. After a run, :attr:`RtlBackend.last` holds
the performance counters, the simulated cycles, the wall time and the retirement trace (per
command: the cycle it completed and the MAC-active count then), from which
:func:`layer_report` gives per-layer cycles and utilization.

Options: ``simulator`` (verilator, icarus), ``waves`` (VCD on Verilator, FST on Icarus, in the
build directory), ``stall`` (percent of cycles every AXI channel of the memory model stalls:
random backpressure), ``latency`` (memory read latency in cycles), ``progress`` (show a tqdm
bar; default: when stderr is a terminal).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware.driver import DriverError
from hdl.config import REPO

from . import runner

__all__ = ["RtlBackend", "RtlJob", "RtlRun", "layer_report"]


@dataclass
class RtlJob:
    """One program run: the program, ``(address, bytes)`` to write after its image is loaded,
    ``(address, size)`` to read back after it ends."""
    program: object
    writes: list = field(default_factory=list)
    reads: list = field(default_factory=list)


@dataclass
class RtlRun:
    """What one program run on the RTL measured."""
    status: dict
    perf: dict
    sim_cycles: int
    wall_s: float
    trace: dict = field(default_factory=dict)   # unit -> int64 array: cycle << 32 | macs

    def retire_cycles(self, unit):
        t = self.trace.get(unit)
        return None if t is None else np.where(t < 0, -1, t >> 32)

    def retire_macs(self, unit):
        t = self.trace.get(unit)
        return None if t is None else np.where(t < 0, -1, t & 0xFFFF_FFFF)


class RtlBackend:
    """Run programs on the RTL simulation (see the module docstring)."""

    name = "rtl"

    def __init__(self, simulator="verilator", waves=False, stall=0, latency=0, seed=1,
                 progress=None, trace=True, workdir=None, budget_factor=8.0, build_args=()):
        if simulator not in runner.SIMULATORS:
            raise DriverError(f"unknown simulator {simulator!r} (available: "
                              f"{', '.join(runner.SIMULATORS)})")
        reason = runner.simulator_available(simulator)
        if reason:
            raise DriverError(f"rtl backend: {reason}")
        if not 0 <= int(stall) <= 90:
            raise DriverError(f"stall must be a percentage between 0 and 90, not {stall!r}")
        self.simulator = simulator
        self.waves = bool(waves)
        self.stall = int(stall)
        self.latency = int(latency)
        self.seed = int(seed)
        self.progress = sys.stderr.isatty() if progress is None else bool(progress)
        self.trace = bool(trace)
        self.workdir = workdir
        self.budget_factor = budget_factor
        self.build_args = tuple(build_args)
        self.last: list[RtlRun] = []
        self.load_s = 0.0
        self.wall_s = 0.0
        self.build_s = 0.0
        self.build_dir = None

    # -- the driver's interface ------------------------------------------------------------

    def execute(self, program, writes, reads):
        return self.run([RtlJob(program, writes, reads)])[0]

    def execute_batch(self, program, batch, reads):
        """Run ``program`` once per entry of ``batch`` (each a list of ``(address, bytes)``
        writes), in one simulation; returns per run the bytes of each ``(address, size)`` of
        ``reads``. The image is loaded once; each run writes its inputs over it."""
        return self.run([RtlJob(program, writes, reads) for writes in batch])

    def run(self, jobs):
        """Run every :class:`RtlJob` in order, in one simulation (the programs must be compiled
        for one configuration). Returns per job the bytes of each of its reads; the measurements
        are in :attr:`last`, one :class:`RtlRun` per job."""
        if not jobs:
            return []
        cfg = jobs[0].program.config()
        mem = 1 << runner._mem_addr_bits(self.simulator)
        for j in jobs:
            p = j.program
            if p.fingerprint != cfg.fingerprint():
                raise DriverError("rtl backend: the programs of one simulation must be compiled "
                                  "for one configuration")
            if p.base + p.image_size > mem:
                raise DriverError(f"rtl backend: the program needs {p.base + p.image_size} bytes "
                                  f"of memory; the {self.simulator} memory model has {mem}")
        t_build = time.perf_counter()
        self.build_dir = runner.build(cfg, self.simulator, waves=self.waves,
                                      extra_args=self.build_args)
        self.build_s = time.perf_counter() - t_build
        own = self.workdir is None
        if own:
            (REPO / "build").mkdir(exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix="rtl-", dir=REPO / "build"))
        else:
            work = Path(self.workdir)
            work.mkdir(parents=True, exist_ok=True)
        try:
            return self._execute(cfg, jobs, work)
        finally:
            if own:
                shutil.rmtree(work, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------------

    def _budget(self, program):
        predicted = program.manifest.get("totals", {}).get("predicted_cycles", 0)
        return int(self.budget_factor * predicted) + 200 * program.num_commands + 1_000_000

    def _execute(self, cfg, jobs, work):
        programs, index = [], {}
        runs = []
        for i, job in enumerate(jobs):
            p = job.program
            if id(p) not in index:
                index[id(p)] = len(programs)
                image = work / f"image{len(programs)}.npy"
                np.save(image, p.image())
                programs.append({"image": str(image), "base": p.base, "prog_base": p.prog_base,
                                 "num_commands": p.num_commands, "window": list(p.window),
                                 "budget_cycles": self._budget(p)})
            files = []
            for j, (addr, raw) in enumerate(job.writes):
                f = work / f"run{i}_write{j}.bin"
                f.write_bytes(bytes(raw))
                files.append([int(addr), str(f)])
            runs.append({"program": index[id(p)], "writes": files,
                         "reads": [[int(a), int(n)] for a, n in job.reads]})
        files = {"load": str(work / "load.hex"), "dump": str(work / "dump.hex"),
                 "trace": str(work / "trace"),
                 "progress": str(work / "progress") if self.progress else None}
        job = {"config": cfg.name if _is_shipped(cfg) else None, "trace": self.trace,
               "files": files, "programs": programs, "runs": runs}
        if job["config"] is None:
            cfg_path = work / "config.toml"
            cfg_path.write_text(cfg.to_toml())
            job["config"] = str(cfg_path)
        (work / "job.json").write_text(json.dumps(job, indent=1))
        plusargs = [f"+mem_load={files['load']}", f"+mem_dump={files['dump']}",
                    f"+trace_file={files['trace']}", f"+mem_stall={self.stall}",
                    f"+mem_latency={self.latency}", f"+mem_seed={self.seed}"]
        t0 = time.perf_counter()
        outcome = {}

        def target():
            try:
                outcome["result"] = runner.run(cfg, "tb_run", self.simulator,
                                               extra_env={"NPU_JOB": str(work)},
                                               plusargs=plusargs, waves=self.waves,
                                               extra_args=self.build_args)
            except BaseException as err:   # reported in the calling thread
                outcome["error"] = err

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._follow(thread, work / "progress", [j.program.num_commands for j in jobs])
        thread.join()
        self.wall_s = time.perf_counter() - t0
        if "error" in outcome:
            raise outcome["error"]
        res_file = work / "result.json"
        if not res_file.exists():
            raise DriverError(f"rtl backend: the simulation ended without results; see the logs "
                              f"in {self.build_dir}")
        result = json.loads(res_file.read_text())
        self.load_s = result["load_s"]
        self.last = []
        outputs = []
        for i, r in enumerate(result["runs"]):
            trace = {}
            if self.trace:
                for unit in ("load", "exec", "store"):
                    f = work / f"run{i}_trace_{unit}.npy"
                    if f.exists():
                        trace[unit] = np.load(f)
            self.last.append(RtlRun(status=r, perf=r["perf"], sim_cycles=r["sim_cycles"],
                                    wall_s=r["wall_s"], trace=trace))
            if r["hung"]:
                raise DriverError(f"rtl backend: run {i}: no interrupt within "
                                  f"{programs[runs[i]['program']]['budget_cycles']} cycles "
                                  f"(the NPU hangs)")
            if not r["done"]:
                raise DriverError(f"rtl backend: run {i}: the NPU stopped with "
                                  f"{r['error_code']} at command {r['error_index']} "
                                  f"(address {r['error_addr']:#x})")
            outputs.append([(work / f"run{i}_read{j}.bin").read_bytes()
                            for j in range(len(runs[i]["reads"]))])
        if len(outputs) != len(jobs):
            raise DriverError(f"rtl backend: only {len(outputs)} of {len(jobs)} runs finished")
        return outputs

    def _follow(self, thread, progress_file, totals):
        """Show the retired-command count while the simulation runs."""
        if not self.progress:
            return
        from tqdm import tqdm
        starts = np.concatenate(([0], np.cumsum(totals)))
        bar = tqdm(total=int(starts[-1]), unit="cmd", desc=f"rtl ({self.simulator})",
                   file=sys.stderr, dynamic_ncols=True)
        shown = 0
        while thread.is_alive():
            thread.join(0.5)
            try:
                run, done, _ = (int(v) for v in progress_file.read_text().split())
            except (OSError, ValueError):
                continue
            now = int(starts[run]) + min(done, totals[run])
            if now > shown:
                bar.update(now - shown)
                shown = now
        bar.update(int(starts[-1]) - shown)
        bar.close()


def _is_shipped(cfg):
    from hdl.config import CONFIG_DIR, NpuConfig
    path = CONFIG_DIR / f"{cfg.name}.toml"
    return path.exists() and NpuConfig.load(cfg.name).fingerprint() == cfg.fingerprint()


def layer_report(program, run: RtlRun):
    """Per-layer measurements of one run, from the retirement trace.

    Every layer but the last ends with a barrier whose LOAD retires once the layer's last
    STORE has (:func:`firmware.kernels.barrier`); the last layer ends with the program. A layer's
    cycles run from the previous layer's end to its own, so the layers add up to the run's
    CYCLES counter. Returns one dict per layer: name, op, MACs, cycles, MAC-active cycles,
    utilization ``macs / (rows * cols * cycles)``, the compiler's predicted and ideal cycles,
    bytes moved.
    """
    cfg = program.config()
    layers = program.manifest["layers"]
    loads = run.retire_cycles("load")
    macs_at = run.retire_macs("load")
    if loads is None:
        raise DriverError("the run has no trace (RtlBackend(trace=True))")
    start, start_m = run.status["start_cycle"], run.status["start_macs"]
    total = run.perf["CYCLES"]
    out = []
    prev_c = prev_m = 0
    end = -1
    for i, layer in enumerate(layers):
        end += layer["commands"]
        if i == len(layers) - 1:
            c, mact = total, run.perf["MAC_ACTIVE"]
        else:
            if int(loads[end]) < 0:
                raise DriverError(f"layer {layer['layer']}: its barrier (command {end}) did not "
                                  f"retire")
            c, mact = int(loads[end]) - start, int(macs_at[end]) - start_m
        cycles = c - prev_c
        out.append({
            "layer": layer["layer"], "op": layer["op"], "macs": layer["macs"],
            "cycles": cycles, "mac_active": mact - prev_m,
            "utilization": layer["macs"] / (cfg.rows * cfg.cols * cycles) if cycles else 0.0,
            "predicted_cycles": layer["predicted_cycles"],
            "ideal_cycles": layer["ideal_cycles"], "bytes_moved": layer["bytes_moved"],
        })
        prev_c, prev_m = c, mact
    return out
