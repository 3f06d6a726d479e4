"""Post-processor: int32 accumulator rows to int8, STORE stages 1 and 2 of docs/isa.md."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import POSTPROC_STEPS as STEPS
from .dsp import registered_product
from .slices import KEEP_MARK, kept_copies

__all__ = ["PostProcessor", "postproc_input_layout", "round_parts", "round_shift", "saturate16",
           "clamp_sum", "shift_add_mul", "STEPS"]

#: Stage-2 multipliers (``add_ma``, ``add_mb``, 31 bits) are split at this bit: the 17 bits above
#: it multiply on one DSP (9 x 18 signed), the 14 below by shift-and-add in logic.
ADD_SPLIT = 14
#: Width of the stage-2 sum: ``|(a - zp)*add_ma + (r - res_zp)*add_mb| <= 510 * (2**31 - 1) <
#: 2**40``.
ADD_SUM_BITS = 41


def round_parts(m, x, s, name):
    """``(q, up)`` with ``round_half_even(x / 2**s) == q + up`` (docs/numerics.md
    ``rounding_shift``), as combinational signals. ``x`` is signed of width ``w``; ``s`` must
    stay below ``w``.

    ``q = x >> s`` (arithmetic); the half bit is ``x[s - 1]``, the sticky bits ``x[:s - 1]``
    (selected by a mask decoded from ``s``, not by a second shifter). Round up when the half bit
    is set and either a sticky bit is set or ``q`` is odd; ``s = 0`` rounds nothing.
    """
    w = len(x)
    q = Signal(signed(w), name=f"{name}_q")
    half = Signal(name=f"{name}_half")
    sticky = Signal(name=f"{name}_sticky")
    up = Signal(name=f"{name}_up")
    mask = Signal(w - 1, name=f"{name}_mask")
    m.d.comb += [
        q.eq(x >> s),
        half.eq((s != 0) & (x.as_unsigned() >> (s - 1)[:len(s)])[0]),
        mask.eq(Cat(*[s > i + 1 for i in range(w - 1)])),
        sticky.eq((x[:w - 1] & mask).any()),
        up.eq(half & (sticky | q[0])),
    ]
    return q, up


def round_shift(m, x, s, name):
    """``round_half_even(x / 2**s)`` as a combinational signal one bit wider than ``x``
    (:func:`round_parts` and their sum)."""
    q, up = round_parts(m, x, s, name)
    out = Signal(signed(len(x) + 1), name=f"{name}_out")
    m.d.comb += out.eq(q + up)
    return out


def shift_add_mul(m, x, k, name, parts=1):
    """``x * k`` as a sum of shifted copies of ``k``, one per bit of ``x``: logic, no DSP.

    ``x`` is signed (its top bit weighs ``-2**(len(x) - 1)``), ``k`` unsigned or signed (a
    signed ``k`` is sign-extended into each term). Synthesis maps a
    ``*`` onto DSP blocks however narrow it is; this form keeps a narrow partial product out of
    them. With ``parts`` > 1 the terms are summed in that many groups and the list of the
    groups' sums is returned (their sum is the product), for a register between them and
    their sum.
    """
    w = len(x) + len(k)
    terms = []
    for i in range(len(x)):
        t = Signal(signed(w + 1), name=f"{name}_t{i}")
        m.d.comb += t.eq(Mux(x[i], k << i, 0))
        terms.append(-t if i == len(x) - 1 else t)
    groups = [terms[j::parts] for j in range(parts)]
    outs = []
    for j, group in enumerate(groups):
        out = Signal(signed(w + 1), name=f"{name}_p" if parts == 1 else f"{name}_p{j}")
        m.d.comb += out.eq(sum(group[1:], group[0]))
        outs.append(out)
    return outs[0] if parts == 1 else outs


def _part_mux(m, ph, value, steps, top_signed, name):
    """Part ``steps - 1 - ph`` of ``value`` split into ``steps`` parts of ``ceil(len / steps)``
    bits (most significant first, as a Horner sum takes them): the top part signed when
    ``top_signed``, the others unsigned; as a signed value one bit wider than a part."""
    b = -(-len(value) // steps)
    part = Signal(signed(b + 1), name=name)
    with m.Switch(ph):
        for k in range(steps):
            j = steps - 1 - k
            bits = value[j * b:min((j + 1) * b, len(value))]
            with m.Case(k):
                m.d.comb += part.eq(bits.as_signed() if top_signed and j == steps - 1 else bits)
    return part, b


def saturate16(v):
    """The signed ``v`` saturated to 16 bits (``v`` itself if it is no wider)."""
    w = len(v)
    if w <= 16:
        return v
    top = v[15:]                             # all equal: v fits in 16 bits
    return Mux(top.all() | ~top.any(), v[:16].as_signed(),
               Mux(v[w - 1], Const(-2**15, signed(16)), Const(2**15 - 1, signed(16))))


def clamp_sum(v, zp, lo, hi, up=0, less_zp=False):
    """``clamp(v + up + zp, lo, hi)`` for a wide signed ``v``, a rounding increment ``up``
    (0 or 1) and 8-bit ``zp``, ``lo`` and ``hi`` (as ``numpy.clip``); with ``less_zp``, also
    that value less ``zp`` (a pair).

    ``v`` is saturated to 16 bits first: beyond them ``v + up + zp`` is past every 8-bit bound
    on the same side, as the saturated value's is, so the result is the same, and the sums and
    the compares are 17 bits wide instead of ``len(v) + 1``. Both bounds are compared at once
    (``min(max(t, lo), hi)`` is ``hi`` when ``t > hi`` or ``lo > hi``, else ``max(t, lo)``), and
    the value less ``zp`` is chosen beside it, not subtracted after it."""
    if less_zp:
        t, vu = clamp_parts(v, zp, up, less_zp=True)
        return clamp_bounds(t, lo, hi, vu, lo - zp, hi - zp)
    return clamp_bounds(clamp_parts(v, zp, up), lo, hi)


def clamp_parts(v, zp, up=0, less_zp=False):
    """The first half of :func:`clamp_sum`, for a pipeline stage between the two: ``v + up +
    zp`` (and ``v + up``, with ``less_zp``), ``v`` saturated to 16 bits, 17 bits wide."""
    v = saturate16(v)
    t = v + up + zp
    return (t, v + up) if less_zp else t


def clamp_bounds(t, lo, hi, vu=None, lo_zp=None, hi_zp=None):
    """The second half of :func:`clamp_sum`: ``clamp(t, lo, hi)`` for ``t`` from
    :func:`clamp_parts`; with ``vu`` (its ``v + up``), also that value less ``zp``, with
    ``lo_zp`` and ``hi_zp`` the bounds less ``zp``."""
    over = (t > hi) | (lo > hi)
    under = t < lo
    out = Mux(over, hi, Mux(under, lo, t))
    if vu is not None:
        return out, Mux(over, hi_zp, Mux(under, lo_zp, vu))
    return out


def postproc_input_layout(cols):
    """One row into the post-processor: the accumulator row, its three PARAM rows (bias,
    multiplier, shift & 63), the residual row, and whether stage 2 applies."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(32), cols),
        "bias": data.ArrayLayout(signed(32), cols),
        "mult": data.ArrayLayout(signed(32), cols),
        "shift": data.ArrayLayout(unsigned(6), cols),
        "residual": data.ArrayLayout(signed(8), cols),
        "use_residual": unsigned(1),
    })


