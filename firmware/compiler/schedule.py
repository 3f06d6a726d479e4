"""Schedule and encode: layer steps -> the command stream of a :class:`~firmware.program.Program`.

Each step is tiled to the configuration's buffers and double-buffered by its kernel
(:mod:`firmware.kernels`: dependency tokens let LOAD, EXECUTE and STORE overlap within a layer);
layers are separated by :func:`~firmware.kernels.barrier`, so a layer's LOADs see the previous
layer's STOREs. While the commands are emitted, a per-layer account is kept: commands, MACs,
array cycles, bytes moved, and a predicted cycle count.

Predicted cycles (a simple model, documented here and in the CSV header):

- *array* = the vectors entering the array (one per cycle: the MAC_ACTIVE count of COMPUTE, and
  one window row per cycle for POOL) plus the array's latency and ``rows`` fill/drain cycles per
  COMPUTE or POOL (the first tile's weight rows, the array, the accumulator update);
- *load* = bytes read by LOADs / bus bytes, plus 4 cycles per LOAD (address phase);
- *store* = bytes written (and residual bytes read) by STOREs / bus bytes, plus 4 per STORE, or
  the post-processor's ``ceil(cols / postproc_lanes) * postproc_steps`` cycles per row stored,
  whichever is more;
- the three units overlap (double buffering), so a layer takes ``max(array, load, store)`` plus
  2 cycles per command for fetch and dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hdl.isa import Buffer, Opcode
from hdl.systolic import SystolicArray

from .. import kernels
from ..program import Program, Tensor
from .allocate import Allocation
from .lower import AvgStep, ConvStep, Lowered, PoolStep

__all__ = ["LayerStats", "StatsProgram", "schedule"]


@dataclass
class LayerStats:
    layer: str
    op: str
    macs: int = 0
    commands: int = 0
    vectors: int = 0          # array cycles with an input vector entering
    fills: int = 0            # COMPUTE/POOL commands (each pays a fill/drain)
    load_bytes: int = 0
    store_bytes: int = 0
    loads: int = 0
    stores: int = 0
    store_rows: int = 0       # accumulator rows through the post-processor

    def ideal_cycles(self, cfg):
        return -(-self.macs // cfg.macs)

    def predicted_cycles(self, cfg):
        # fill/drain: the array's latency, the accumulator update, and the first tile's
        # weight rows entering the array ahead of its first vector
        array = self.vectors + self.fills * (SystolicArray.latency(cfg.rows, cfg.cols,
                                                                  cfg.slices) + cfg.rows)
        load = -(-self.load_bytes // cfg.bus_bytes) + 4 * self.loads
        store = max(-(-self.store_bytes // cfg.bus_bytes) + 4 * self.stores,
                    self.store_rows * cfg.pp_row_cycles)
        return max(array, load, store) + 2 * self.commands

    def row(self, cfg):
        return {"layer": self.layer, "op": self.op, "macs": self.macs,
                "ideal_cycles": self.ideal_cycles(cfg),
                "predicted_cycles": self.predicted_cycles(cfg),
                "bytes_moved": self.load_bytes + self.store_bytes, "commands": self.commands}


@dataclass
class StatsProgram(Program):
    """A :class:`Program` that accounts every emitted command to the current layer."""
    layers: list = field(default_factory=list)

    def emit(self, op, **f):
        s = self.layers[-1] if self.layers else None
        if s is not None:
            s.commands += 1
            if op == Opcode.COMPUTE:
                v = f.get("y_size", 0) * f.get("x_size", 0) * f.get("kz_size", 0) * \
                    f.get("ky_size", 0) * f.get("kx_size", 0)
                s.vectors += v
                s.fills += v > 0
            elif op == Opcode.POOL:
                v = f.get("y_size", 0) * f.get("x_size", 0) * f.get("win_h", 0) * \
                    f.get("win_w", 0)
                s.vectors += v
                s.fills += v > 0
            elif op == Opcode.LOAD:
                rows = f.get("z_size", 0) * \
                    max(0, f.get("y_size", 0) - f.get("pad_top", 0) - f.get("pad_bottom", 0)) * \
                    max(0, f.get("x_size", 0) - f.get("pad_left", 0) - f.get("pad_right", 0))
                esize = 4 if f.get("target") in (Buffer.ACC, Buffer.PARAM) else 1
                s.load_bytes += rows * f.get("elems", 0) * esize
                s.loads += rows > 0
            elif op == Opcode.STORE:
                rows = f.get("z_size", 0) * f.get("y_size", 0) * f.get("x_size", 0)
                s.store_bytes += rows * f.get("elems", 0) * (2 if f.get("residual") else 1)
                s.stores += rows > 0
                s.store_rows += rows
        return super().emit(op, **f)


def schedule(low: Lowered, alloc: Allocation, config) -> tuple[StatsProgram, dict]:
    """Emit every step. Returns the program and the activation tensors by name (addresses
    final)."""
    prog = StatsProgram(config)
    arena = prog.alloc("activations", max(alloc.size, 64))
    st = low.storage
    tensors = {}

    def tensor(q):
        t = tensors.get(q.name)
        if t is None:
            t = tensors[q.name] = Tensor(arena + alloc.offsets[st[q.name]], q.h, q.w, q.c)
        return t

    q = low.tensors[low.input]
    pt, pl, pb, pr = low.input_pad
    stored_in = tensors[q.name] = Tensor(arena + alloc.offsets[st[q.name]], q.h + pt + pb,
                                         q.w + pl + pr, q.c)
    for i, step in enumerate(low.steps):
        if i:
            kernels.barrier(prog)      # counted to the previous layer
        prog.layers.append(LayerStats(step.name, step.op_type, step.macs))
        x, out = tensor(step.x), tensor(step.out)
        if isinstance(step, ConvStep) and step.pack:
            # The im2col view of the padded input: pixel (y, x) = pixels x .. x + pack - 1.
            x = Tensor(stored_in.address, stored_in.height, stored_in.width - step.pack + 1,
                       step.pack * q.c, x_stride=q.c, y_stride=stored_in.row_stride)
        if isinstance(step, ConvStep):
            res = None
            if step.residual is not None:
                r = step.residual
                res = kernels.Residual(tensor(r.tensor), r.tensor.zp, r.add_zp, r.ma, r.mb,
                                       r.shift, r.lo, r.hi)
            kernels.conv2d(prog, x, step.x.zp, step.w, step.rq, out, step.stride, step.pad,
                           residual=res, name=step.name)
        elif isinstance(step, PoolStep):
            kernels.maxpool(prog, x, out, step.kernel, step.stride, step.pad, name=step.name)
        elif isinstance(step, AvgStep):
            kernels.global_avgpool(prog, x, step.x.scale, step.x.zp, step.out.scale,
                                   step.out.zp, out, name=step.name)
        else:                                            # pragma: no cover
            raise TypeError(f"unknown step {step!r}")
    prog.end()
    tensor(low.tensors[low.output])
    return prog, tensors
