"""Golden model: executes a command stream against a byte-addressed memory image with numpy.

This is the reference the RTL is held to, bit for bit. It follows ``docs/isa.md`` (command
semantics, dispatch, dependency tokens, errors) and ``docs/numerics.md`` (arithmetic), and does all
arithmetic through :mod:`firmware.numerics`.

Execution model
---------------
The command processor fetches commands in program order, checks each one completely (opcode,
fields, buffer ranges, memory window) and dispatches it to its queue; a full queue stalls the fetch.
Each unit takes the head of its queue, waits until every token it pops is available and every
channel it pushes to has room, then executes the command and pushes its tokens. The golden model
runs every command atomically; for a program whose dependencies are expressed by tokens, any such
schedule leaves the same memory, which is why the RTL must agree with it.
"""

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from hdl.isa import CMD_BYTES, QUEUE_OF, Buffer, ErrorCode, Opcode, PoolMode, Queue, decode

from . import numerics

__all__ = ["GoldenNpu", "RunResult", "NpuError", "TOKEN_CHANNELS"]

#: Dependency-token channels: (pushing queue, flag) -> (popping queue, flag).
TOKEN_CHANNELS = {
    "load->execute": (Queue.LOAD, "push_next", Queue.EXECUTE, "pop_prev"),
    "execute->load": (Queue.EXECUTE, "push_prev", Queue.LOAD, "pop_next"),
    "execute->store": (Queue.EXECUTE, "push_next", Queue.STORE, "pop_prev"),
    "store->execute": (Queue.STORE, "push_prev", Queue.EXECUTE, "pop_next"),
}
_POPS = {q: [(ch, flag) for ch, (_, _, pq, flag) in TOKEN_CHANNELS.items() if pq == q]
         for q in Queue}
_PUSHES = {q: [(ch, flag) for ch, (sq, flag, _, _) in TOKEN_CHANNELS.items() if sq == q]
           for q in Queue}
#: Token flags that name a neighbour a queue does not have.
_NO_NEIGHBOUR = {Queue.LOAD: ("pop_prev", "push_prev"), Queue.EXECUTE: (),
                 Queue.STORE: ("pop_next", "push_next")}


class NpuError(Exception):
    """The NPU stopped with an error; ``code``, ``index`` (command) and ``address`` say why."""

    def __init__(self, code, index, message, address=None):
        self.code = code
        self.index = index
        self.address = address
        where = f"command {index}: " if index is not None else ""
        super().__init__(f"{code.name}: {where}{message}")


@dataclass
class RunResult:
    """Outcome of :meth:`GoldenNpu.run`, as the STATUS/ERR_* registers would report it."""
    error: ErrorCode = ErrorCode.NONE
    index: int | None = None
    address: int | None = None
    message: str = ""
    counters: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.error == ErrorCode.NONE

    def raise_for_error(self):
        if not self.ok:
            raise NpuError(self.error, self.index, self.message, self.address)
        return self


@dataclass
class _Cmd:
    index: int
    op: Opcode
    queue: Queue
    f: dict


def _span(base, sizes, strides):
    """Highest address of ``base + sum(i_k * stride_k)`` over ``i_k < size_k`` (sizes > 0)."""
    return base + sum((n - 1) * s for n, s in zip(sizes, strides))


def _grid(base, sizes, strides):
    """Addresses ``base + sum(i_k * stride_k)`` as an int64 array of shape ``sizes``."""
    out = np.int64(base)
    for n, s in zip(sizes, strides):
        out = np.add.outer(out, np.arange(0, n * s, s, dtype=np.int64) if s else
                           np.zeros(n, dtype=np.int64))
    return out


def _last_unique(addrs):
    """Indices (into the flattened ``addrs``) of the last occurrence of each address."""
    flat = addrs.reshape(-1)
    _, rev = np.unique(flat[::-1], return_index=True)
    return np.sort(flat.size - 1 - rev)