class PostProcessor(wiring.Component):
    """Requantization and residual add of one accumulator row per cycle.

    Per lane ``c`` (docs/isa.md, STORE):

    1. ``v = wrap32(acc[c] + bias[c])``
    2. ``a = clamp(zp + round_half_even(v * mult[c] / 2^shift[c]), lo, hi)`` (64-bit product)
    3. with ``use_residual``: ``y = clamp(add_zp + round_half_even(((a - zp) * add_ma +
       (r - res_zp) * add_mb) / 2^add_shift), add_lo, add_hi)``; otherwise ``y = a``. The
       multipliers are Q31 (31 bits) and the sum is exact (:data:`ADD_SUM_BITS` bits).

    ``zp, lo, hi, res_zp, add_*`` come from :attr:`config` (the fields of the last SETPP), which
    must hold still while rows are in flight; the per-lane parameters travel with each row.

    Pipeline stages (registers): bias add; the four partial products of the 32 x 32
    multiplication (16-bit halves, one DSP block each); their sum; round; zero point and clamp
    (and the residual's ``r - res_zp``); residual products and their sum; residual round, zero
    point and clamp. (The partial products and their sum are separate stages so that the DSP
    blocks and the 64-bit adders are not on one register-to-register path.) Each residual
    product ``d * m`` (``d`` 9 bits signed, ``m`` 31 bits) is split at bit :data:`ADD_SPLIT`:
    ``d * m[14:]`` on one DSP, ``d * m[:14]`` by :func:`shift_add_mul`. A stage-2 shift above
    ``ADD_SUM_BITS`` rounds to 0 exactly as a shift of ``ADD_SUM_BITS`` does, so the rounder is
    ``ADD_SUM_BITS + 1`` bits wide. With ``split`` (for a fast clock) each rounding takes two
    stages, its parts (``q``, ``up`` of :func:`round_parts`) and their sum with what follows,
    and the residual rescale two (its products, their sum), and the residual's quotient is
    saturated to 16 bits a stage before its clamp; every DSP's operands and products are
    registered once more (registers beside the DSPs on both sides, two stages for the
    requantization product and two for the residual products), and each clamp's sum (the
    value, its rounding increment and the zero point) is registered before it is compared
    with the bounds, which each lane reads from copies of its own; each lane's beats are
    loaded into a chain of registers as the row is taken and shifted a beat at a time into
    its first stage (no multiplexer gathers a row's columns onto a lane), and each lane's
    result is registered before the output row: :attr:`LATENCY` is 19 instead of 7. The
    pipeline advances whenever its output is empty or taken, so with ``lanes == cols``
    it sustains one row per cycle; :attr:`LATENCY` is the number of cycles from a transfer on
    ``i`` to the row at ``o`` without backpressure.

    With ``steps > 1`` every multiplication takes ``steps`` cycles on multipliers ``steps``
    times narrower (for a target whose DSPs the array uses up): the 32 x 32 product is the Horner
    sum of ``v`` times ``steps`` parts of ``mult`` of ``ceil(32 / steps)`` bits, most significant
    (signed) first, and each residual product likewise over parts of ``add_ma``/``add_mb``. The
    whole pipeline then advances once every ``steps`` cycles (a beat every ``steps`` cycles),
    and a row's latency is ``1 + (LATENCY - 1) * steps`` cycles from its transfer.

    With ``lanes < cols`` the arithmetic exists for ``lanes`` lanes only (6 DSP multipliers a lane
    on ECP5, 4 for the 32 x 32 requantization product and 1 per residual product, instead of
    ``6 * cols``): a row is held and fed in ``beats = ceil(cols / lanes)``
    consecutive beats, and leaves when its last beat is done, one row every ``beats`` cycles,
    ``LATENCY + beats`` cycles after its transfer (with ``split`` its first beat is taken
    into the lanes' chains as it is transferred: ``LATENCY + beats - 1`` cycles).

    Parameters
    ----------
    cols : int
        Lanes per row.
    lanes : int or None
        Lanes computed per cycle (default ``cols``).
    steps : int
        Cycles per multiplication, one of :data:`STEPS` (default 1).
    split : bool
        Two stages per rounding (default False).

    Members
    -------
    config : In(hdl.isa.SETPP)
        The post-processing parameters (only the SETPP fields are used).
    i : In(stream.Signature(postproc_input_layout(cols)))
        Rows in.
    o : Out(stream.Signature(ArrayLayout(signed(8), cols)))
        int8 rows out, in order.
    """

    def __init__(self, cols, lanes=None, steps=1, split=False):
        if not isinstance(cols, int) or cols < 1:
            raise TypeError(f"cols must be a positive integer, not {cols!r}")
        if lanes is None:
            lanes = cols
        if not isinstance(lanes, int) or not 1 <= lanes <= cols:
            raise TypeError(f"lanes must be an integer in 1..cols ({cols}), not {lanes!r}")
        if steps not in STEPS:
            raise TypeError(f"steps must be one of {STEPS}, not {steps!r}")
        self._cols = cols
        self._lanes = lanes
        self._steps = steps
        self._split = bool(split)
        self.LATENCY = self.latency(split)
        super().__init__({
            "config": In(isa.SETPP),
            "i": In(stream.Signature(postproc_input_layout(cols))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(8), cols))),
        })

    @staticmethod
    def latency(split=False):
        """Pipeline stages: 7, or 19 with ``split`` (the roundings and the residual rescale
        take two stages, the residual's clamp a third, both products' operands and
        products one more each, both clamps' sums a stage before their bounds, the beat's
        lanes are registered before the first and each lane's result before the output
        row)."""
        return 19 if split else 7

    @property
    def cols(self):
        return self._cols

    @property
    def lanes(self):
        return self._lanes

    @property
    def steps(self):
        return self._steps

    @property
    def beats(self):
        """Cycles per row: ``ceil(cols / lanes)``."""
        return -(-self._cols // self._lanes)

    def elaborate(self, platform):
        m = Module()
        cols, lanes, beats, steps = self._cols, self._lanes, self.beats, self._steps
        split = self._split
        cfg = self.config
        n = self.LATENCY - split       # (stage 0, with split, is before the valid chain)
        ce = Signal()
        m.d.comb += ce.eq(~self.o.valid | self.o.ready)
        # adv: the pipeline advances (every cycle ce allows; with steps > 1, at the last phase)
        if steps == 1:
            adv = ce
        else:
            ph = Signal(range(steps))
            adv = Signal()
            m.d.comb += adv.eq(ce & (ph == steps - 1))
            with m.If(ce):
                m.d.sync += ph.eq(Mux(adv, 0, ph + 1))

        # Beat source: the input row itself (beats == 1), a held row, `lanes` lanes a beat, or
        # (split) the lanes' chains.
        p = self.i.payload
        src_valid = Signal()
        src_beat = Signal(range(beats))
        src = Signal(postproc_input_layout(lanes))
        fields = ("acc", "bias", "mult", "shift", "residual")
        if split:
            # (fast clock) each lane's beats go through a chain of registers: a row is taken
            # at its first beat and loaded into every lane's chain at once (lane j's position
            # k holds column k * lanes + j, loaded from that column's place in the input), and
            # each advance moves the chain a beat towards its position 0, the lane's stage 0.
            # A position is read only by its neighbour, so no multiplexer gathers a row's
            # columns onto a lane: the cols x 110 bits converging on the lanes were where the
            # routing of the whole NPU stalled.
            load = Signal(init=1)      # the next advance loads a row: empty or at its last beat
            # (each position's field loads with a copy of `load` of its own, from a register:
            # no one flip-flop or handshake steers all of the row's multiplexers)
            loads = {(k, j, f): Signal(init=1, name=f"load_{k}_{j}_{f}_{KEEP_MARK}")
                     for k in range(beats) for j in range(lanes) if k * lanes + j < cols
                     for f in fields}
            load_next = Signal()
            m.d.comb += load_next.eq(Mux(load, ~self.i.valid, src_beat == beats - 2)
                                     if beats > 1 else 1)
            src_use = Signal(reset_less=True)
            with m.If(adv):
                m.d.sync += [load.eq(load_next), *(ld.eq(load_next) for ld in loads.values())]
                with m.If(load):
                    m.d.sync += [src_valid.eq(self.i.valid), src_beat.eq(0),
                                 src_use.eq(p.use_residual)]
                with m.Else():
                    m.d.sync += src_beat.eq(src_beat + 1)
            m.d.comb += [self.i.ready.eq(adv & load), src.use_residual.eq(src_use)]
            chain = {}
            for (k, j, f) in loads:
                chain[k, j, f] = Signal(p[f][0].shape(), name=f"beat{k}_{f}_{j}",
                                        reset_less=True)
            for (k, j, f), reg in chain.items():
                after = chain.get((k + 1, j, f), reg)       # (the last position holds)
                with m.If(adv):
                    m.d.sync += reg.eq(Mux(loads[k, j, f], p[f][k * lanes + j], after))
            m.d.comb += [src[f][j].eq(chain[0, j, f]) for j in range(lanes) for f in fields]
        elif beats == 1:
            m.d.comb += [src_valid.eq(self.i.valid), src.eq(p), self.i.ready.eq(adv)]
        else:
            h_valid = Signal()
            h_row = Signal(postproc_input_layout(cols), reset_less=True)
            last = src_beat == beats - 1
            m.d.comb += [src_valid.eq(h_valid),
                         self.i.ready.eq(~h_valid | (adv & last)),
                         src.use_residual.eq(h_row.use_residual)]
            with m.If(adv & h_valid):
                m.d.sync += src_beat.eq(Mux(last, 0, src_beat + 1))
                with m.If(last):
                    m.d.sync += h_valid.eq(0)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [h_valid.eq(1), h_row.eq(p), src_beat.eq(0)]
            with m.Switch(src_beat):
                for b in range(beats):
                    with m.Case(b):
                        for j in range(lanes):
                            c = b * lanes + j
                            if c >= cols:
                                continue
                            for field in fields:
                                m.d.comb += src[field][j].eq(h_row[field][c])

        valid = [Signal(name=f"valid{k + 1}") for k in range(n - 1)]
        beat = [Signal(range(beats), name=f"beat{k + 1}") for k in range(n - 1)]
        use_res = [Signal(name=f"use_res{k + 1}") for k in range(n - 1)]
        o_valid = Signal()
        with m.If(adv):
            m.d.sync += [valid[0].eq(src_valid), beat[0].eq(src_beat),
                         use_res[0].eq(src.use_residual)]
            for k in range(1, n - 1):
                m.d.sync += [valid[k].eq(valid[k - 1]), beat[k].eq(beat[k - 1]),
                             use_res[k].eq(use_res[k - 1])]
            m.d.sync += o_valid.eq(valid[n - 2] & (beat[n - 2] == beats - 1))
        if steps > 1:
            with m.Elif(self.o.ready):
                m.d.sync += o_valid.eq(0)          # taken before the next advance
        m.d.comb += self.o.valid.eq(o_valid)

        # (the lanes' data registers have no reset: the valid bits above say what they hold)
        for c in range(lanes):
            v = Signal(signed(32), name=f"v_{c}", reset_less=True)
            mult1 = Signal(signed(32), name=f"mult1_{c}", reset_less=True)
            shift1 = Signal(6, name=f"shift1_{c}", reset_less=True)
            shift2 = Signal(6, name=f"shift2_{c}", reset_less=True)
            shift3 = Signal(6, name=f"shift3_{c}", reset_less=True)
            prod = Signal(signed(64), name=f"prod_{c}", reset_less=True)
            rq = Signal(signed(16), name=f"rq_{c}", reset_less=True)
            rq_up = Signal(name=f"rq_up_r_{c}", reset_less=True)
            a = Signal(signed(8), name=f"a_{c}", reset_less=True)
            a5 = Signal(signed(8), name=f"a5_{c}", reset_less=True)
            da = Signal(signed(9), name=f"da_{c}", reset_less=True)
            dr = Signal(signed(9), name=f"dr_{c}", reset_less=True)
            s2 = Signal(signed(ADD_SUM_BITS), name=f"sum2_{c}", reset_less=True)
            res = [Signal(signed(8), name=f"res{k + 1}_{c}", reset_less=True)
                   for k in range(4 + 2 * split)]
            a4 = Signal(signed(8), name=f"a4_{c}", reset_less=True)
            da4 = Signal(signed(9), name=f"da4_{c}", reset_less=True)
            if split:
                # (fast clock) stage 4c: the sums; 5: the bounds, from the lane's copies of the
                # configuration's (set a cycle after it, long before a row)
                zp, lo, hi, lo_zp, hi_zp, res_zp = _config_copies(
                    m, ((cfg.zp, 8), (cfg.lo, 8), (cfg.hi, 8), (cfg.lo - cfg.zp, 9),
                        (cfg.hi - cfg.zp, 9), (cfg.res_zp, 8)), f"clamp1_cfg{c}")
                t4n, vu4n = clamp_parts(rq, zp, rq_up, less_zp=True)
                t4, vu4 = _at_advance(m, adv, (t4n, vu4n), ("clamp_t", "clamp_vu"), c)
                a4n, da4n = clamp_bounds(t4, lo, hi, vu4, lo_zp, hi_zp)
            else:
                a4n, da4n = clamp_sum(rq, cfg.zp, cfg.lo, cfg.hi, rq_up, less_zp=True)
                res_zp = cfg.res_zp
            m.d.comb += [a4.eq(a4n), da4.eq(da4n)]
            # what stages 2 and 3 take of the shift and the residual (with split, a stage
            # later each: 1b and 2b, below)
            sh1, r0, sh2, r1 = shift1, res[0], shift2, res[1]
            if split:
                sh1, r0, sh2, r1 = _at_advance(m, adv, (shift1, res[0], shift2, res[1]),
                                               ("shift1b", "res1b", "shift2b", "res2b"), c)
            if steps == 1:
                # stage 2: v * mult1 as four products of 16-bit halves (high halves signed, low
                # halves unsigned: 17 x 17 bits at most, one DSP each); stage 3: their sum
                vh, vl = v[16:].as_signed(), v[:16]
                mh, ml = mult1[16:].as_signed(), mult1[:16]
                operands = [(vh, mh), (vh, ml), (vl, mh), (vl, ml)]
                parts = [Signal(signed(34), name=f"part{k}_{c}", reset_less=True)
                         for k in range(4)]
                if split:
                    # stage 1b: the operands registered again, and (2b) the products: each
                    # DSP with registers of its own on both sides (on ECP5 the DSP block's
                    # own, hdl.dsp), as the residual's have
                    m.d.comb += [part.eq(registered_product(m, f"mult{k}_{c}", x, y, adv))
                                 for k, (part, (x, y)) in enumerate(zip(parts, operands))]
                    parts = _at_advance(m, adv, parts, [f"part{k}_r" for k in range(4)], c)
                else:
                    with m.If(adv):
                        m.d.sync += [p.eq(a * b) for p, (a, b) in zip(parts, operands)]
                # (the low halves' product is below 2**32: it and the high halves' shifted one
                # are a concatenation, not a sum)
                prod_next = (Cat(parts[3][:32], parts[0]).as_signed() +
                             ((parts[1] + parts[2]) << 16))
                # stage 6 operands: the 17 high multiplier bits on a DSP, the 14 low ones in
                # logic
                hi_a = Signal(signed(27), name=f"hi_a_{c}", reset_less=True)
                hi_b = Signal(signed(27), name=f"hi_b_{c}", reset_less=True)
                ma_hi, mb_hi = cfg.add_ma[ADD_SPLIT:], cfg.add_mb[ADD_SPLIT:]
                if split:
                    # (fast clock) each lane's DSPs take the configuration's multipliers from
                    # copies of their own (set a cycle after the configuration, long before a
                    # row), which the placer puts beside them
                    ma_hi, = kept_copies(m, ma_hi, 1, f"add_ma_hi{c}")
                    mb_hi, = kept_copies(m, mb_hi, 1, f"add_mb_hi{c}")
                d_a, d_r = da, dr
                if split:
                    # stage 5b: the operands registered again, and (6a, below) the products
                    # twice: the DSPs (at the sites the array leaves, far from the rest) have
                    # registers of their own on both sides (on ECP5 the DSP block's own,
                    # hdl.dsp), which the placer puts beside them
                    d_a, d_r = _at_advance(m, adv, (da, dr), ("da_p", "dr_p"), c)
                    m.d.comb += [
                        hi_a.eq(registered_product(m, f"mult_hi_a_{c}", da, ma_hi, adv)),
                        hi_b.eq(registered_product(m, f"mult_hi_r_{c}", dr, mb_hi, adv))]
                else:
                    m.d.comb += [hi_a.eq(da * ma_hi), hi_b.eq(dr * mb_hi)]
                if split:
                    # stage 6a: the four products registered (the two in logic as the sums of
                    # their odd and even terms), 6b: again (the logic products summed); 6:
                    # their sum
                    # (each lane's logic products from copies of the multipliers' low bits of
                    # its own, as the DSPs' high bits above)
                    ma_lo, = kept_copies(m, cfg.add_ma[:ADD_SPLIT], 1, f"add_ma_lo{c}")
                    mb_lo, = kept_copies(m, cfg.add_mb[:ADD_SPLIT], 1, f"add_mb_lo{c}")
                    lo_a = shift_add_mul(m, d_a, ma_lo, f"lo_a{c}", parts=2)
                    lo_b = shift_add_mul(m, d_r, mb_lo, f"lo_b{c}", parts=2)
                    # (hi_a and hi_b are the DSPs' product registers: stage 6a already)
                    lo = _at_advance(m, adv, (*lo_a, *lo_b),
                                     ["lo_a_r0", "lo_a_r1", "lo_b_r0", "lo_b_r1"], c)
                    hi_a, hi_b, lo_a, lo_b = _at_advance(
                        m, adv, (hi_a, hi_b, lo[0] + lo[1], lo[2] + lo[3]),
                        [f"{t}_r2" for t in ("hi_a", "hi_b", "lo_a", "lo_b")], c)
                else:
                    lo_a = shift_add_mul(m, d_a, cfg.add_ma[:ADD_SPLIT], f"lo_a{c}")
                    lo_b = shift_add_mul(m, d_r, cfg.add_mb[:ADD_SPLIT], f"lo_b{c}")
                s2_next = ((hi_a + hi_b) << ADD_SPLIT) + lo_a + lo_b
            else:
                # Horner sums over the phases: a part of each multiplier a cycle, the last
                # part's term added as the stage's register is written
                pm, b = _part_mux(m, ph, mult1, steps, True, f"mult_part_{c}")
                pacc = Signal(signed(64), name=f"prod_acc_{c}", reset_less=True)
                pa, b2 = _part_mux(m, ph, cfg.add_ma, steps, False, f"add_ma_part_{c}")
                pb, _ = _part_mux(m, ph, cfg.add_mb, steps, False, f"add_mb_part_{c}")
                sacc = Signal(signed(ADD_SUM_BITS), name=f"sum2_acc_{c}", reset_less=True)
                # the narrow products in logic (a `*` would be put on a DSP)
                vp = shift_add_mul(m, pm, v, f"vp{c}")
                dp = Signal(signed(ADD_SUM_BITS), name=f"dp_{c}", reset_less=True)
                m.d.comb += dp.eq(shift_add_mul(m, pa, da, f"dpa{c}") +
                                  shift_add_mul(m, pb, dr, f"dpb{c}"))
                pacc_n = Signal(signed(64), name=f"prod_acc_next_{c}")
                sacc_n = Signal(signed(ADD_SUM_BITS), name=f"sum2_acc_next_{c}")
                m.d.comb += [pacc_n.eq(Mux(ph == 0, 0, pacc << b) + vp),
                             sacc_n.eq(Mux(ph == 0, 0, sacc << b2) + dp)]
                with m.If(ce):
                    m.d.sync += [pacc.eq(pacc_n), sacc.eq(sacc_n)]
                # stage 2: the product; stage 3 holds it (the stage the halves' sum takes above)
                prod2 = Signal(signed(64), name=f"prod2_{c}", reset_less=True)
                with m.If(adv):
                    m.d.sync += prod2.eq(pacc_n)     # (adv: ph == steps - 1, not 0)
                prod_next = prod2
                if split:
                    # (stages 1b and 2b of one-cycle products)
                    for k in "bc":
                        prod_next, = _at_advance(m, adv, (prod_next,), (f"prod2{k}",), c)
                s2_next = sacc_n
                if split:
                    # stages 5b, 6a and 6b: the sum registered (as one-cycle products are)
                    for k in range(3):
                        s2_next, = _at_advance(m, adv, (s2_next,), (f"sum2a{k}",), c)
            if split:
                # stage 4: the rounding's parts; 4b: their sum
                q4 = Signal(signed(64), name=f"rq_q_{c}", reset_less=True)
                up4 = Signal(name=f"rq_up_{c}", reset_less=True)
                q4n, up4n = round_parts(m, prod, shift3, f"rq{c}")
                with m.If(adv):
                    # (4b: the quotient saturated, its increment added with the zero point)
                    m.d.sync += [q4.eq(q4n), up4.eq(up4n), rq.eq(saturate16(q4)),
                                 rq_up.eq(up4), res[4].eq(res[3]), res[5].eq(res[4])]
            elif steps > 1 and 4 * (steps - 1) >= 60:
                # the shift by shift3 done 4 bits a cycle between two advances, in place in
                # prod (which nothing else reads); the rest (< 4) at the advance
                sat, up, stepping = serial_round_sat(m, prod, shift2, 4, ce, adv, 10, f"rq{c}")
                with m.If(adv):
                    m.d.sync += [rq.eq(sat), rq_up.eq(up)]
            else:
                with m.If(adv):
                    q4n, up4n = round_sat(m, prod, shift3, 10, f"rq{c}")
                    m.d.sync += [rq.eq(q4n), rq_up.eq(up4n)]
            with m.If(adv):
                m.d.sync += [
                    # stage 1: bias (wrapping int32)
                    v.eq((src.acc[c] + src.bias[c])[:32].as_signed()),
                    mult1.eq(src.mult[c]),
                    shift1.eq(src.shift[c]),
                    res[0].eq(src.residual[c]),
                    # stage 2: the partial products (above); stage 3: the 64-bit product
                    shift2.eq(sh1),
                    res[1].eq(r0),
                    prod.eq(prod_next),   # (then shifted in place: see rq)
                    shift3.eq(sh2),
                    res[2].eq(r1),
                    # stage 4: round half to even
                    res[3].eq(res[2]),
                    # stage 5: zero point and clamp; both residual-stage inputs less their zero
                    # points
                    a.eq(a4),
                    da.eq(da4),
                    dr.eq(res[-1] - res_zp),
                    # stage 6: residual rescale, exact
                    s2.eq(s2_next),
                ]
            if steps > 1 and not split and 4 * (steps - 1) >= 60:
                with m.If(stepping):
                    m.d.sync += prod.eq(prod >> 4)
            if split:
                # (stages 5b, 6a, 6b)
                a_d = a
                for stage in ("a5b", "a6a", "a6b"):
                    a_d, = _at_advance(m, adv, (a_d,), (stage,), c)
                with m.If(adv):
                    m.d.sync += a5.eq(a_d)
            else:
                with m.If(adv):
                    m.d.sync += a5.eq(a)
            # stage 7: residual round (a shift above ADD_SUM_BITS gives 0, as ADD_SUM_BITS
            # does), zero point, clamp, or stage 1's result, into the output row at this beat's
            # lanes
            shift6 = Signal(range(ADD_SUM_BITS + 1), name=f"shift6_{c}")
            s2x = Signal(signed(ADD_SUM_BITS + 1), name=f"sum2x_{c}", reset_less=True)
            # (combinational: registered, it made Yosys 0.70's ABC9 step fail an assertion,
            # GetSize(conn.first) == GetSize(conn.second) in ABC_OPS_REINTEGRATE)
            m.d.comb += [shift6.eq(Mux(cfg.add_shift > ADD_SUM_BITS, ADD_SUM_BITS,
                                       cfg.add_shift)),
                         s2x.eq(s2)]
            if split:
                # stage 7: the rounding's parts; 7b: the quotient saturated to 16 bits; 7c:
                # the increment and zero point added, the clamp
                q7 = Signal(signed(ADD_SUM_BITS + 1), name=f"add_q_{c}", reset_less=True)
                up7 = Signal(name=f"add_up_{c}", reset_less=True)
                a6 = Signal(signed(8), name=f"a6_{c}", reset_less=True)
                q7s = Signal(signed(16), name=f"add_qs_{c}", reset_less=True)
                up7s = Signal(name=f"add_ups_{c}", reset_less=True)
                a7 = Signal(signed(8), name=f"a7_{c}", reset_less=True)
                # (the shift from the lane's copy of it, as the clamps' bounds below)
                shift6_k, = kept_copies(m, shift6, 1, f"add_shift{c}")
                q7n, up7n = round_parts(m, s2x, shift6_k, f"add{c}")
                with m.If(adv):
                    m.d.sync += [q7.eq(q7n), up7.eq(up7n), a6.eq(a5),
                                 q7s.eq(saturate16(q7)), up7s.eq(up7), a7.eq(a6)]
                # 7d: the sum, then the bounds from the lane's copies of the configuration's
                add_zp, add_lo, add_hi = _config_copies(
                    m, ((cfg.add_zp, 8), (cfg.add_lo, 8), (cfg.add_hi, 8)), f"clamp2_cfg{c}")
                t7, a_out = _at_advance(m, adv, (clamp_parts(q7s, add_zp, up7s), a7),
                                        ("add_t", "a7d"), c)
                y_res = clamp_bounds(t7, add_lo, add_hi)
            else:
                if steps > 1 and 3 * (steps - 1) >= ADD_SUM_BITS - 2:
                    # as rq: the shift done 3 bits a cycle in place in s2, the rest at adv
                    r_q, r_up, step2 = serial_round_sat(m, s2, shift6, 3, ce, adv, 10, f"add{c}")
                    with m.If(step2):
                        m.d.sync += s2.eq(s2 >> 3)
                else:
                    r_q, r_up = round_sat(m, s2x, shift6, 10, f"add{c}")
                a_out = a5
                y_res = clamp_sum(r_q, cfg.add_zp, cfg.add_lo, cfg.add_hi, r_up)
            y = Signal(signed(8), name=f"y_{c}", reset_less=True)
            if split:
                # (fast clock) the lane's result registered (stage 7e) before it goes into
                # the output row at its beat's place
                y_n = Signal(signed(8), name=f"y_next_{c}")
                m.d.comb += y_n.eq(Mux(use_res[n - 3], y_res, a_out))
                with m.If(adv):
                    m.d.sync += y.eq(y_n)
            else:
                m.d.comb += y.eq(Mux(use_res[n - 2], y_res, a_out))
            with m.If(adv):
                for bt in range(beats):
                    if bt * lanes + c < cols:
                        with m.If(beat[n - 2] == bt):
                            m.d.sync += self.o.payload[bt * lanes + c].eq(y)
        return m


def _config_copies(m, fields, name):
    """One lane's copy of configuration values (``(value, width)`` pairs, signed), in one kept
    register (:func:`~hdl.slices.kept_copies`): set a cycle after the configuration, long
    before a row reaches the stages that read them, and placed beside those stages."""
    copy, = kept_copies(m, Cat(*[Value.cast(v)[:w] for v, w in fields]), 1, name)
    out, at = [], 0
    for _, w in fields:
        out.append(copy[at:at + w].as_signed())
        at += w
    return out


def _at_advance(m, adv, values, names, lane):
    """Registers holding ``values`` as the pipeline advances (``adv``), one each, named
    ``<name>_<lane>``: a stage of the lane's pipeline."""
    regs = [Signal(Value.cast(v).shape(), name=f"{n}_{lane}", reset_less=True)
            for v, n in zip(values, names)]
    with m.If(adv):
        m.d.sync += [r.eq(v) for r, v in zip(regs, values)]
    return regs


def serial_round_sat(m, x, shift, k, ce, adv, bits, name):
    """``(sat, up, stepping)`` as :func:`round_sat` of ``x >> shift``, for a register ``x`` the
    caller shifts right by ``k`` in place whenever ``stepping`` (between two advances ``adv``,
    on the cycles ``ce`` that leave room): ``shift`` is loaded at ``adv`` (the shift of the value
    ``x`` takes then), each step takes ``k`` off it and keeps the last bit shifted out and the
    sticky OR of the ones below it, and the remainder (< ``k``, there must be steps enough)
    is shifted at the next advance, where ``sat`` and ``up`` are read."""
    w = len(x)
    cnt = Signal(len(shift), name=f"{name}_cnt")
    last = Signal(name=f"{name}_last")
    stk = Signal(name=f"{name}_sticky_acc")
    stepping = Signal(name=f"{name}_step")
    m.d.comb += stepping.eq(ce & ~adv & (cnt >= k))
    with m.If(adv):
        m.d.sync += [cnt.eq(shift), last.eq(0), stk.eq(0)]
    with m.Elif(stepping):
        m.d.sync += [cnt.eq(cnt - k), last.eq(x[k - 1]), stk.eq(stk | last | x[:k - 1].any())]
    r = cnt[:(k - 1).bit_length()]
    qv = Signal(signed(w), name=f"{name}_qv")
    m.d.comb += qv.eq(x >> r)
    sat = _saturate_shifted(x, r, qv, bits)
    half = Mux(r == 0, last, (x.as_unsigned() >> (r - 1)[:len(r)])[0])
    below = Cat(*[(r > j + 1) & x[j] for j in range(k - 2)]).any()
    sticky = Mux(r == 0, stk, stk | last | below)
    return sat, half & (sticky | qv[0]), stepping


def _saturate_shifted(x, s, q, bits):
    """``x >> s`` saturated to ``bits`` bits, from ``q`` (at least the low ``bits`` bits of
    ``x >> s``) without shifting the whole of ``x``: it fits when every bit of ``x`` from
    ``s + bits - 1`` up equals the sign, and then its low ``bits`` bits are the shift's."""
    w = len(x)
    sign = x[w - 1]
    fits = Cat(*[(s > i - (bits - 1)) | (x[i] == sign) for i in range(bits - 1, w - 1)]).all()
    return Mux(fits, q[:bits].as_signed(), Mux(sign, Const(-2**(bits - 1), signed(bits)),
                                               Const(2**(bits - 1) - 1, signed(bits))))


def round_sat(m, x, s, bits, name):
    """``(saturate_bits(x >> s), up)``: :func:`round_parts` with its quotient saturated to
    ``bits`` bits (only the quotient's low ``bits`` bits are used: synthesis keeps no more of
    its shifter)."""
    q, up = round_parts(m, x, s, name)
    return _saturate_shifted(x, s, q, bits), up
