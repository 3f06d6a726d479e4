"""Layer kernels: one quantised layer -> commands for a given NpuConfig.

Each kernel tiles its layer to the configured buffers, double-buffers the input, weight and
accumulator buffers, and expresses every dependency with tokens through :class:`Pipeline`, so that
loading batch i+1, computing batch i and storing output i-1 overlap. Layers are separated by
:func:`barrier`. The arithmetic each kernel asks of the NPU is exactly the numerics golden function
of its operation (tests check this against :mod:`firmware.numerics`).
"""

from dataclasses import dataclass

import numpy as np

from hdl.isa import Buffer, Opcode, PoolMode

from . import numerics
from .program import Tensor

__all__ = ["Requant", "Residual", "Pipeline", "barrier", "conv2d", "maxpool",
           "global_avgpool", "KernelError"]


class KernelError(ValueError):
    """A layer cannot be mapped onto the configuration (names the layer and the limit)."""


@dataclass(frozen=True)
class Requant:
    """Per-output-channel post-processing: ``clamp(zp + rq(acc + bias, mult, shift), lo, hi)``.
    ``bias`` already holds the folded ``-x_zp * sum(w)`` term."""
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    zp: int
    lo: int = -128
    hi: int = 127


@dataclass(frozen=True)
class Residual:
    """Second post-processing stage: add an int8 tensor with its own rescale
    (``numerics.add`` with the conv output as ``a``): ``ma``, ``mb`` are the Q31 multipliers and
    ``shift`` the shared shift of ``numerics.add_multipliers`` (SETPP ``add_ma``, ``add_mb``,
    ``add_shift``)."""
    tensor: object       # Tensor of the output's shape
    zp: int              # residual zero point
    add_zp: int
    ma: int
    mb: int
    shift: int
    lo: int = -128
    hi: int = 127


