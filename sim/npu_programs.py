"""Random NPU programs for the RTL tests, with their golden-model outcome.

:func:`random_program` builds a valid program with :class:`firmware.program.Program` and
:func:`hdl.isa.encode`: tiles of LOADs (every target, padding, partial rows, unaligned and
overlapping memory rows), COMPUTE/POOL commands, and SETPP + STOREs (residual sometimes), fully
ordered by dependency tokens, so every schedule leaves the same memory. :func:`mutate` damages
one: bit flips, illegal opcodes, reserved bits, out-of-range fields and windows, missing END,
unbalanced tokens. :func:`expect` runs the golden model and says what the RTL must match.
"""

import contextlib
from dataclasses import dataclass

import numpy as np

from firmware.golden import GoldenNpu, NpuError
from firmware.program import Program
from hdl.isa import CMD_BYTES, Buffer, EncodeError, ErrorCode, Opcode, decode, encode

__all__ = ["Case", "random_program", "mutate", "expect", "cost", "image_of", "ErrorCode"]

#: Layout of the memory image of a random program (bytes from the window base).
SRC_SIZE = 0x3000
DST_SIZE = 0x2000
#: The last bytes of the source hold non-negative int32 words, for PARAM rows.
PARAM_SIZE = 0x400


@dataclass
class Case:
    image: np.ndarray      # memory image from address 0 (the whole memory)
    prog_base: int
    prog_len: int
    dst: tuple             # (address, size) of the region STOREs write
    expect_error: ErrorCode = ErrorCode.NONE
    expect_index: int = 0
    expect_addr: int = 0
    memory: np.ndarray = None   # golden memory after the run (None: do not compare)
    racy: bool = False
    commands: list = None
    counters: dict = None       # the golden model's counters (commands, mac_vectors, bytes...)


def _width(config, target):
    return config.rows if target == Buffer.INPUT else config.cols


def _depth(config, target):
    return {Buffer.INPUT: config.input_depth, Buffer.WEIGHT: config.weight_depth,
            Buffer.ACC: config.acc_depth, Buffer.PARAM: config.param_depth}[target]


def _fits(checker, name, index, f):
    try:
        getattr(checker, f"_check_{name}")(index, f)
        return True
    except NpuError:
        return False