class GoldenNpu:
    """Bit-exact numpy model of an NPU of the given :class:`hdl.config.NpuConfig`.

    Parameters
    ----------
    config : NpuConfig
        The configuration the program was compiled for.
    memory_size : int
        Bytes of memory behind the bus.
    memory_base : int
        Bus address of the first byte of memory. Accesses inside the window but outside
        ``[memory_base, memory_base + memory_size)`` answer with a bus error.
    """

    def __init__(self, config, memory_size, memory_base=0):
        self.config = config
        self.memory_base = memory_base
        self.mem = np.zeros(memory_size, dtype=np.uint8)
        c = config
        self.buffers = {
            Buffer.INPUT: np.zeros((c.input_depth, c.rows), dtype=np.int8),
            Buffer.WEIGHT: np.zeros((c.weight_depth, c.cols), dtype=np.int8),
            Buffer.ACC: np.zeros((c.acc_depth, c.cols), dtype=np.int32),
            Buffer.PARAM: np.zeros((c.param_depth, c.cols), dtype=np.int32),
        }
        self.pp = {}
        self.window = (c.window_base, c.window_base + c.window_size - 1)

    # -- memory ---------------------------------------------------------------------------------

    def write(self, address, payload):
        """Write bytes (or any numpy array, as its raw bytes) at a bus address."""
        buf = np.frombuffer(bytes(payload) if not isinstance(payload, np.ndarray)
                            else np.ascontiguousarray(payload).tobytes(), dtype=np.uint8)
        start = address - self.memory_base
        if start < 0 or start + buf.size > self.mem.size:
            raise ValueError(f"write of {buf.size} bytes at {address:#x} is outside memory "
                             f"[{self.memory_base:#x}, {self.memory_base + self.mem.size:#x})")
        self.mem[start:start + buf.size] = buf

    def read(self, address, size):
        """Read ``size`` bytes at a bus address, as a uint8 array (a copy)."""
        start = address - self.memory_base
        if start < 0 or start + size > self.mem.size:
            raise ValueError(f"read of {size} bytes at {address:#x} is outside memory")
        return self.mem[start:start + size].copy()

    # -- running --------------------------------------------------------------------------------

    def run(self, prog_base, prog_len, window=None, schedule=None):
        """Run the program of ``prog_len`` commands at ``prog_base`` until END or an error.

        ``window`` is ``(base, limit)`` with ``limit`` inclusive, as the WIN_BASE/WIN_LIMIT
        registers; it defaults to the configuration's reset window. ``schedule`` picks which
        runnable queue head executes next: ``None`` the oldest, or a ``numpy.random.Generator``
        a random one (a program synchronised by tokens gives the same memory either way; a race
        shows up as a difference). Returns a :class:`RunResult`; memory and buffers keep whatever
        the commands executed before an error wrote.
        """
        if window is not None:
            self.window = (int(window[0]), int(window[1]))
        counters = {"commands": 0, "mac_vectors": 0, "macs": 0, "bytes_read": 0,
                    "bytes_written": 0}
        self._counters = counters
        try:
            self._run(prog_base, prog_len, schedule)
        except NpuError as err:
            return RunResult(err.code, err.index, err.address, str(err), counters)
        return RunResult(counters=counters)

    def _run(self, prog_base, prog_len, schedule):
        c = self.config
        if prog_base % CMD_BYTES or prog_len <= 0:
            raise NpuError(ErrorCode.BAD_PROGRAM, None,
                           f"PROG_BASE {prog_base:#x} must be {CMD_BYTES}-byte aligned and "
                           f"PROG_LEN {prog_len} positive")
        # (a queue's depth counts the command its unit runs or waits to run)
        capacity = {Queue.LOAD: c.load_depth, Queue.EXECUTE: c.execute_depth,
                    Queue.STORE: c.store_depth}
        queues = {q: deque() for q in Queue}
        tokens = dict.fromkeys(TOKEN_CHANNELS, 0)
        self._pp_static = None   # SETPP state as seen by the dispatcher, for static checks
        nxt, ended, pending = 0, False, None
        while True:
            # Dispatch in program order while there is room (a fetched command waits in
            # `pending` while its queue is full).
            while not ended:
                if pending is None:
                    if nxt >= prog_len:
                        raise NpuError(ErrorCode.PROGRAM_END, nxt,
                                       f"ran past PROG_LEN = {prog_len} without an END command")
                    pending = self._fetch(prog_base, nxt)
                    nxt += 1
                if pending.op == Opcode.END:
                    ended = True
                    break
                if len(queues[pending.queue]) >= capacity[pending.queue]:
                    break
                queues[pending.queue].append(pending)
                pending = None
            # Execute one runnable head: the oldest, or a random one.
            heads = sorted((qq[0] for qq in queues.values() if qq), key=lambda k: k.index)
            ready = [h for h in heads if self._ready(h, tokens)]
            if ready:
                runnable = ready[0] if schedule is None else ready[schedule.integers(len(ready))]
            else:
                if ended and not heads:
                    self._counters["commands"] += 1   # END retires
                    return
                self._deadlock(heads, tokens, nxt, ended)
            queues[runnable.queue].popleft()
            for ch, flag in _POPS[runnable.queue]:
                if runnable.f[flag]:
                    tokens[ch] -= 1
            self._execute(runnable)
            for ch, flag in _PUSHES[runnable.queue]:
                if runnable.f[flag]:
                    tokens[ch] += 1
            self._counters["commands"] += 1

    def _ready(self, cmd, tokens):
        q = cmd.queue
        if any(cmd.f[flag] and tokens[ch] == 0 for ch, flag in _POPS[q]):
            return False
        return not any(cmd.f[flag] and tokens[ch] >= self.config.token_depth
                       for ch, flag in _PUSHES[q])

    def _deadlock(self, heads, tokens, nxt, ended):
        head = heads[0] if heads else None
        waits = []
        for h in heads:
            for ch, flag in _POPS[h.queue]:
                if h.f[flag] and tokens[ch] == 0:
                    waits.append(f"command {h.index} ({h.op.name}) pops {ch} with no token")
            for ch, flag in _PUSHES[h.queue]:
                if h.f[flag] and tokens[ch] >= self.config.token_depth:
                    waits.append(f"command {h.index} ({h.op.name}) pushes {ch}, which is full "
                                 f"({self.config.token_depth} tokens)")
        fetch = "fetch finished (END seen)" if ended else \
            f"fetch stalled at command {nxt - 1} (its queue is full)"
        raise NpuError(ErrorCode.TOKEN_DEADLOCK, head.index if head else nxt,
                       "token underflow/deadlock: " + "; ".join(waits) + f"; {fetch}")

    # -- fetch and static checks -----------------------------------------------------------------

    def _fetch(self, prog_base, index):
        addr = prog_base + CMD_BYTES * index
        self._check_window(index, addr, addr + CMD_BYTES - 1, "command fetch")
        raw = self._mem_view(index, addr, CMD_BYTES).tobytes()
        self._counters["bytes_read"] += CMD_BYTES
        op, f = decode(raw)
        if not isinstance(op, Opcode):
            raise NpuError(ErrorCode.ILLEGAL_OPCODE, index, f"opcode {op} is not defined "
                           f"(legal: {', '.join(f'{o.name}={o.value}' for o in Opcode)})")
        if f["reserved"]:
            raise NpuError(ErrorCode.ILLEGAL_FIELD, index, f"{op.name}: reserved bits are set "
                           f"({f['reserved']:#x})")
        queue = QUEUE_OF.get(op)
        if op == Opcode.END:
            flags = [k for k in ("pop_prev", "pop_next", "push_prev", "push_next") if f[k]]
            if flags:
                raise NpuError(ErrorCode.ILLEGAL_FIELD, index,
                               f"END carries token flags {', '.join(flags)}")
            return _Cmd(index, op, None, f)
        for flag in _NO_NEIGHBOUR[queue]:
            if f[flag]:
                raise NpuError(ErrorCode.ILLEGAL_FIELD, index,
                               f"{op.name}: {flag} is set but the {queue.name} queue has no "
                               f"{'previous' if flag.endswith('prev') else 'next'} queue")
        getattr(self, f"_check_{op.name.lower()}")(index, f)
        return _Cmd(index, op, queue, f)

    def _illegal(self, index, op, msg):
        raise NpuError(ErrorCode.ILLEGAL_FIELD, index, f"{op}: {msg}")

    def _check_rows(self, index, op, name, buffer, base, sizes, strides, extra=0):
        depth = self.buffers[buffer].shape[0]
        top = _span(base, sizes, strides) + extra
        if top >= depth:
            raise NpuError(ErrorCode.BUFFER_OVERFLOW, index,
                           f"{op}: {name} rows reach row {top}, past the {buffer.name} buffer's "
                           f"{depth} rows")

    def _check_window(self, index, lo, hi, what):
        wlo, whi = self.window
        if lo < wlo or hi > whi:
            bad = lo if lo < wlo else hi
            raise NpuError(ErrorCode.WINDOW, index,
                           f"{what} touches [{lo:#x}, {hi:#x}], outside the window "
                           f"[{wlo:#x}, {whi:#x}]", address=bad)

    def _row_width(self, buffer):
        return self.buffers[buffer].shape[1]

    def _check_load(self, index, f):
        buf = Buffer(f["target"])
        width = self._row_width(buf)
        if not 1 <= f["elems"] <= width:
            self._illegal(index, "LOAD", f"elems = {f['elems']} must be 1..{width} "
                                         f"(row width of {buf.name})")
        sizes = (f["z_size"], f["y_size"], f["x_size"])
        if 0 in sizes:
            return
        if f["pad_top"] + f["pad_bottom"] > f["y_size"] or \
                f["pad_left"] + f["pad_right"] > f["x_size"]:
            self._illegal(index, "LOAD", "padding exceeds the y/x sizes")
        self._check_rows(index, "LOAD", "sram", buf, f["sram_addr"], sizes,
                         (f["sram_z_stride"], f["sram_y_stride"], f["sram_x_stride"]))
        isizes = self._interior(f)
        if 0 not in isizes:
            esize = 1 if buf in (Buffer.INPUT, Buffer.WEIGHT) else 4
            hi = _span(f["dram_addr"], isizes, self._dram_strides(f)) + f["elems"] * esize - 1
            self._check_window(index, f["dram_addr"], hi, "LOAD")

    def _check_store(self, index, f):
        cols = self.config.cols
        if not 1 <= f["elems"] <= cols:
            self._illegal(index, "STORE", f"elems = {f['elems']} must be 1..{cols}")
        sizes = (f["z_size"], f["y_size"], f["x_size"])
        if 0 in sizes:
            return
        if self._pp_static is None:
            self._illegal(index, "STORE", "no SETPP precedes it")
        self._check_rows(index, "STORE", "acc", Buffer.ACC, f["acc_addr"], sizes,
                         (f["acc_z_stride"], f["acc_y_stride"], f["acc_x_stride"]))
        self._check_rows(index, "STORE", "param", Buffer.PARAM, self._pp_static["param_addr"],
                         (f["z_size"],), (3,), extra=2)
        hi = _span(f["dram_addr"], sizes, self._dram_strides(f)) + f["elems"] - 1
        self._check_window(index, f["dram_addr"], hi, "STORE")
        if f["residual"]:
            hi = _span(f["res_addr"], sizes, self._dram_strides(f)) + f["elems"] - 1
            self._check_window(index, f["res_addr"], hi, "STORE residual")

    @staticmethod
    def _ksizes(f):
        return (f["kz_size"], f["ky_size"], f["kx_size"])

    @staticmethod
    def _kstrides(f):
        return (f["in_kz_stride"], f["in_ky_stride"], f["in_kx_stride"])

    def _check_compute(self, index, f):
        sizes, ksizes = (f["y_size"], f["x_size"]), self._ksizes(f)
        if 0 in sizes or 0 in ksizes:
            return
        tiles = ksizes[0] * ksizes[1] * ksizes[2]
        self._check_rows(index, "COMPUTE", "weight", Buffer.WEIGHT, f["wgt_addr"], (1,), (0,),
                         extra=tiles * self.config.rows - 1)
        self._check_rows(index, "COMPUTE", "input", Buffer.INPUT, f["in_addr"], sizes + ksizes,
                         (f["in_y_stride"], f["in_x_stride"]) + self._kstrides(f))
        self._check_rows(index, "COMPUTE", "acc", Buffer.ACC, f["acc_addr"], sizes,
                         (f["acc_y_stride"], f["acc_x_stride"]))

    def _check_pool(self, index, f):
        if f["win_w"] < 1 or f["win_h"] < 1:
            self._illegal(index, "POOL", f"window {f['win_h']}x{f['win_w']} must be at least 1x1")
        sizes = (f["y_size"], f["x_size"])
        if 0 in sizes:
            return
        self._check_rows(index, "POOL", "input", Buffer.INPUT, f["in_addr"],
                         sizes + (f["win_h"], f["win_w"]),
                         (f["in_y_stride"], f["in_x_stride"], f["win_y_stride"],
                          f["win_x_stride"]))
        self._check_rows(index, "POOL", "acc", Buffer.ACC, f["acc_addr"], sizes,
                         (f["acc_y_stride"], f["acc_x_stride"]))

    def _check_setpp(self, index, f):
        self._pp_static = f

    # -- execution ------------------------------------------------------------------------------

    @staticmethod
    def _interior(f):
        return (f["z_size"], f["y_size"] - f["pad_top"] - f["pad_bottom"],
                f["x_size"] - f["pad_left"] - f["pad_right"])

    @staticmethod
    def _dram_strides(f):
        return (f["dram_z_stride"], f["dram_y_stride"], f["dram_x_stride"])

    def _mem_view(self, index, addr, size):
        start = addr - self.memory_base
        if start < 0 or start + size > self.mem.size:
            raise NpuError(ErrorCode.BUS_ERROR, index,
                           f"no memory at [{addr:#x}, {addr + size - 1:#x}]", address=addr)
        return self.mem[start:start + size]

    def _gather(self, index, addrs, nbytes):
        """The ``nbytes`` bytes at each address of ``addrs``: shape ``addrs.shape + (nbytes,)``."""
        lo, hi = int(addrs.min()), int(addrs.max()) + nbytes
        view = self._mem_view(index, lo, hi - lo)
        self._counters["bytes_read"] += addrs.size * nbytes
        return view[(addrs - lo)[..., None] + np.arange(nbytes)]

    def _scatter(self, index, addrs, rows):
        """Write ``rows`` (shape addrs.shape + (n,), uint8) at ``addrs``; later rows win."""
        nbytes = rows.shape[-1]
        lo, hi = int(addrs.min()), int(addrs.max()) + nbytes
        view = self._mem_view(index, lo, hi - lo)
        flat_addrs = ((addrs - lo)[..., None] + np.arange(nbytes)).reshape(-1)
        flat_rows = rows.reshape(-1)
        keep = _last_unique(flat_addrs)
        view[flat_addrs[keep]] = flat_rows[keep]
        self._counters["bytes_written"] += rows.size

    @staticmethod
    def _write_rows(buffer, addrs, rows):
        flat = addrs.reshape(-1)
        rows = rows.reshape(flat.size, -1)
        if np.unique(flat).size != flat.size:
            keep = _last_unique(flat)
            flat, rows = flat[keep], rows[keep]
        buffer[flat] = rows

    def _execute(self, cmd):
        getattr(self, f"_exec_{cmd.op.name.lower()}")(cmd.index, cmd.f)

    def _exec_load(self, index, f):
        buf = Buffer(f["target"])
        target = self.buffers[buf]
        sizes = (f["z_size"], f["y_size"], f["x_size"])
        if 0 in sizes:
            return
        width, elems = target.shape[1], f["elems"]
        block = np.full(sizes + (width,), f["pad_value"], dtype=target.dtype)
        isizes = self._interior(f)
        if 0 not in isizes:
            esize = target.dtype.itemsize if buf in (Buffer.ACC, Buffer.PARAM) else 1
            addrs = _grid(f["dram_addr"], isizes, self._dram_strides(f))
            raw = np.ascontiguousarray(self._gather(index, addrs, elems * esize))
            vals = raw.view("<i4" if esize == 4 else np.int8).reshape(isizes + (elems,))
            block[:, f["pad_top"]:f["pad_top"] + isizes[1],
                  f["pad_left"]:f["pad_left"] + isizes[2], :elems] = vals
        srows = _grid(f["sram_addr"], sizes,
                      (f["sram_z_stride"], f["sram_y_stride"], f["sram_x_stride"]))
        self._write_rows(target, srows, block)

    def _exec_compute(self, index, f):
        sizes, ksizes = (f["y_size"], f["x_size"]), self._ksizes(f)
        if 0 in sizes or 0 in ksizes:
            return
        rows = self.config.rows
        tiles = ksizes[0] * ksizes[1] * ksizes[2]
        # (tiles, pixels, rows) input vectors and (tiles, rows, cols) weights: the reduction over
        # tiles and lanes is one matmul over the concatenated lanes.
        in_rows = _grid(f["in_addr"], ksizes + sizes,
                        self._kstrides(f) + (f["in_y_stride"], f["in_x_stride"]))
        x = self.buffers[Buffer.INPUT][in_rows.reshape(tiles, -1)]
        w = self.buffers[Buffer.WEIGHT][f["wgt_addr"]:f["wgt_addr"] + tiles * rows]
        acc_rows = _grid(f["acc_addr"], sizes, (f["acc_y_stride"], f["acc_x_stride"])).reshape(-1)
        zero = np.zeros(w.shape[1], np.int32)
        pixels = acc_rows.size
        if np.unique(acc_rows).size == pixels:
            prod = numerics.matmul(x.transpose(1, 0, 2).reshape(pixels, tiles * rows), 0, w, zero)
            self._update_acc(acc_rows, prod, f["accumulate"], np.add)
        else:   # repeated rows: step by step, in order
            for t in range(tiles):
                prod = numerics.matmul(x[t], 0, w[t * rows:(t + 1) * rows], zero)
                self._update_acc(acc_rows, prod, f["accumulate"] or t > 0, np.add)
        self._counters["mac_vectors"] += pixels * tiles
        self._counters["macs"] += pixels * tiles * rows * self.config.cols

    def _update_acc(self, acc_rows, values, accumulate, combine):
        """Write ``values`` to accumulator rows in order: overwrite, or ``combine`` with them."""
        acc = self.buffers[Buffer.ACC]
        values = values.astype(np.int64)
        if np.unique(acc_rows).size == acc_rows.size:
            if accumulate:
                values = combine(acc[acc_rows].astype(np.int64), values)
            acc[acc_rows] = numerics.wrap_int32(values)
            return
        for row, v in zip(acc_rows, values):   # repeated rows: strictly in order
            acc[row] = numerics.wrap_int32(combine(acc[row].astype(np.int64), v)
                                           if accumulate else v)

    def _exec_pool(self, index, f):
        sizes = (f["y_size"], f["x_size"])
        if 0 in sizes:
            return
        c = self.config
        lanes = min(c.rows, c.cols)
        addrs = _grid(f["in_addr"], sizes + (f["win_h"], f["win_w"]),
                      (f["in_y_stride"], f["in_x_stride"], f["win_y_stride"], f["win_x_stride"]))
        win = self.buffers[Buffer.INPUT][addrs][..., :lanes].astype(np.int64)
        win = win.reshape(sizes[0] * sizes[1], -1, lanes)
        acc_rows = _grid(f["acc_addr"], sizes, (f["acc_y_stride"], f["acc_x_stride"])).reshape(-1)
        reduce, combine = (np.max, np.maximum) if PoolMode(f["mode"]) == PoolMode.MAX else \
            (np.sum, np.add)
        values = np.zeros((acc_rows.size, c.cols), dtype=np.int64)
        values[:, :lanes] = reduce(win, axis=1)

        def combine_lanes(cur, v):   # lanes past `lanes` keep their value
            out = cur.copy()
            out[..., :lanes] = combine(cur[..., :lanes], v[..., :lanes])
            return out

        self._update_acc(acc_rows, values, f["accumulate"], combine_lanes)

    def _exec_setpp(self, index, f):
        self.pp = dict(f)

    def _exec_store(self, index, f):
        sizes = (f["z_size"], f["y_size"], f["x_size"])
        if 0 in sizes:
            return
        pp, elems = self.pp, f["elems"]
        acc_rows = _grid(f["acc_addr"], sizes,
                         (f["acc_z_stride"], f["acc_y_stride"], f["acc_x_stride"]))
        acc = self.buffers[Buffer.ACC][acc_rows]                       # (Z, Y, X, cols)
        param = self.buffers[Buffer.PARAM]
        p = pp["param_addr"] + 3 * np.arange(sizes[0])
        bias = param[p][:, None, None, :]
        mult = param[p + 1][:, None, None, :].astype(np.int64)
        shift = (param[p + 2][:, None, None, :] & 63).astype(np.int64)
        v = numerics.wrap_int32(acc.astype(np.int64) + bias)
        y = numerics.requantize(v, mult, shift, pp["zp"], pp["lo"], pp["hi"])[..., :elems]
        strides = self._dram_strides(f)
        if f["residual"]:
            raddrs = _grid(f["res_addr"], sizes, strides)
            r = self._gather(index, raddrs, elems).view(np.int8)
            y = numerics.add(y, pp["zp"], r, pp["res_zp"], pp["add_ma"], pp["add_mb"],
                             pp["add_shift"], pp["add_zp"], pp["add_lo"], pp["add_hi"])
        daddrs = _grid(f["dram_addr"], sizes, strides)
        self._scatter(index, daddrs, np.ascontiguousarray(y.astype(np.int8)).view(np.uint8))