def _ceil(a, b):
    return -(-a // b)


# -- Token protocol ------------------------------------------------------------------------------


@dataclass
class _Batch:
    loads: list
    execs: list
    output: int


class Pipeline:
    """Batches of (loads, executes) feeding outputs that are stored when complete.

    Token rules (all balanced, so a layer leaves every channel empty):

    - batch b's loads wait for batch b-2's executes (buffers alternate by batch), and signal
      batch b's executes when done;
    - batch b's executes signal the load of batch b+2 (if any) when done;
    - the first batch of output o waits for the store of output o-2 (accumulator halves
      alternate by output); the last batch of output o signals its store;
    - the store of output o signals the first batch of output o+2 (if any).
    """

    def __init__(self, prog):
        self.prog = prog
        self.batches = []
        self.stores = {}

    def batch(self, loads, execs, output):
        """Add a batch. ``loads``/``execs`` are lists of ``(opcode, fields)``; ``output`` is the
        index of the accumulator output the executes contribute to (outputs are consecutive)."""
        if self.batches and output not in (self.batches[-1].output, self.batches[-1].output + 1):
            raise AssertionError("outputs must be consecutive")
        self.batches.append(_Batch(list(loads), list(execs), output))

    def store(self, output, cmds):
        """The STORE-queue commands (SETPP/STORE) that write output ``output``."""
        self.stores[output] = list(cmds)

    def emit(self):
        nb = len(self.batches)
        first_of, last_of = {}, {}
        for b, batch in enumerate(self.batches):
            first_of.setdefault(batch.output, b)
            last_of[batch.output] = b
        n_out = len(first_of)
        # Program order: loads of batch b, executes of batch b, then the stores of an output right
        # after its last batch. Queues are decoupled, so this order only bounds queue occupancy.
        for b, batch in enumerate(self.batches):
            o = batch.output
            loads = batch.loads or [_nop(Opcode.LOAD)]
            execs = batch.execs or [_nop(Opcode.COMPUTE)]
            _flag(loads, 0, pop_next=b >= 2)
            _flag(loads, -1, push_next=True)
            _flag(execs, 0, pop_prev=True, pop_next=first_of[o] == b and o >= 2)
            _flag(execs, -1, push_prev=b + 2 < nb, push_next=last_of[o] == b)
            for op, f in loads + execs:
                self.prog.emit(op, **f)
            if last_of[o] == b:
                stores = self.stores.get(o) or [_nop(Opcode.STORE)]
                _flag(stores, 0, pop_prev=True)
                _flag(stores, -1, push_prev=o + 2 < n_out)
                for op, f in stores:
                    self.prog.emit(op, **f)


def _nop(op):
    """A command that does no work (a zero size) but can carry tokens."""
    return (op, {"elems": 1} if op in (Opcode.LOAD, Opcode.STORE) else {})


def _flag(cmds, i, **flags):
    op, f = cmds[i]
    f = dict(f)
    for k, v in flags.items():
        if v:
            f[k] = 1
    cmds[i] = (op, f)


def barrier(prog):
    """Make everything after this wait for everything before it (memory written by STOREs is
    visible to later LOADs): STORE -> EXECUTE -> LOAD through no-op commands."""
    prog.emit(Opcode.STORE, elems=1, push_prev=1)
    prog.emit(Opcode.COMPUTE, pop_next=1, push_prev=1)
    prog.emit(Opcode.LOAD, elems=1, pop_next=1)


# -- Shared pieces -------------------------------------------------------------------------------


def _pack_params(cfg, groups):
    """PARAM rows for a list of (bias, mult, shift) channel groups: (3 * len, cols) int32."""
    rows = np.zeros((3 * len(groups), cfg.cols), dtype=np.int32)
    for g, (bias, mult, shift) in enumerate(groups):
        n = len(bias)
        rows[3 * g, :n] = bias
        rows[3 * g + 1, :n] = mult
        rows[3 * g + 2, :n] = shift
    return rows


def _load_params(prog, name, params):
    addr = prog.put(name, params.astype("<i4"))
    return (Opcode.LOAD, dict(target=Buffer.PARAM, elems=prog.config.cols, sram_addr=0,
                              dram_addr=addr, z_size=1, y_size=1, x_size=params.shape[0],
                              sram_x_stride=1, dram_x_stride=4 * prog.config.cols))


def _setpp(rq, residual=None):
    f = dict(param_addr=0, zp=rq.zp, lo=rq.lo, hi=rq.hi)
    if residual is not None:
        f.update(res_zp=residual.zp, add_zp=residual.add_zp, add_lo=residual.lo,
                 add_hi=residual.hi, add_ma=residual.ma, add_mb=residual.mb,
                 add_shift=residual.shift)
    return f


def _load_tile(x, sram_addr, lanes, c0, nblocks, iy0, ix0, ih, iw, pad_value):
    """LOADs of an input tile: rows [iy0, iy0+ih) x [ix0, ix0+iw) of ``x`` (coordinates may lie
    in the padding), channel blocks of ``lanes`` from channel ``c0``, block-major in the buffer.

    The whole blocks are read pixel-major (every block of a pixel, then the next pixel), so the
    rows of one image row follow each other in memory whenever the tile spans all the tensor's
    channels, and the DMA reads them as long bursts; the padding rows above and below are
    written without reading memory, and a partial last block is read block-major."""
    (pt, pb), (pl, pr) = _clip(iy0, ih, x.height), _clip(ix0, iw, x.width)
    cmds = []
    full = min(nblocks, (x.channels - c0) // lanes)
    inner = ih - pt - pb
    block = ih * iw
    if full:
        for r0, n in ((0, pt), (ih - pb, pb)):
            if n:
                cmds.append((Opcode.LOAD, dict(
                    target=Buffer.INPUT, pad_value=pad_value, elems=lanes, pad_top=n,
                    sram_addr=sram_addr + r0 * iw, z_size=full, y_size=n, x_size=iw,
                    sram_z_stride=block, sram_y_stride=iw, sram_x_stride=1)))
        if inner > 0:
            cmds.append((Opcode.LOAD, dict(
                target=Buffer.INPUT, pad_value=pad_value, elems=lanes,
                pad_top=pl, pad_bottom=pr, sram_addr=sram_addr + pt * iw,
                dram_addr=x.offset(iy0 + pt, max(ix0, 0), c0),
                z_size=inner, y_size=iw, x_size=full,
                sram_z_stride=iw, sram_y_stride=1, sram_x_stride=block,
                dram_z_stride=x.row_stride, dram_y_stride=x.pixel_stride, dram_x_stride=lanes)))
    if full < nblocks:
        cmds.append((Opcode.LOAD, dict(
            target=Buffer.INPUT, pad_value=pad_value, elems=x.channels - c0 - full * lanes,
            pad_top=pt, pad_bottom=pb, pad_left=pl, pad_right=pr,
            sram_addr=sram_addr + full * block,
            dram_addr=x.offset(max(iy0, 0), max(ix0, 0), c0 + full * lanes),
            z_size=1, y_size=ih, x_size=iw,
            sram_z_stride=block, sram_y_stride=iw, sram_x_stride=1,
            dram_z_stride=lanes, dram_y_stride=x.row_stride, dram_x_stride=x.pixel_stride)))
    return cmds


def _clip(start, size, limit):
    """Padding before and after the part of [start, start+size) that lies in [0, limit)."""
    lo, hi = max(start, 0), min(start + size, limit)
    return (size, 0) if hi <= lo else (lo - start, start + size - hi)


def _store_tile(out, acc_addr, c0, elems, oy0, ox0, th, tw, residual):
    f = dict(elems=elems, acc_addr=acc_addr, dram_addr=out.offset(oy0, ox0, c0),
             z_size=1, y_size=th, x_size=tw, acc_y_stride=tw, acc_x_stride=1,
             dram_y_stride=out.row_stride, dram_x_stride=out.pixel_stride)
    if residual is not None:
        f.update(residual=1, res_addr=residual.tensor.offset(oy0, ox0, c0))
    return (Opcode.STORE, f)


def _tiles(n, t):
    return [(i, min(t, n - i)) for i in range(0, n, t)]


# -- Convolution ---------------------------------------------------------------------------------


def conv2d(prog, x, x_zp, w, rq, out, stride=(1, 1), pad=(0, 0, 0, 0), residual=None,
           name="conv"):
    """Emit a convolution ``out = post(conv(x, w))`` (``numerics.conv2d`` + requantize, plus
    ``numerics.add`` with ``residual``). ``w`` is int8 (O, KH, KW, C); ``rq.bias`` must include
    ``-x_zp * sum(w)``. A fully connected layer is a 1x1 convolution over a 1x1 image."""
    cfg = prog.config
    rows, cols = cfg.rows, cfg.cols
    o_ch, kh, kw, c_in = w.shape
    sh, sw = stride
    pt, pl, _, _ = pad
    if (out.height, out.width, out.channels) != (
            (x.height + pad[0] + pad[2] - kh) // sh + 1,
            (x.width + pad[1] + pad[3] - kw) // sw + 1, o_ch) or c_in != x.channels:
        raise KernelError(f"{name}: output shape {out.shape} does not match the convolution")
    # Along a dimension where the kernel is 1 wide, unpadded and strided, the convolution reads
    # only every s-th row (or pixel): load exactly those (a strided view of the input) and
    # convolve with stride 1 there (strided 1x1 convolutions; the packed stem's 7x1 kernel).
    if kh == 1 and pad[0] == pad[2] == 0 and sh > 1:
        x = Tensor(x.address, out.height, x.width, x.channels, x_stride=x.pixel_stride,
                   y_stride=sh * x.row_stride)
        sh = 1
    if kw == 1 and pad[1] == pad[3] == 0 and sw > 1:
        x = Tensor(x.address, x.height, out.width, x.channels, x_stride=sw * x.pixel_stride,
                   y_stride=x.row_stride)
        sw = 1
    kb_all, nb_all = _ceil(c_in, rows), _ceil(o_ch, cols)
    ibudget, wbudget, abudget = cfg.input_depth // 2, cfg.weight_depth // 2, cfg.acc_depth // 2
    kbg, (th, tw) = _conv_plan(cfg, out.height, out.width, kh, kw, sh, sw, kb_all, nb_all, name)
    # Weight tiles: (NB, KB, KH, KW, rows, cols), zero outside the real channels.
    wt = np.zeros((nb_all * cols, kh, kw, kb_all * rows), dtype=np.int8)
    wt[:o_ch, :, :, :c_in] = w
    wt = wt.reshape(nb_all, cols, kh, kw, kb_all, rows).transpose(0, 4, 2, 3, 5, 1)
    w_addr = prog.put(f"{name}.weights", np.ascontiguousarray(wt))
    tile_bytes = rows * cols
    # Output channels are done in chunks whose parameters fit the PARAM buffer.
    chunk = max(1, cfg.param_depth // 3)
    groups = [(rq.bias[n * cols:(n + 1) * cols], rq.mult[n * cols:(n + 1) * cols],
               rq.shift[n * cols:(n + 1) * cols]) for n in range(nb_all)]
    kgroups = _tiles(kb_all, kbg)
    # With one spatial tile and one reduction group, the input tile is loaded once for the
    # layer and stays in its buffer half across the parameter chunks.
    resident = len(kgroups) == 1 and th >= out.height and tw >= out.width
    in_tile = None
    loads = 0
    for ci, n0 in enumerate(range(0, nb_all, chunk)):
        if ci:
            barrier(prog)
        nbs = range(n0, min(nb_all, n0 + chunk))
        pipe = Pipeline(prog)
        params = _pack_params(cfg, groups[n0:nbs[-1] + 1])
        first = [_load_params(prog, f"{name}.params{ci}", params)]
        b = o = 0
        for oy0, h in _tiles(out.height, th):
            for ox0, wdt in _tiles(out.width, tw):
                ih, iw = (h - 1) * sh + kh, (wdt - 1) * sw + kw
                if not resident:
                    in_tile = None
                for n in nbs:
                    acc_addr = (o % 2) * abudget
                    for gi, (kb0, nkb) in enumerate(kgroups):
                        batch_loads = list(first)
                        first = []
                        if in_tile is None or len(kgroups) > 1:
                            in_tile = (loads % 2) * ibudget
                            loads += 1
                            batch_loads += _load_tile(x, in_tile, rows, kb0 * rows, nkb,
                                                      oy0 * sh - pt, ox0 * sw - pl, ih, iw, x_zp)
                        wrow = (b % 2) * wbudget
                        ntiles = nkb * kh * kw
                        batch_loads.append((Opcode.LOAD, dict(
                            target=Buffer.WEIGHT, elems=cols, sram_addr=wrow,
                            dram_addr=w_addr + (n * kb_all + kb0) * kh * kw * tile_bytes,
                            z_size=1, y_size=ntiles, x_size=rows,
                            sram_y_stride=rows, sram_x_stride=1,
                            dram_y_stride=tile_bytes, dram_x_stride=cols)))
                        execs = [(Opcode.COMPUTE, dict(
                            accumulate=int(gi > 0), wgt_addr=wrow, in_addr=in_tile,
                            acc_addr=acc_addr, y_size=h, x_size=wdt,
                            in_y_stride=sh * iw, in_x_stride=sw, acc_y_stride=wdt, acc_x_stride=1,
                            kz_size=nkb, ky_size=kh, kx_size=kw,
                            in_kz_stride=ih * iw, in_ky_stride=iw, in_kx_stride=1))]
                        pipe.batch(batch_loads, execs, o)
                        b += 1
                    pp = _setpp(rq, residual)
                    pp["param_addr"] = 3 * (n - n0)
                    pipe.store(o, [(Opcode.SETPP, pp),
                                   _store_tile(out, acc_addr, n * cols, min(cols, o_ch - n * cols),
                                               oy0, ox0, h, wdt, residual)])
                    o += 1
        pipe.emit()


def _conv_plan(cfg, oh, ow, kh, kw, sh, sw, kb_all, nb_all, name):
    """Channel blocks per reduction group and the output tile, chosen by a cycle estimate.

    Fewer groups mean fewer input reloads, but a larger group leaves room for a smaller input
    tile (fewer vectors per weight tile). Every group count from the fewest that fit the weight
    buffer is tried, with the channel blocks spread evenly over the groups (an uneven split
    leaves a short group whose computation cannot hide the next group's loads); the estimate
    per batch is ``max(compute, loads)`` (double buffering overlaps the two): compute is one
    tile period ``max(V, rows, cols)`` per reduction step, loads are one row per cycle (weight
    rows, and the input tile's rows when it is reloaded).
    """
    rows, cols = cfg.rows, cfg.cols
    ibudget, wbudget, abudget = cfg.input_depth // 2, cfg.weight_depth // 2, cfg.acc_depth // 2
    kb_max = min(kb_all, wbudget // (kh * kw * rows), ibudget // (kh * kw))
    if kb_max < 1:
        raise KernelError(f"{name}: a {kh}x{kw} kernel needs {kh * kw * rows} weight rows, "
                          f"more than half the weight buffer ({wbudget})")
    best = None
    for groups in range(_ceil(kb_all, kb_max), kb_all + 1):
        kbg = _ceil(kb_all, groups)
        if best is not None and kbg == best[1]:
            continue
        try:
            th, tw = _conv_tile(oh, ow, kh, kw, sh, sw, kbg, ibudget, abudget)
        except KernelError:
            continue
        cost = 0
        kgroups = _tiles(kb_all, kbg)
        reload = len(kgroups) > 1
        hs = [h for _, h in _tiles(oh, th)]
        ws = [w for _, w in _tiles(ow, tw)]
        for h in set(hs):
            for w in set(ws):
                v = max(h * w, rows, cols)
                ipix = ((h - 1) * sh + kh) * ((w - 1) * sw + kw)
                tile = 0
                for n in (0, 1):
                    for _, nkb in kgroups:
                        steps = nkb * kh * kw
                        load = steps * rows + (nkb * ipix if n == 0 or reload else 0)
                        tile += max(steps * v, load) * (1 if n == 0 else nb_all - 1)
                cost += tile * hs.count(h) * ws.count(w)
        if best is None or cost < best[0]:
            best = (cost, kbg, (th, tw))
    if best is None:
        raise KernelError(f"{name}: no output tile fits the buffers")
    return best[1], best[2]


def _conv_tile(oh, ow, kh, kw, sh, sw, kbg, ibudget, abudget):
    """Largest output tile (th, tw): whole rows when they fit, else a strip of one row."""
    def fits(th, tw):
        ih, iw = (th - 1) * sh + kh, (tw - 1) * sw + kw
        return kbg * ih * iw <= ibudget and th * tw <= abudget and max(ih, iw) < 4096
    tw = ow
    while tw > 1 and not fits(1, tw):
        tw = _ceil(tw, 2)
    th = 1
    while th < oh and fits(th + 1, tw):
        th += 1
    if not fits(th, tw):
        raise KernelError("no output tile fits the buffers")
    return th, tw


# -- Pooling -------------------------------------------------------------------------------------


def _identity_params(cfg):
    one = np.ones(cfg.cols, dtype=np.int64)
    return _pack_params(cfg, [(0 * one, one << 30, 30 * one)])


def maxpool(prog, x, out, kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1), name="maxpool"):
    """Emit ``out = numerics.maxpool(x)``: padding rows hold -128 and never win."""
    cfg = prog.config
    lanes = min(cfg.rows, cfg.cols)
    kh, kw = kernel
    sh, sw = stride
    nblk = _ceil(x.channels, lanes)
    ibudget, abudget = cfg.input_depth // 2, cfg.acc_depth // 2
    th, tw = _conv_tile(out.height, out.width, kh, kw, sh, sw, nblk, ibudget, abudget)
    pipe = Pipeline(prog)
    first = [_load_params(prog, f"{name}.params", _identity_params(cfg))]
    o = loads = 0
    for oy0, h in _tiles(out.height, th):
        for ox0, wdt in _tiles(out.width, tw):
            ih, iw = (h - 1) * sh + kh, (wdt - 1) * sw + kw
            in_tile = (loads % 2) * ibudget
            loads += 1
            batch_loads = list(first) + _load_tile(x, in_tile, lanes, 0, nblk, oy0 * sh - pad[0],
                                             ox0 * sw - pad[1], ih, iw, -128)
            first = []
            for blk in range(nblk):
                acc_addr = (o % 2) * abudget
                pipe.batch(batch_loads, [(Opcode.POOL, dict(
                    mode=PoolMode.MAX, win_w=kw, win_h=kh, in_addr=in_tile + blk * ih * iw,
                    acc_addr=acc_addr, y_size=h, x_size=wdt, in_y_stride=sh * iw,
                    in_x_stride=sw, win_y_stride=iw, win_x_stride=1, acc_y_stride=wdt,
                    acc_x_stride=1))], o)
                batch_loads = []
                pipe.store(o, [(Opcode.SETPP, dict(param_addr=0, zp=0, lo=-128, hi=127)),
                               _store_tile(out, acc_addr, blk * lanes,
                                           min(lanes, x.channels - blk * lanes),
                                           oy0, ox0, h, wdt, None)])
                o += 1
    pipe.emit()


def global_avgpool(prog, x, x_scale, x_zp, y_scale, y_zp, out, name="avgpool"):
    """Emit ``out = numerics.global_avgpool(x)`` (out is 1x1xC): SUM pooling into the
    accumulator, tiled over rows, then requantisation with the bias ``-hw * x_zp``."""
    cfg = prog.config
    lanes = min(cfg.rows, cfg.cols)
    hw = x.height * x.width
    bias, mult, shift = numerics.global_avgpool_params(hw, x_scale, x_zp, y_scale)
    one = np.ones(cfg.cols, dtype=np.int64)
    params = _pack_params(cfg, [(bias * one, mult * one, shift * one)])
    ibudget = cfg.input_depth // 2
    rows_per_tile = max(1, min(x.height, ibudget // x.width, 255))
    if x.width > min(ibudget, 255):
        raise KernelError(f"{name}: rows of {x.width} pixels do not fit a POOL window")
    pipe = Pipeline(prog)
    first = [_load_params(prog, f"{name}.params", params)]
    loads = 0
    for blk in range(_ceil(x.channels, lanes)):
        acc_addr = (blk % 2) * (cfg.acc_depth // 2)
        for ti, (y0, h) in enumerate(_tiles(x.height, rows_per_tile)):
            in_tile = (loads % 2) * ibudget
            loads += 1
            batch_loads = list(first) + _load_tile(x, in_tile, lanes, blk * lanes, 1, y0, 0, h,
                                             x.width, 0)
            first = []
            pipe.batch(batch_loads, [(Opcode.POOL, dict(
                mode=PoolMode.SUM, accumulate=int(ti > 0), win_w=x.width, win_h=h,
                in_addr=in_tile, acc_addr=acc_addr, y_size=1, x_size=1,
                win_y_stride=x.width, win_x_stride=1))], blk)
        pipe.store(blk, [(Opcode.SETPP, dict(param_addr=0, zp=y_zp, lo=-128, hi=127)),
                         _store_tile(out, acc_addr, blk * lanes,
                                     min(lanes, x.channels - blk * lanes), 0, 0, 1, 1, None)])
    pipe.emit()
