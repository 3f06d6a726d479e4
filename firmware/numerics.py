"""Bit-exact integer numerics of the NPU: one numpy golden function per operation.

Every function here is the specification the hardware follows. The golden model, the compiler's
tests and the RTL testbenches all call these functions; docs/numerics.md states the same
arithmetic in prose and formulas.

Conventions
-----------
- Activations are int8, NHWC, with a per-tensor scale and zero point.
- Weights are int8, symmetric (zero point 0), per output channel: ``(O, KH, KW, C)`` for
  convolutions and ``(K, O)`` for the fully connected layer.
- Bias is int32 with scale ``x_scale * w_scale[c]``.
- Accumulators are int32 and wrap (two's complement), as the hardware's do.
- Every rounding is round half to even, as ONNX ``QuantizeLinear``.

The module is pure numpy; it imports nothing from the rest of the project.
"""

from __future__ import annotations

import numpy as np

INT8_MIN = -128
INT8_MAX = 127

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: Width of the requantization multiplier ``mult``: an unsigned Q31 value below ``2**31``.
MULT_BITS = 31
#: Largest requantization shift.
MAX_SHIFT = 63
#: Width of the residual-add multipliers ``ma`` and ``mb``: unsigned Q31, as ``mult``.
ADD_MULT_BITS = MULT_BITS
#: Largest residual-add shift (shared by ``ma`` and ``mb``).
ADD_MAX_SHIFT = MAX_SHIFT

# Number of output pixels convolved per BLAS call, so the float64 patch matrix stays small.
_CONV_ROWS_PER_CHUNK = 1 << 15


# --------------------------------------------------------------------------------------------
# Helpers


def _as_int(x, name: str) -> np.ndarray:
    """Return ``x`` as an integer numpy array, or raise ``TypeError`` naming it."""
    a = np.asarray(x)
    if a.dtype.kind == "b":
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not dtype {a.dtype}")
    return a


def _check_range(a: np.ndarray, lo: int, hi: int, name: str) -> None:
    """Raise ``ValueError`` if any element of ``a`` lies outside ``[lo, hi]``."""
    if a.size == 0:
        return
    amin, amax = int(a.min()), int(a.max())
    if amin < lo or amax > hi:
        bad = amin if amin < lo else amax
        raise ValueError(f"{name} must lie in [{lo}, {hi}], found {bad}")


def _as_int8(x, name: str) -> np.ndarray:
    """Return ``x`` as an int8 array, checking (not wrapping) the range of other integer types."""
    a = _as_int(x, name)
    if a.dtype != np.int8:
        _check_range(a, INT8_MIN, INT8_MAX, name)
        a = a.astype(np.int8)
    return a


def _as_int32(x, name: str) -> np.ndarray:
    """Return ``x`` as an int32 array, checking (not wrapping) the range of other integer types."""
    a = _as_int(x, name)
    if a.dtype != np.int32:
        _check_range(a, INT32_MIN, INT32_MAX, name)
        a = a.astype(np.int32)
    return a


def _int_scalar(x, name: str, lo: int, hi: int) -> int:
    """Return ``x`` as a Python int in ``[lo, hi]``, or raise naming it."""
    a = np.asarray(x)
    if a.ndim != 0 or a.dtype.kind not in "iub":
        raise TypeError(f"{name} must be an integer scalar, not {x!r}")
    v = int(a)
    if not lo <= v <= hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], not {v}")
    return v


def _round_half_even(v: float) -> int:
    """Round a finite float to the nearest integer, ties to even."""
    return int(np.rint(np.float64(v)))


def _pair(v, name: str) -> tuple[int, int]:
    t = tuple(int(e) for e in v)
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"{name} must be two positive integers, not {v!r}")
    return t


def _pads(v, name: str = "pad") -> tuple[int, int, int, int]:
    t = tuple(int(e) for e in v)
    if len(t) != 4 or min(t) < 0:
        raise ValueError(f"{name} must be four non-negative integers (top, left, bottom, "
                         f"right), not {v!r}")
    return t


def _out_size(size: int, k: int, s: int, p0: int, p1: int, what: str) -> int:
    span = size + p0 + p1 - k
    if span < 0:
        raise ValueError(f"{what}: kernel {k} is larger than the padded input {size + p0 + p1}")
    return span // s + 1