def _load(config, rng, src, checker):
    for _ in range(100):
        target = Buffer(int(rng.integers(4)))
        width = _width(config, target)
        esize = 4 if target in (Buffer.ACC, Buffer.PARAM) else 1
        z, y, x = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 6))
        pads = [int(rng.integers(0, 2)) if rng.random() < 0.3 else 0 for _ in range(4)]
        if pads[0] + pads[1] > y:
            pads[0] = pads[1] = 0
        if pads[2] + pads[3] > x:
            pads[2] = pads[3] = 0
        depth = _depth(config, target)
        sxs = int(rng.integers(0, 3))
        sys_ = x * max(sxs, 1) + int(rng.integers(0, 2))
        szs = y * sys_ + int(rng.integers(0, 3))
        span = (z - 1) * szs + (y - 1) * sys_ + (x - 1) * sxs
        if span >= depth:
            continue
        elems = int(rng.integers(1, width + 1))
        row = elems * esize
        dxs = int(rng.choice([row, row + int(rng.integers(0, 9)), max(1, row // 2),
                              int(rng.integers(0, 3 * row + 1))]))
        dys = dxs * x + int(rng.integers(0, 17))
        dzs = dys * y + int(rng.integers(0, 33))
        if target == Buffer.PARAM:
            # Multipliers must be non-negative (the golden model rejects others): PARAM rows
            # come from the non-negative words at the end of the source, and pad with >= 0.
            dxs, dys, dzs = (-(-v // 4) * 4 for v in (dxs, dys, dzs))
        dspan = (z - 1) * dzs + (y - 1) * dys + (x - 1) * dxs + row
        if dspan >= (PARAM_SIZE if target == Buffer.PARAM else SRC_SIZE):
            continue
        lo = SRC_SIZE - PARAM_SIZE if target == Buffer.PARAM else 0
        dram = src + lo + int(rng.integers(0, SRC_SIZE - lo - dspan + 1))
        if target == Buffer.PARAM:
            dram &= ~3
        f = dict(target=target, elems=elems, dram_addr=dram,
                 pad_value=int(rng.integers(0 if target == Buffer.PARAM else -128, 128)),
                 pad_top=pads[0], pad_bottom=pads[1], pad_left=pads[2], pad_right=pads[3],
                 sram_addr=int(rng.integers(0, depth - span)),
                 x_size=x, y_size=y, z_size=z, sram_x_stride=sxs, sram_y_stride=sys_,
                 sram_z_stride=szs, dram_x_stride=dxs, dram_y_stride=dys, dram_z_stride=dzs)
        if _fits(checker, "load", 0, {**f, "target": target.value}):
            return f
    raise RuntimeError("no LOAD found")


def _compute(config, rng, checker):
    for _ in range(100):
        y, x = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        kz, ky, kx = (int(rng.integers(1, 3)) for _ in range(3))
        f = dict(accumulate=int(rng.integers(2)), x_size=x, y_size=y, kx_size=kx, ky_size=ky,
                 kz_size=kz, in_x_stride=int(rng.integers(0, 3)),
                 in_y_stride=int(rng.integers(0, 8)), acc_x_stride=int(rng.integers(0, 3)),
                 acc_y_stride=int(rng.integers(0, 8)), in_kx_stride=int(rng.integers(0, 3)),
                 in_ky_stride=int(rng.integers(0, 5)), in_kz_stride=int(rng.integers(0, 9)))
        tiles = kz * ky * kx
        f["wgt_addr"] = int(rng.integers(0, max(1, config.weight_depth - tiles * config.rows)))
        f["in_addr"] = int(rng.integers(0, config.input_depth - 64))
        f["acc_addr"] = int(rng.integers(0, config.acc_depth - 32))
        if _fits(checker, "compute", 0, f):
            return f
    raise RuntimeError("no COMPUTE found")


def _pool(config, rng, checker):
    for _ in range(100):
        f = dict(mode=int(rng.integers(2)), accumulate=int(rng.integers(2)),
                 win_w=int(rng.integers(1, 4)), win_h=int(rng.integers(1, 4)),
                 in_addr=int(rng.integers(0, config.input_depth - 64)),
                 acc_addr=int(rng.integers(0, config.acc_depth - 32)),
                 x_size=int(rng.integers(1, 4)), y_size=int(rng.integers(1, 4)),
                 in_x_stride=int(rng.integers(0, 3)), in_y_stride=int(rng.integers(0, 8)),
                 win_x_stride=int(rng.integers(0, 3)), win_y_stride=int(rng.integers(0, 6)),
                 acc_x_stride=int(rng.integers(0, 3)), acc_y_stride=int(rng.integers(0, 8)))
        if _fits(checker, "pool", 0, f):
            return f
    raise RuntimeError("no POOL found")


def _setpp(config, rng):
    return dict(param_addr=int(rng.integers(0, config.param_depth - 5)),
                zp=int(rng.integers(-20, 20)), lo=int(rng.integers(-128, -60)),
                hi=int(rng.integers(60, 128)), res_zp=int(rng.integers(-10, 10)),
                add_zp=int(rng.integers(-10, 10)), add_lo=-128, add_hi=127,
                add_ma=int(rng.integers(0, 1 << 31)), add_mb=int(rng.integers(0, 1 << 31)),
                add_shift=int(rng.integers(29, 34)))


def _store(config, rng, src, dst, checker):
    for _ in range(100):
        z = 1 + int(rng.integers(0, 2))
        y, x = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        elems = int(rng.integers(1, config.cols + 1))
        dxs = int(rng.choice([elems, elems + int(rng.integers(0, 9)),
                              int(rng.integers(0, 2 * elems + 1))]))
        dys = dxs * x + int(rng.integers(0, 17))
        dzs = dys * y + int(rng.integers(0, 33))
        dspan = (z - 1) * dzs + (y - 1) * dys + (x - 1) * dxs + elems
        if dspan >= min(DST_SIZE, SRC_SIZE):
            continue
        f = dict(residual=int(rng.random() < 0.3), elems=elems,
                 acc_addr=int(rng.integers(0, config.acc_depth - 64)),
                 dram_addr=dst + int(rng.integers(0, DST_SIZE - dspan + 1)),
                 res_addr=src + int(rng.integers(0, SRC_SIZE - dspan + 1)),
                 x_size=x, y_size=y, z_size=z, acc_x_stride=int(rng.integers(0, 3)),
                 acc_y_stride=int(rng.integers(0, 8)), acc_z_stride=int(rng.integers(0, 20)),
                 dram_x_stride=dxs, dram_y_stride=dys, dram_z_stride=dzs)
        if _fits(checker, "store", 0, f):
            return f
    raise RuntimeError("no STORE found")


def random_program(config, rng, tiles=None, compute=True):
    """A valid, token-ordered random program. Returns ``(Program, dst_region)``."""
    p = Program(config)
    data = rng.integers(0, 256, SRC_SIZE, dtype=np.uint8)
    data[SRC_SIZE - PARAM_SIZE + 3::4] &= 0x7F      # non-negative int32 words
    src = p.put("src", data)
    dst = p.alloc("dst", DST_SIZE)
    checker = GoldenNpu(config, 16)
    tiles = int(rng.integers(1, 4)) if tiles is None else tiles
    for t in range(tiles):
        # LOAD: the first pops the previous tile's release, the last hands over to EXECUTE.
        loads = [_load(config, rng, src, checker) for _ in range(int(rng.integers(1, 4)))]
        for i, f in enumerate(loads):
            p.emit(Opcode.LOAD, **f, pop_next=int(i == 0 and t > 0),
                   push_next=int(i == len(loads) - 1))
        # EXECUTE: computes/pools, or a zero-size COMPUTE that only relays the tokens.
        n = int(rng.integers(0, 3)) if compute else 0
        execs = []
        for _ in range(n):
            if rng.random() < 0.7:
                execs.append((Opcode.COMPUTE, _compute(config, rng, checker)))
            else:
                execs.append((Opcode.POOL, _pool(config, rng, checker)))
        if not execs:
            execs.append((Opcode.COMPUTE, {}))
        for i, (op, f) in enumerate(execs):
            p.emit(op, **f, pop_prev=int(i == 0), push_next=int(i == len(execs) - 1))
        # STORE: SETPP, stores; the last releases EXECUTE, which releases the next LOADs.
        pp = _setpp(config, rng)
        checker._pp_static = pp
        p.emit(Opcode.SETPP, **pp, pop_prev=1)
        stores = [_store(config, rng, src, dst, checker) for _ in range(int(rng.integers(1, 3)))]
        for i, f in enumerate(stores):
            p.emit(Opcode.STORE, **f, push_prev=int(i == len(stores) - 1))
        if t + 1 < tiles:
            p.emit(Opcode.COMPUTE, pop_next=1, push_prev=1)
        else:
            p.emit(Opcode.COMPUTE, pop_next=1)
    p.end()
    return p, (dst, DST_SIZE)


def mutate(config, rng, commands):
    """A damaged copy of ``commands`` (a list of encoded commands)."""
    cmds = list(commands)
    kind = int(rng.integers(9))
    i = int(rng.integers(len(cmds)))
    word = int.from_bytes(cmds[i], "little")
    if kind == 0:      # random bit flips
        for _ in range(int(rng.integers(1, 4))):
            word ^= 1 << int(rng.integers(8, 256))
    elif kind == 1:    # illegal opcode
        word = (word & ~0xF) | int(rng.choice([0, 6, 7, 8, 9, 10, 11, 12, 13, 14]))
    elif kind == 2:    # reserved bit
        word |= 1 << 255
    elif kind == 3:    # drop END
        cmds = cmds[:-1]
        word = None
    elif kind == 4:    # token flags flipped
        word ^= 1 << int(rng.integers(4, 8))
    elif kind == 5:    # a field far out of range (buffer rows, sizes)
        op, f = decode(cmds[i])
        if isinstance(op, Opcode) and op != Opcode.END:
            key = str(rng.choice([k for k in f if k not in ("op", "reserved")]))
            f[key] = 0 if rng.random() < 0.2 else (1 << 11) - 1 if "size" in key else f[key]
            if "addr" in key or "stride" in key:
                f[key] = int(rng.integers(0, 1 << 16))
            if key == "dram_addr" or key == "res_addr":
                f[key] = int(rng.integers(0, 1 << 32))
            with contextlib.suppress(EncodeError):
                word = int.from_bytes(encode(op, **f), "little")
    elif kind == 6:    # random garbage command
        word = int.from_bytes(rng.integers(0, 256, CMD_BYTES, dtype=np.uint8).tobytes(), "little")
    elif kind == 7:    # extra pop that nothing pushes
        op, f = decode(cmds[i])
        if isinstance(op, Opcode) and op in (Opcode.COMPUTE, Opcode.POOL):
            word |= 1 << 4
        elif isinstance(op, Opcode) and op == Opcode.LOAD:
            word |= 1 << 5
    elif kind == 8:    # swap two commands
        j = int(rng.integers(len(cmds)))
        cmds[i], cmds[j] = cmds[j], cmds[i]
        word = None
    if word is not None:
        cmds[i] = word.to_bytes(CMD_BYTES, "little")
    return cmds


def cost(commands):
    """Rows the program moves or computes (a bound on its simulation time)."""
    total = 0
    for raw in commands:
        op, f = decode(raw)
        if op in (Opcode.LOAD, Opcode.STORE):
            total += f["z_size"] * f["y_size"] * f["x_size"]
        elif op == Opcode.COMPUTE:
            total += f["y_size"] * f["x_size"] * f["kx_size"] * f["ky_size"] * f["kz_size"]
        elif op == Opcode.POOL:
            total += f["y_size"] * f["x_size"] * f["win_w"] * f["win_h"]
        elif op == Opcode.END:
            break
    return total


class _Youngest:
    """A golden-model schedule that always runs the youngest runnable command: the opposite
    of the default, so a race between queues shows up as different memory."""

    @staticmethod
    def integers(n):
        return n - 1


def expect(config, image, prog_base, prog_len, dst, mem_size, window=None, schedules=0,
           seed=0):
    """Run the golden model; returns a :class:`Case`. With ``schedules``, also runs that many
    random schedules and marks the case racy if any leaves different memory."""
    def run(schedule):
        g = GoldenNpu(config, mem_size)
        g.write(0, image)
        res = g.run(prog_base, prog_len, window=window, schedule=schedule)
        return g, res
    g, res = run(None)
    case = Case(image=image, prog_base=prog_base, prog_len=prog_len, dst=dst,
                expect_error=res.error, expect_index=res.index or 0,
                expect_addr=(res.address or 0) & 0xFFFFFFFF, memory=g.mem.copy(),
                counters=dict(res.counters))
    if res.ok and schedules:
        rng = np.random.default_rng(seed)
        for k in range(schedules + 1):
            g2, res2 = run(_Youngest() if k == 0 else rng)
            if not res2.ok or not np.array_equal(g2.mem, g.mem):
                case.racy = True
                break
    return case


def image_of(config, program, mem_size, commands=None):
    """The whole memory image (from address 0) of ``program``, with ``commands`` instead of
    its own if given."""
    img = np.zeros(mem_size, dtype=np.uint8)
    raw = program.image()
    if commands is not None:
        data_part = raw[:program.prog_base - program.base]
        raw = np.concatenate([data_part, np.frombuffer(b"".join(commands), dtype=np.uint8)])
    img[program.base:program.base + raw.size] = raw
    return img
