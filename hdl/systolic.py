"""Weight-stationary systolic MAC array, int8 x int8 -> int32, with double-buffered weights."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .dsp import registered_product
from .slices import KEEP_MARK

__all__ = ["SystolicArray", "psum_width"]


def psum_width(rows):
    """Bits of a partial sum inside the array: a sum of ``rows`` products of int8 x int8.

    Each product lies in ``[-16256, 16384]`` (16 bits signed), so ``rows`` of them need
    ``17 + ceil(log2(rows))`` bits at most; the column outputs are sign-extended to int32.
    """
    return min(32, 17 + max(0, (rows - 1).bit_length()))


class SystolicArray(wiring.Component):
    """A ``rows`` x ``cols`` grid of processing elements, weight-stationary.

    PE ``(r, c)`` holds the weight ``W[r][c]``. An input vector ``x`` (``rows`` int8) enters row
    ``r`` skewed by ``r`` cycles and moves right one column per cycle; partial sums move down one
    row per cycle, so column ``c`` leaves the bottom row with ``sum_r x[r] * W[r][c]``. Columns are
    de-skewed at the bottom: the whole output row appears together, :attr:`LATENCY` cycles after
    the vector entered, in input order. Every PE performs one MAC per cycle in steady state.

    Each PE registers its product before the partial-sum adder (the product of cycle ``t`` is
    added in cycle ``t + 1``), so the multiplier (a DSP block) and the adder are separate
    register-to-register paths; this adds one cycle to the latency, the same for every column.
    With ``registered_operands`` (for a fast clock) the multiplier's operands are registers too
    (the input as it moves on, the weight in use): no logic between flip-flops and the DSP
    block, which the placer can then keep beside it; one more cycle of latency.

    Weights are double-buffered. Each PE has an *active* weight (used for the MACs) and a
    *shadow* weight. A vector entered with ``i_switch`` set carries a switch token diagonally
    through the array together with its data: each PE copies its shadow weight to its active
    weight when the token passes and uses the new weight for that vector and the ones after it.
    So consecutive weight tiles stream back to back with no bubble (like Gemmini's *propagate*
    flag).

    The shadow weights are loaded down the columns, as the inputs move along the rows: a row of
    weights entered through ``w_*`` (``w_row`` says which row of PEs it is for) enters column
    ``c`` ``c`` cycles later and moves down one PE a cycle, and PE ``(w_row, c)`` keeps it as it
    passes. Every connection in the array is between neighbouring PEs (no bus shared by a
    column), so the placer can keep each PE beside its multiplier.

    Timing rules for the shadow writes (the execute unit follows them): a vector entering at cycle
    ``t`` reaches PE ``(r, c)`` at cycle ``t + r + c``, where it reads the shadow register
    combinationally if it carries the switch token. A weight row for PE row ``r`` entered at
    cycle ``X`` is written into PE ``(r, c)``'s shadow register at the end of cycle
    ``X + r + c``, the same diagonal. Hence a row of tile n+1 may be entered at any cycle ``X``
    with ``t_sw(n) <= X < t_sw(n+1)`` (after tile n's switch has entered, before tile n+1's
    does), in any order: a tile must last at least ``rows`` vectors for the next tile's rows to
    be entered behind it, and its first vector may enter one cycle after its last weight row.

    Parameters
    ----------
    rows : int
        Rows of PEs: the length of an input vector (the reduction dimension).
    cols : int
        Columns of PEs: the length of an output row (output channels).
    registered_operands : bool
        Register the multiplier's operands (one cycle more latency).
    data_reset : bool
        Reset the data registers too (weights, inputs, products, partial sums). Without it
        only the valid bits and switch tokens have a reset, so that no reset net reaches every
        PE (for a fast clock). (The iCE40 configurations keep the resets: with the reset-less
        array Yosys 0.70's ``synth_ice40 -dsp`` kept 2 of tiny's 8 ``SB_MAC16`` and 28 of its 30
        block RAMs, i.e. dropped part of the array and the weight buffer, although the RTL
        simulates exactly; with the resets it maps all of them.)

    Attributes
    ----------
    LATENCY : int
        Cycles from a vector at ``i_*`` to its result at ``o_*``: ``rows + cols``, plus one
        with ``registered_operands`` (:meth:`latency`).

    Members
    -------
    i_valid : In(1)
        An input vector is present this cycle (there is no backpressure).
    i_switch : In(1)
        This vector is the first of a new weight tile: switch to the shadow weights.
    i_data : In(ArrayLayout(signed(8), rows))
        The input vector.
    w_en : In(1)
        A weight row enters this cycle.
    w_row : In(range(rows))
        The row of PEs it is for.
    w_data : In(ArrayLayout(signed(8), cols))
        Weights ``W[w_row][0 .. cols-1]``.
    o_valid : Out(1)
        An output row is present (``LATENCY`` cycles after its ``i_valid``).
    o_data : Out(ArrayLayout(signed(32), cols))
        ``sum_r i_data[r] * W[r][c]`` for each column ``c``.
    """

    def __init__(self, rows, cols, registered_operands=False, data_reset=True):
        for name, value in (("rows", rows), ("cols", cols)):
            if not isinstance(value, int) or value < 1:
                raise TypeError(f"{name} must be a positive integer, not {value!r}")
        self._rows = rows
        self._cols = cols
        self._registered = bool(registered_operands)
        self._data_reset = bool(data_reset)
        self.LATENCY = self.latency(rows, cols, registered_operands)
        super().__init__({
            "i_valid": In(1),
            "i_switch": In(1),
            "i_data": In(data.ArrayLayout(signed(8), rows)),
            "w_en": In(1),
            "w_row": In(range(rows)),
            "w_data": In(data.ArrayLayout(signed(8), cols)),
            "o_valid": Out(1),
            "o_data": Out(data.ArrayLayout(signed(32), cols)),
        })

    @staticmethod
    def latency(rows, cols, registered_operands=False):
        """Cycles from a vector in to its result out: the skew, ``rows`` partial-sum stages
        and the registered product, ``rows + cols`` (and the registered operands)."""
        return rows + cols + bool(registered_operands)

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols
        pw = psum_width(rows)
        quiet = not self._data_reset

        # Input skew: row r is delayed by r cycles, with its switch token.
        a_in = [[None] * cols for _ in range(rows)]
        sw_in = [[None] * cols for _ in range(rows)]
        for r in range(rows):
            a, sw = self.i_data[r], self.i_valid & self.i_switch
            for k in range(r):
                a_d = Signal(signed(8), name=f"skew_a_{r}_{k}", reset_less=quiet)
                sw_d = Signal(name=f"skew_sw_{r}_{k}")
                m.d.sync += [a_d.eq(a), sw_d.eq(sw)]
                a, sw = a_d, sw_d
            a_in[r][0], sw_in[r][0] = a, sw

        # Weight rows: column c's weight enters PE (0, c) c cycles after w_*, with its row
        # number and valid bit, and moves down a PE a cycle. (With registered operands, for a
        # fast clock, each PE's registers are kept: the row numbers and valid bits of all
        # columns at the same distance from w_* are equal, and synthesis would merge them
        # into one register steering PEs across the array.)
        keep = f"_{KEEP_MARK}" if self._registered else ""
        load = data.StructLayout({"row": range(rows), "w": signed(8)})
        w_in = [[None] * cols for _ in range(rows)]
        wv_in = [[None] * cols for _ in range(rows)]
        for c in range(cols):
            w = Signal(load, name=f"wskew_{c}_0")
            wv = self.w_en
            m.d.comb += [w.row.eq(self.w_row), w.w.eq(self.w_data[c])]
            for k in range(c):
                w_d = Signal(load, name=f"wskew_{c}_{k + 1}{keep}", reset_less=quiet)
                wv_d = Signal(name=f"wskew_valid_{c}_{k + 1}{keep}")
                m.d.sync += [w_d.eq(w), wv_d.eq(wv)]
                w, wv = w_d, wv_d
            w_in[0][c], wv_in[0][c] = w, wv
            for r in range(1, rows):
                w_d = Signal(load, name=f"wload_{r}_{c}{keep}", reset_less=quiet)
                wv_d = Signal(name=f"wload_valid_{r}_{c}{keep}")
                m.d.sync += [w_d.eq(w), wv_d.eq(wv)]
                w, wv = w_in[r][c], wv_in[r][c] = w_d, wv_d

        psum_out = [[None] * cols for _ in range(rows)]
        for r in range(rows):
            for c in range(cols):
                # (without data_reset the data registers have no reset: only the valid bits
                # and switch tokens need one, and a reset net to every PE spans the array)
                w_act = Signal(signed(8), name=f"w_act_{r}_{c}", reset_less=quiet)
                w_shadow = Signal(signed(8), name=f"w_shadow_{r}_{c}", reset_less=quiet)
                w_use = Signal(signed(8), name=f"w_use_{r}_{c}")
                prod = Signal(signed(16), name=f"prod_{r}_{c}", reset_less=quiet)
                psum = Signal(signed(pw), name=f"psum_{r}_{c}", reset_less=quiet)
                with m.If(wv_in[r][c] & (w_in[r][c].row == r)):
                    m.d.sync += w_shadow.eq(w_in[r][c].w)
                m.d.comb += w_use.eq(Mux(sw_in[r][c], w_shadow, w_act))
                # the product is registered: the vector is at PE (r, c) in cycle t + r + c,
                # its product is added to the partial sum from above in cycle t + r + c + 1
                if self._registered:
                    # the operands registered and their product registered: on ECP5 the DSP
                    # block's own registers (hdl.dsp), elsewhere flip-flops (Yosys merges the
                    # input's with the one that passes it on, the weight's with `w_act`)
                    m.d.comb += prod.eq(registered_product(m, f"prod_{r}_{c}", a_in[r][c], w_use))
                else:
                    m.d.sync += prod.eq(a_in[r][c] * w_use)
                m.d.sync += w_act.eq(w_use)
                if r == 0:
                    m.d.sync += psum.eq(prod)
                else:
                    m.d.sync += psum.eq(psum_out[r - 1][c] + prod)
                psum_out[r][c] = psum
                if c + 1 < cols:
                    a_out = Signal(signed(8), name=f"a_{r}_{c + 1}", reset_less=quiet)
                    sw_out = Signal(name=f"sw_{r}_{c + 1}")
                    m.d.sync += [a_out.eq(a_in[r][c]), sw_out.eq(sw_in[r][c])]
                    a_in[r][c + 1], sw_in[r][c + 1] = a_out, sw_out

        # De-skew: column c leaves the bottom row at t + rows + c + 1; delay it to t + LATENCY.
        for c in range(cols):
            v = psum_out[rows - 1][c]
            for k in range(cols - 1 - c):
                v_d = Signal(signed(pw), name=f"deskew_{c}_{k}", reset_less=quiet)
                m.d.sync += v_d.eq(v)
                v = v_d
            m.d.comb += self.o_data[c].eq(v)

        valid = self.i_valid
        for k in range(self.LATENCY):
            valid_d = Signal(name=f"valid_d{k + 1}")
            m.d.sync += valid_d.eq(valid)
            valid = valid_d
        m.d.comb += self.o_valid.eq(valid)
        return m
