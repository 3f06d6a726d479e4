"""A multiplier with registered operands and a registered product: on ECP5 one ``MULT18X18D``
with its own input and output registers."""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Shape, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisteredMultiplier", "registered_product", "ECP5_DSP_INPUT_BITS"]

#: Operand bits of an ECP5 ``MULT18X18D`` (signed; an unsigned operand takes one bit less).
ECP5_DSP_INPUT_BITS = 18


def _signed_bits(shape):
    """Bits of ``shape`` as a signed number (an unsigned value takes one more)."""
    shape = Shape.cast(shape)
    return shape.width + (not shape.signed)


class RegisteredMultiplier(wiring.Component):
    """``p = a * b``, two stages: on every cycle with ``ce`` the operands are registered and
    the product of the registered operands is registered, so ``p`` is the product of the
    operands of two enabled cycles before. Its registers have no reset.

    On an ECP5 platform (``platform.family == "ecp5"``) and operands of at most 18 signed bits
    it is one ``MULT18X18D`` whose input registers (``REG_INPUTA``, ``REG_INPUTB``) and output
    register (``REG_OUTPUT``) are these stages, clocked by the ``sync`` domain with ``ce`` as
    their clock enable. Yosys maps a ``*`` onto the multiplier alone, with the registers
    around it in the logic; there the paths into and out of the DSP block each add a
    route across the die (the DSP tiles are three rows apart) to the multiplier's own
    delay, while with the DSP block's registers each route is a register-to-register path
    of its own. Elsewhere (simulation, Verilog, iCE40) the registers are flip-flops around a
    ``*``, with the same behaviour.

    Parameters
    ----------
    a_shape, b_shape : Shape
        The operands' shapes (signed or unsigned).

    Members
    -------
    a : In(a_shape)
    b : In(b_shape)
    ce : In(1, init=1)
        Clock enable of all three registers.
    p : Out(shape of ``a * b``)
    """

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        self._p_shape = (Const(0, a_shape) * Const(0, b_shape)).shape()
        super().__init__({
            "a": In(a_shape),
            "b": In(b_shape),
            "ce": In(1, init=1),
            "p": Out(self._p_shape),
        })

    def fits_ecp5(self):
        """Whether both operands fit a ``MULT18X18D``'s 18-bit signed inputs."""
        return all(_signed_bits(Value.cast(x).shape()) <= ECP5_DSP_INPUT_BITS
                   for x in (self.a, self.b))

    def elaborate(self, platform):
        m = Module()
        if getattr(platform, "family", None) == "ecp5" and self.fits_ecp5():
            self._ecp5(m)
            return m
        a_r = Signal.like(self.a, name="a_r", reset_less=True)
        b_r = Signal.like(self.b, name="b_r", reset_less=True)
        p_r = Signal(self._p_shape, name="p_r", reset_less=True)
        with m.If(self.ce):
            m.d.sync += [a_r.eq(self.a), b_r.eq(self.b), p_r.eq(a_r * b_r)]
        m.d.comb += self.p.eq(p_r)
        return m

    def _ecp5(self, m):
        n = ECP5_DSP_INPUT_BITS
        # operands as 18-bit signed values (sign- or zero-extended): SIGNEDA = SIGNEDB = 1
        a18, b18 = Signal(n, name="a18"), Signal(n, name="b18")
        pw = 2 * n
        p36 = Signal(pw, name="p36")
        m.d.comb += [a18.eq(self.a.as_signed() if self.a.shape().signed else self.a),
                     b18.eq(self.b.as_signed() if self.b.shape().signed else self.b)]
        ports = {}
        for k in range(n):
            ports[f"i_A{k}"] = a18[k]
            ports[f"i_B{k}"] = b18[k]
            ports[f"i_C{k}"] = Const(0, 1)
        for k in range(pw):
            ports[f"o_P{k}"] = p36[k]
        regs = {}
        for reg in ("INPUTA", "INPUTB", "OUTPUT"):
            regs.update({f"p_REG_{reg}_CLK": "CLK0", f"p_REG_{reg}_CE": "CE0",
                         f"p_REG_{reg}_RST": "RST0"})
        m.submodules.dsp = Instance(
            "MULT18X18D",
            p_REG_INPUTC_CLK="NONE", p_REG_PIPELINE_CLK="NONE",
            p_CLK0_DIV="ENABLED", p_CLK1_DIV="ENABLED", p_CLK2_DIV="ENABLED",
            p_CLK3_DIV="ENABLED", p_HIGHSPEED_CLK="NONE", p_GSR="DISABLED",
            p_CAS_MATCH_REG="FALSE", p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED",
            p_RESETMODE="SYNC", **regs,
            i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1),
            i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
            i_CLK0=ClockSignal("sync"), i_CE0=self.ce, i_RST0=Const(0, 1),
            **ports)
        m.d.comb += self.p.eq(p36.as_signed() if self._p_shape.signed else p36)


def registered_product(m, name, a, b, ce=None):
    """``a * b`` through a :class:`RegisteredMultiplier` (submodule ``name`` of ``m``), its
    registers enabled by ``ce`` (always, if None): the product of the operands of two enabled
    cycles before."""
    mul = m.submodules[name] = RegisteredMultiplier(Value.cast(a).shape(), Value.cast(b).shape())
    m.d.comb += [mul.a.eq(a), mul.b.eq(b)]
    if ce is not None:
        m.d.comb += mul.ce.eq(ce)
    return mul.p