def _positive_scale(v, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be positive and finite, not {v!r}")
    return a


# --------------------------------------------------------------------------------------------
# Integer primitives


def wrap_int32(x) -> np.ndarray:
    """Wrap an integer array to int32, two's complement (as a hardware accumulator does).

    Parameters
    ----------
    x : array_like of int
        Any integer values representable in int64 (or uint64).

    Returns
    -------
    numpy.ndarray of int32
        ``((x + 2**31) mod 2**32) - 2**31``, elementwise.
    """
    a = _as_int(x, "x").astype(np.int64)
    return (((a + 2**31) & 0xFFFF_FFFF) - 2**31).astype(np.int32)


def rounding_shift(x, shift) -> np.ndarray:
    """Divide by a power of two, rounding half to even.

    Parameters
    ----------
    x : array_like of int
        Dividend, int64 range.
    shift : int or array_like of int
        Exponent in ``[0, 63]``; broadcasts against ``x``.

    Returns
    -------
    numpy.ndarray of int64
        ``round_half_even(x / 2**shift)``. ``shift == 0`` returns ``x`` unchanged.

    Raises
    ------
    ValueError
        If a shift lies outside ``[0, 63]``.

    Notes
    -----
    In hardware: ``q = x >>> s`` (arithmetic), ``r = x mod 2**s``, ``half = 2**(s-1)``;
    the result is ``q + 1`` if ``r > half`` or (``r == half`` and ``q`` is odd), otherwise ``q``.
    """
    xa = _as_int(x, "x").astype(np.int64)
    s = _as_int(shift, "shift").astype(np.int64)
    _check_range(s, 0, MAX_SHIFT, "shift")
    q = xa >> s
    su = s.astype(np.uint64)
    mask = (np.uint64(1) << su) - np.uint64(1)
    r = xa.astype(np.uint64) & mask  # the low s bits of x, two's complement
    half = np.where(s > 0, np.uint64(1) << np.maximum(s - 1, 0).astype(np.uint64), np.uint64(0))
    up = (s > 0) & ((r > half) | ((r == half) & ((q & 1) == 1)))
    return np.asarray(q + up.astype(np.int64), dtype=np.int64)


def quantize_multiplier(real) -> tuple[np.ndarray, np.ndarray]:
    """Express a non-negative real factor as ``mult * 2**-shift``.

    Parameters
    ----------
    real : float or array_like of float
        Factor to represent, ``0 <= real < 2**31``.

    Returns
    -------
    mult : numpy.ndarray of int64
        Multiplier, normalised to ``[2**30, 2**31)`` whenever ``shift <= 63`` allows it. Factors
        below about ``2**-33`` get ``shift = 63`` and ``mult = round(real * 2**63) < 2**30``.
    shift : numpy.ndarray of int64
        Right shift in ``[0, 63]``.

    ``real == 0``, and factors that round to 0 at ``shift = 63``, give ``(0, 0)``. The mantissa
    is rounded to nearest, ties to even; if it rounds up to ``2**31`` it is renormalised to
    ``(2**30, shift - 1)``. The outputs have the shape of ``real``.

    Raises
    ------
    ValueError
        If a factor is negative, not finite, or too large: ``real >= 2**31``, or so close to it
        that the normalised multiplier would need ``shift < 0``.
    """
    r = np.asarray(real, dtype=np.float64)
    bad = ~np.isfinite(r) | (r < 0) | (r >= 2.0**MULT_BITS)
    if np.any(bad):
        v = float(r[bad].flat[0] if r.ndim else r)
        raise ValueError(f"requantization factor must be finite and in [0, 2**31), not {v!r}")
    m, e = np.frexp(r)  # r = m * 2**e, m in [0.5, 1)
    e = e.astype(np.int64)
    mult = np.rint(np.ldexp(m, MULT_BITS)).astype(np.int64)
    shift = MULT_BITS - e
    carry = mult == 2**MULT_BITS
    mult = np.where(carry, 2 ** (MULT_BITS - 1), mult)
    shift = np.where(carry, shift - 1, shift)
    if np.any(shift < 0):
        v = float(r[shift < 0].flat[0] if r.ndim else r)
        raise ValueError(f"requantization factor {v!r} rounds to 2**31, which is not representable")
    small = shift > MAX_SHIFT
    if np.any(small):
        tiny = np.rint(np.ldexp(np.where(small, r, 0.0), MAX_SHIFT)).astype(np.int64)
        mult = np.where(small, tiny, mult)
        shift = np.where(small, MAX_SHIFT, shift)
    zero = mult == 0
    shift = np.where(zero, 0, shift)
    return np.asarray(mult, dtype=np.int64), np.asarray(shift, dtype=np.int64)


def requantize(acc, mult, shift, zp, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """Rescale int32 accumulators to int8.

    Parameters
    ----------
    acc : array_like of int32
        Accumulators (bias already added), channels on the last axis.
    mult : int or array_like of int
        Multipliers in ``[0, 2**31)``, a scalar or one per channel (broadcast on the last axis).
    shift : int or array_like of int
        Shifts in ``[0, 63]``, like ``mult``.
    zp : int
        Output zero point.
    lo, hi : int
        Clamp bounds within ``[-128, 127]`` (see :func:`relu_bounds`, :func:`clip_bounds`).

    Returns
    -------
    numpy.ndarray of int8
        ``clamp(zp + rounding_shift(int64(acc) * mult, shift), lo, hi)``. The product needs at
        most 63 bits (``|acc| <= 2**31``, ``mult < 2**31``).
    """
    a = _as_int32(acc, "acc").astype(np.int64)
    m = _as_int(mult, "mult").astype(np.int64)
    _check_range(m, 0, 2**MULT_BITS - 1, "mult")
    zp = _int_scalar(zp, "zp", INT8_MIN, INT8_MAX)
    lo = _int_scalar(lo, "lo", INT8_MIN, INT8_MAX)
    hi = _int_scalar(hi, "hi", INT8_MIN, INT8_MAX)
    if lo > hi:
        raise ValueError(f"lo must not exceed hi, got lo={lo}, hi={hi}")
    y = zp + rounding_shift(a * m, shift)
    return np.clip(y, lo, hi).astype(np.int8)


def relu_bounds(zp, relu: bool) -> tuple[int, int]:
    """Clamp bounds of a requantization, with or without a fused ReLU.

    Parameters
    ----------
    zp : int
        Output zero point (the quantised value of real 0).
    relu : bool
        Whether a ReLU follows.

    Returns
    -------
    tuple of int
        ``(zp, 127)`` if ``relu`` else ``(-128, 127)``.
    """
    zp = _int_scalar(zp, "zp", INT8_MIN, INT8_MAX)
    return (zp, INT8_MAX) if relu else (INT8_MIN, INT8_MAX)


def clip_bounds(zp, scale, clip_min, clip_max) -> tuple[int, int]:
    """Clamp bounds of a ``Clip(clip_min, clip_max)`` folded into an int8 output.

    Parameters
    ----------
    zp : int
        Output zero point.
    scale : float
        Output scale, positive.
    clip_min, clip_max : float or None
        Real bounds of the Clip; ``None`` or an infinity means unbounded on that side.

    Returns
    -------
    tuple of int
        ``(lo, hi)`` with ``lo = round(clip_min / scale) + zp`` and
        ``hi = round(clip_max / scale) + zp`` (round half to even, float64), each limited to
        ``[-128, 127]``. Because quantisation is monotonic, clamping the quantised value to
        ``[lo, hi]`` equals quantising the clipped real value.
    """
    zp = _int_scalar(zp, "zp", INT8_MIN, INT8_MAX)
    sc = float(_positive_scale(scale, "scale"))
    cmin = -np.inf if clip_min is None else float(clip_min)
    cmax = np.inf if clip_max is None else float(clip_max)
    if np.isnan(cmin) or np.isnan(cmax) or cmin > cmax:
        raise ValueError(f"Clip bounds must satisfy min <= max, got ({clip_min!r}, {clip_max!r})")

    def bound(v: float) -> int:
        q = v / sc  # may be +-inf; anything beyond +-1024 saturates anyway
        q = min(max(q, -1024.0), 1024.0)
        return min(max(_round_half_even(q) + zp, INT8_MIN), INT8_MAX)

    return bound(cmin), bound(cmax)


# --------------------------------------------------------------------------------------------
# Accumulating operations (the systolic array)


def conv2d(x, x_zp, w, bias, stride=(1, 1), pad=(0, 0, 0, 0)) -> np.ndarray:
    """Integer 2-D convolution, NHWC, into int32 accumulators.

    Parameters
    ----------
    x : array_like of int8, shape (N, H, W, C)
        Input activations.
    x_zp : int
        Input zero point; padding positions hold ``x_zp``.
    w : array_like of int8, shape (O, KH, KW, C)
        Weights.
    bias : array_like of int32, shape (O,)
        Bias, scale ``x_scale * w_scale[o]``.
    stride : tuple of int
        ``(sh, sw)``.
    pad : tuple of int
        ``(top, left, bottom, right)``.

    Returns
    -------
    numpy.ndarray of int32, shape (N, OH, OW, O)
        ``acc[n, oy, ox, o] = sum_{ky, kx, c} (x_pad[n, oy*sh + ky, ox*sw + kx, c] - x_zp)
        * w[o, ky, kx, c] + bias[o]``, wrapped to int32, with
        ``OH = (H + top + bottom - KH) // sh + 1`` and likewise ``OW``.

    Notes
    -----
    The sum is computed exactly with float64 BLAS: every product has ``|p| <= 255 * 128 < 2**15``
    and every partial sum stays far below ``2**53`` (for fewer than ``2**38`` terms), so each
    float64 operation is exact in any order. The exact sum plus bias is then wrapped to int32.
    """
    x = _as_int8(x, "x")
    w = _as_int8(w, "w")
    x_zp = _int_scalar(x_zp, "x_zp", INT8_MIN, INT8_MAX)
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"conv2d wants x (N, H, W, C) and w (O, KH, KW, C), got shapes "
                         f"{x.shape} and {w.shape}")
    n, h, wd, c = x.shape
    o, kh, kw, wc = w.shape
    if wc != c:
        raise ValueError(f"conv2d: x has {c} channels but w has {wc}")
    b = _as_int32(bias, "bias").astype(np.int64)
    if b.shape != (o,):
        raise ValueError(f"conv2d: bias must have shape ({o},), not {b.shape}")
    sh, sw = _pair(stride, "stride")
    pt, pl, pb, pr = _pads(pad)
    oh = _out_size(h, kh, sh, pt, pb, "conv2d height")
    ow = _out_size(wd, kw, sw, pl, pr, "conv2d width")

    # Centred input, padded with 0 (that is, with x_zp before centring).
    xc = np.zeros((n, h + pt + pb, wd + pl + pr, c), dtype=np.float64)
    xc[:, pt:pt + h, pl:pl + wd, :] = x.astype(np.float64) - x_zp
    wm = w.astype(np.float64).transpose(1, 2, 3, 0).reshape(kh * kw * c, o)
    out = np.empty((n, oh, ow, o), dtype=np.int64)
    rows = max(1, _CONV_ROWS_PER_CHUNK // max(1, ow))
    for ni in range(n):
        for y0 in range(0, oh, rows):
            y1 = min(oh, y0 + rows)
            patches = np.empty((y1 - y0, ow, kh, kw, c), dtype=np.float64)
            for ky in range(kh):
                r0 = y0 * sh + ky
                src_rows = xc[ni, r0:r0 + (y1 - y0 - 1) * sh + 1:sh]
                for kx in range(kw):
                    patches[:, :, ky, kx, :] = src_rows[:, kx:kx + (ow - 1) * sw + 1:sw, :]
            acc = patches.reshape(-1, kh * kw * c) @ wm
            out[ni, y0:y1] = acc.astype(np.int64).reshape(y1 - y0, ow, o)
    return wrap_int32(out + b)


def matmul(x, x_zp, w, bias) -> np.ndarray:
    """Integer matrix product into int32 accumulators (the fully connected layer).

    Parameters
    ----------
    x : array_like of int8, shape (N, K)
        Input activations.
    x_zp : int
        Input zero point.
    w : array_like of int8, shape (K, O)
        Weights.
    bias : array_like of int32, shape (O,)
        Bias, scale ``x_scale * w_scale[o]``.

    Returns
    -------
    numpy.ndarray of int32, shape (N, O)
        ``(x - x_zp) @ w + bias``, wrapped to int32 (computed exactly, as in :func:`conv2d`).
    """
    x = _as_int8(x, "x")
    w = _as_int8(w, "w")
    x_zp = _int_scalar(x_zp, "x_zp", INT8_MIN, INT8_MAX)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"matmul wants x (N, K) and w (K, O), got shapes {x.shape} and {w.shape}")
    b = _as_int32(bias, "bias").astype(np.int64)
    if b.shape != (w.shape[1],):
        raise ValueError(f"matmul: bias must have shape ({w.shape[1]},), not {b.shape}")
    acc = (x.astype(np.float64) - x_zp) @ w.astype(np.float64)
    return wrap_int32(acc.astype(np.int64) + b)


def requant_params(x_scale, w_scale, y_scale, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mult, shift)`` of a conv/matmul output: ``quantize_multiplier`` of
    ``x_scale * w_scale[c] / y_scale`` computed in float64. The one place these are derived: the
    golden functions and the compiler both call it.
    """
    xs = _positive_scale(x_scale, "x_scale")
    ws = _positive_scale(w_scale, "w_scale")
    ys = _positive_scale(y_scale, "y_scale")
    if xs.ndim or ys.ndim:
        raise ValueError("x_scale and y_scale must be scalars (per-tensor)")
    if ws.ndim not in (0, 1) or (ws.ndim == 1 and ws.shape[0] != channels):
        raise ValueError(f"w_scale must be a scalar or have shape ({channels},), not {ws.shape}")
    ratio = np.broadcast_to(xs * ws / ys, (channels,))
    return quantize_multiplier(ratio)


def qlinear_conv(x, x_scale, x_zp, w, w_scale, bias, y_scale, y_zp, stride=(1, 1),
                 pad=(0, 0, 0, 0), lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """Quantised convolution (ONNX ``QLinearConv``), NHWC in and out.

    Parameters
    ----------
    x : array_like of int8, shape (N, H, W, C)
        Input activations.
    x_scale : float
        Input scale.
    x_zp : int
        Input zero point.
    w : array_like of int8, shape (O, KH, KW, C)
        Symmetric weights (zero point 0).
    w_scale : float or array_like of float, shape (O,)
        Weight scale, per output channel or per tensor.
    bias : array_like of int32, shape (O,)
        Bias with scale ``x_scale * w_scale[o]``.
    y_scale : float
        Output scale.
    y_zp : int
        Output zero point.
    stride, pad
        As for :func:`conv2d`.
    lo, hi : int
        Output clamp (ReLU or Clip folded in).

    Returns
    -------
    numpy.ndarray of int8, shape (N, OH, OW, O)
        ``requantize(conv2d(...), mult, shift, y_zp, lo, hi)`` with
        ``(mult, shift) = quantize_multiplier(x_scale * w_scale / y_scale)``, the ratio in float64.
    """
    acc = conv2d(x, x_zp, w, bias, stride, pad)
    mult, shift = requant_params(x_scale, w_scale, y_scale, acc.shape[-1])
    return requantize(acc, mult, shift, y_zp, lo, hi)


def fully_connected(x, x_scale, x_zp, w, w_scale, bias, y_scale, y_zp, lo=INT8_MIN,
                    hi=INT8_MAX) -> np.ndarray:
    """Quantised fully connected layer (ONNX ``QLinearMatMul`` plus bias, i.e. ``Gemm``).

    Parameters
    ----------
    x : array_like of int8, shape (N, K)
        Input activations.
    x_scale, x_zp
        Input quantisation.
    w : array_like of int8, shape (K, O)
        Symmetric weights.
    w_scale : float or array_like of float, shape (O,)
        Weight scale, per output channel or per tensor.
    bias : array_like of int32, shape (O,)
        Bias with scale ``x_scale * w_scale[o]``.
    y_scale, y_zp
        Output quantisation.
    lo, hi : int
        Output clamp.

    Returns
    -------
    numpy.ndarray of int8, shape (N, O)
        ``requantize(matmul(x, x_zp, w, bias), mult, shift, y_zp, lo, hi)``, parameters as in
        :func:`qlinear_conv`.
    """
    acc = matmul(x, x_zp, w, bias)
    mult, shift = requant_params(x_scale, w_scale, y_scale, acc.shape[-1])
    return requantize(acc, mult, shift, y_zp, lo, hi)


# --------------------------------------------------------------------------------------------
# Post-processor operations


def add_multipliers(a_scale, b_scale, y_scale) -> tuple[int, int, int]:
    """Fixed-point rescales of a residual add: two Q31 multipliers with a shared shift.

    Parameters
    ----------
    a_scale, b_scale : float
        Scales of the two int8 inputs.
    y_scale : float
        Scale of the int8 output.

    Returns
    -------
    ma, mb : int
        Multipliers in ``[0, 2**31)``: ``ma = round(ra * 2**s)``, ``mb = round(rb * 2**s)`` with
        ``ra = a_scale / y_scale`` and ``rb = b_scale / y_scale`` in float64, round half to even.
        The larger of the two is normalised to ``[2**30, 2**31)``, as :func:`quantize_multiplier`
        normalises ``mult``.
    s : int
        Shift in ``[0, 63]``: the shift of ``quantize_multiplier(max(ra, rb))``.

    Raises
    ------
    ValueError
        If a scale is not positive and finite, or ``max(ra, rb)`` is not representable
        (``>= 2**31``, see :func:`quantize_multiplier`).
    """
    a_s = float(_positive_scale(a_scale, "a_scale"))
    b_s = float(_positive_scale(b_scale, "b_scale"))
    y_s = float(_positive_scale(y_scale, "y_scale"))
    ra, rb = a_s / y_s, b_s / y_s
    top = max(ra, rb)
    try:
        _, s = quantize_multiplier(top)
    except ValueError as err:
        raise ValueError(f"residual add rescale max(a_scale, b_scale) / y_scale = {top!r}: "
                         f"{err}") from None
    s = int(s)
    return _round_half_even(np.ldexp(ra, s)), _round_half_even(np.ldexp(rb, s)), s


def add(a, a_zp, b, b_zp, ma, mb, s, y_zp, lo=INT8_MIN, hi=INT8_MAX) -> np.ndarray:
    """Residual add of two int8 tensors with their own rescales.

    Parameters
    ----------
    a, b : array_like of int8
        Inputs, same shape (or broadcastable).
    a_zp, b_zp : int
        Input zero points.
    ma, mb : int
        Multipliers in ``[0, 2**31)`` (from :func:`add_multipliers`).
    s : int
        Shared shift in ``[0, 63]``.
    y_zp : int
        Output zero point.
    lo, hi : int
        Output clamp (ReLU folded in).

    Returns
    -------
    numpy.ndarray of int8
        ``clamp(y_zp + rounding_shift((a - a_zp) * ma + (b - b_zp) * mb, s), lo, hi)``, exact in
        int64: each product has at most 9 + 31 = 40 bits and ``|sum| <= 510 * (2**31 - 1) <
        2**40``, so the sum has at most 41 bits.
    """
    a = _as_int8(a, "a").astype(np.int64)
    b = _as_int8(b, "b").astype(np.int64)
    a_zp = _int_scalar(a_zp, "a_zp", INT8_MIN, INT8_MAX)
    b_zp = _int_scalar(b_zp, "b_zp", INT8_MIN, INT8_MAX)
    ma = _int_scalar(ma, "ma", 0, 2**ADD_MULT_BITS - 1)
    mb = _int_scalar(mb, "mb", 0, 2**ADD_MULT_BITS - 1)
    s = _int_scalar(s, "s", 0, ADD_MAX_SHIFT)
    y_zp = _int_scalar(y_zp, "y_zp", INT8_MIN, INT8_MAX)
    lo = _int_scalar(lo, "lo", INT8_MIN, INT8_MAX)
    hi = _int_scalar(hi, "hi", INT8_MIN, INT8_MAX)
    if lo > hi:
        raise ValueError(f"lo must not exceed hi, got lo={lo}, hi={hi}")
    acc = (a - a_zp) * ma + (b - b_zp) * mb
    y = y_zp + rounding_shift(acc, s)
    return np.clip(y, lo, hi).astype(np.int8)


def qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, lo=INT8_MIN,
                hi=INT8_MAX) -> np.ndarray:
    """Quantised residual add (ONNX ``com.microsoft.QLinearAdd``).

    Parameters
    ----------
    a, b : array_like of int8
        Inputs.
    a_scale, a_zp, b_scale, b_zp
        Input quantisation.
    y_scale, y_zp
        Output quantisation.
    lo, hi : int
        Output clamp.

    Returns
    -------
    numpy.ndarray of int8
        :func:`add` with the rescales of :func:`add_multipliers`.
    """
    ma, mb, s = add_multipliers(a_scale, b_scale, y_scale)
    return add(a, a_zp, b, b_zp, ma, mb, s, y_zp, lo, hi)


def maxpool(x, kernel=(3, 3), stride=(2, 2), pad=(1, 1, 1, 1)) -> np.ndarray:
    """Max pooling of int8 NHWC activations (ONNX ``MaxPool``).

    Parameters
    ----------
    x : array_like of int8, shape (N, H, W, C)
        Input; the output keeps its scale and zero point.
    kernel : tuple of int
        ``(KH, KW)``.
    stride : tuple of int
        ``(sh, sw)``.
    pad : tuple of int
        ``(top, left, bottom, right)``, each smaller than the kernel along its axis.

    Returns
    -------
    numpy.ndarray of int8, shape (N, OH, OW, C)
        The maximum of each window; padded positions never win (they are filled with -128,
        and every window holds at least one real element). ``OH = (H + top + bottom - KH) // sh
        + 1`` (floor mode), likewise ``OW``.
    """
    x = _as_int8(x, "x")
    if x.ndim != 4:
        raise ValueError(f"maxpool wants x (N, H, W, C), got shape {x.shape}")
    kh, kw = _pair(kernel, "kernel")
    sh, sw = _pair(stride, "stride")
    pt, pl, pb, pr = _pads(pad)
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ValueError(f"maxpool padding {pad} must be smaller than the kernel {kernel}")
    h, wd = x.shape[1:3]
    oh = _out_size(h, kh, sh, pt, pb, "maxpool height")
    ow = _out_size(wd, kw, sw, pl, pr, "maxpool width")
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=INT8_MIN)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    win = win[:, :(oh - 1) * sh + 1:sh, :(ow - 1) * sw + 1:sw]
    return win.max(axis=(-2, -1)).astype(np.int8)


def global_avgpool_params(hw, x_scale, x_zp, y_scale) -> tuple[int, int, int]:
    """Bias and requantization of a global average pool over ``hw`` positions.

    Parameters
    ----------
    hw : int
        Number of pooled positions, ``H * W``.
    x_scale, x_zp
        Input quantisation.
    y_scale : float
        Output scale.

    Returns
    -------
    bias : int
        ``-hw * x_zp`` (int32).
    mult, shift : int
        ``quantize_multiplier(x_scale / (hw * y_scale))``, the ratio in float64.
    """
    hw = _int_scalar(hw, "hw", 1, 2**23)
    x_zp = _int_scalar(x_zp, "x_zp", INT8_MIN, INT8_MAX)
    xs = float(_positive_scale(x_scale, "x_scale"))
    ys = float(_positive_scale(y_scale, "y_scale"))
    mult, shift = quantize_multiplier(xs / (hw * ys))
    return -hw * x_zp, int(mult), int(shift)


def global_avgpool(x, x_scale, x_zp, y_scale, y_zp) -> np.ndarray:
    """Quantised global average pool (ONNX ``com.microsoft.QLinearGlobalAveragePool``).

    Parameters
    ----------
    x : array_like of int8, shape (N, H, W, C)
        Input activations.
    x_scale, x_zp
        Input quantisation.
    y_scale, y_zp
        Output quantisation.

    Returns
    -------
    numpy.ndarray of int8, shape (N, 1, 1, C)
        ``requantize(sum_{h, w} x + bias, mult, shift, y_zp)`` with the parameters of
        :func:`global_avgpool_params`; the sum is int32 (``|sum| <= 128 * H * W``).
    """
    x = _as_int8(x, "x")
    if x.ndim != 4:
        raise ValueError(f"global_avgpool wants x (N, H, W, C), got shape {x.shape}")
    h, wd = x.shape[1:3]
    bias, mult, shift = global_avgpool_params(h * wd, x_scale, x_zp, y_scale)
    acc = x.astype(np.int64).sum(axis=(1, 2), keepdims=True) + bias
    return requantize(wrap_int32(acc), mult, shift, y_zp)
