"""Tests of firmware/numerics.py against independent references.

References, in order of independence:

- exact rational arithmetic (:class:`fractions.Fraction`, whose ``round`` is half to even) for the
  integer primitives;
- naive loops for the convolution;
- onnxruntime (CPUExecutionProvider) running single-node ONNX models built in memory:
  ``ConvInteger`` and ``MatMulInteger`` (exact), ``QLinearConv``, ``QLinearMatMul``,
  ``com.microsoft.QLinearAdd`` and ``com.microsoft.QLinearGlobalAveragePool`` (float
  requantization: within 1 LSB), ``MaxPool`` (exact);
- ``onnx.reference.ReferenceEvaluator`` for ``QLinearConv`` (float64 requantization).

All of these onnxruntime kernels accept int8 tensors directly (onnxruntime 1.18+), so no uint8
conversion is needed here.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from firmware import numerics as nm
from firmware.reference import ort_session

# --------------------------------------------------------------------------------------------
# Helpers

_ONNX_TYPES = {
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.float32): TensorProto.FLOAT,
}


def _model(node: onnx.NodeProto, inputs: dict, inits: dict, out_type: int) -> onnx.ModelProto:
    """A one-node model: ``inputs`` become graph inputs, ``inits`` initializers."""
    graph = helper.make_graph(
        [node],
        "single_node",
        [helper.make_tensor_value_info(k, _ONNX_TYPES[v.dtype], v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(node.output[0], out_type, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
    )
    model.ir_version = 10
    return model


def _ort(node, inputs: dict, inits: dict, out_type: int = TensorProto.INT8) -> np.ndarray:
    model = _model(node, inputs, inits, out_type)
    sess = ort_session(model)
    return sess.run(None, inputs)[0]


def _onnx_ref(node, inputs: dict, inits: dict, out_type: int = TensorProto.INT8) -> np.ndarray:
    return ReferenceEvaluator(_model(node, inputs, inits, out_type)).run(None, inputs)[0]


def _f32(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def _i8(v) -> np.ndarray:
    return np.asarray(v, dtype=np.int8)


def _assert_within_1lsb(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    """At most 1 LSB apart everywhere, and exactly equal on (nearly) all elements."""
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    assert diff.max(initial=0) <= 1, f"{what}: differs by {diff.max()} LSB"
    n_off = int(np.count_nonzero(diff))
    # >= 95% exactly equal; tiny outputs may have a single 1-LSB difference.
    assert n_off <= max(1, 0.05 * diff.size), f"{what}: {n_off}/{diff.size} elements off by 1"


def _tensor(rng: np.random.Generator, shape, extremes: float) -> np.ndarray:
    """Random int8 tensor; a fraction ``extremes`` of the elements set to -128 or 127."""
    a = rng.integers(-128, 128, size=shape, dtype=np.int8)
    mask = rng.random(shape) < extremes
    a[mask] = rng.choice(np.array([-128, 127], dtype=np.int8), size=int(mask.sum()))
    return a


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Log-uniform floats in [lo, hi], rounded to float32 (as ONNX stores scales)."""
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: float(np.float32(10.0**e)))


zero_points = st.one_of(st.sampled_from([-128, 127, 0]), st.integers(-128, 127))
scales = _log_uniform(1e-4, 1.0)
seeds = st.integers(0, 2**32 - 1)
extremes = st.sampled_from([0.0, 0.05, 0.5, 1.0])


def _ref_rshift(x: int, s: int) -> int:
    return round(Fraction(x, 2**s))  # Fraction.__round__ is half to even


def _ref_wrap(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


# --------------------------------------------------------------------------------------------
# Integer primitives


def test_rounding_shift_ties_by_hand():
    x = np.array([5, 7, -5, -3, 3, 1, -1, 6, -6, 4, -4], dtype=np.int64)
    assert nm.rounding_shift(x, 1).tolist() == [2, 4, -2, -2, 2, 0, 0, 3, -3, 2, -2]
    # quarters: 0.25 -> 0, 0.75 -> 1, 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4
    x = np.array([1, 3, 10, 14, -10, -14], dtype=np.int64)
    assert nm.rounding_shift(x, 2).tolist() == [0, 1, 2, 4, -2, -4]
    assert nm.rounding_shift(x, 0).tolist() == x.tolist()


def test_rounding_shift_int64_extremes():
    x = np.array([-(2**63), 2**63 - 1, 2**62, -(2**62), 3 * 2**61], dtype=np.int64)
    for s in (0, 1, 31, 62, 63):
        assert nm.rounding_shift(x, s).tolist() == [_ref_rshift(int(v), s) for v in x]


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1), st.integers(0, 63))
def test_rounding_shift_matches_fraction(x, s):
    assert int(nm.rounding_shift(np.int64(x), s)) == _ref_rshift(x, s)


@settings(max_examples=100, deadline=None)
@given(st.integers(-(2**63), 2**63 - 1), st.integers(1, 63))
def test_rounding_shift_hardware_form(x, s):
    """The one-adder form documented in docs/numerics.md gives the same result."""
    assert int(nm.rounding_shift(np.int64(x), s)) == (x + 2 ** (s - 1) - 1 + ((x >> s) & 1)) >> s


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=8),
       st.lists(st.integers(0, 63), min_size=1, max_size=8))
def test_rounding_shift_broadcasts_shift_arrays(xs, ss):
    x = np.array(xs, dtype=np.int64)[:, None]
    s = np.array(ss, dtype=np.int64)[None, :]
    got = nm.rounding_shift(x, s)
    assert got.dtype == np.int64 and got.shape == (len(xs), len(ss))
    assert got.tolist() == [[_ref_rshift(a, b) for b in ss] for a in xs]


@pytest.mark.parametrize("shift", [-1, 64, [0, 64]])
def test_rounding_shift_rejects_bad_shift(shift):
    with pytest.raises(ValueError, match="shift"):
        nm.rounding_shift(np.array([1, 2], dtype=np.int64), shift)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=16))
def test_wrap_int32(values):
    got = nm.wrap_int32(np.array(values, dtype=np.int64))
    assert got.dtype == np.int32
    assert got.tolist() == [_ref_wrap(v) for v in values]


def test_wrap_int32_by_hand():
    got = nm.wrap_int32(np.array([2**31, 2**31 - 1, -(2**31) - 1, 2**32 + 5, -7]))
    assert got.tolist() == [-(2**31), 2**31 - 1, 2**31 - 1, 5, -7]


# --------------------------------------------------------------------------------------------
# quantize_multiplier


def _ref_quantize_multiplier(real: float) -> tuple[int, int]:
    """Independent statement of the spec in exact rationals."""
    r = Fraction(real)
    if r == 0:
        return 0, 0
    k = 0
    while r * 2**k >= 2**31:
        k -= 1
    while r * 2**k < 2**30:
        k += 1
    m = round(r * 2**k)
    if m == 2**31:
        m, k = 2**30, k - 1
    if k > 63:
        k, m = 63, round(r * 2**63)
    if m == 0:
        return 0, 0
    assert k >= 0
    return m, k


reals = st.one_of(
    st.floats(-90.0, 30.9).map(lambda e: 2.0**e),
    st.floats(0.0, 2.0**31 - 1.0),
    st.sampled_from([0.0, 1.0, 0.5, 1 - 2.0**-33, 2.0**-33, 2.0**-64, 2.0**-65, 2.0**31 - 1.0]),
)


@settings(max_examples=300, deadline=None)
@given(reals)
def test_quantize_multiplier_matches_exact_spec(real):
    mult, shift = nm.quantize_multiplier(real)
    mult, shift = int(mult), int(shift)
    assert (mult, shift) == _ref_quantize_multiplier(real)
    # normalisation
    assert 0 <= shift <= 63 and 0 <= mult < 2**31
    if mult == 0:
        assert shift == 0 and Fraction(real) * 2**63 <= Fraction(1, 2)
    elif shift < 63:
        assert 2**30 <= mult < 2**31
    # round trip: |mult * 2**-shift - real| <= 2**-shift / 2
    if mult:
        assert abs(Fraction(mult, 2**shift) - Fraction(real)) <= Fraction(1, 2 ** (shift + 1))


def test_quantize_multiplier_by_hand():
    assert tuple(map(int, nm.quantize_multiplier(1.0))) == (2**30, 30)
    assert tuple(map(int, nm.quantize_multiplier(0.75))) == (3 * 2**29, 31)
    # mantissa rounds up to 2**31: renormalised
    assert tuple(map(int, nm.quantize_multiplier(1 - 2.0**-33))) == (2**30, 30)
    # too small for a normalised mult at shift 63
    assert tuple(map(int, nm.quantize_multiplier(2.0**-40))) == (2**23, 63)
    assert tuple(map(int, nm.quantize_multiplier(2.0**-64))) == (0, 0)  # 0.5 -> 0 (even)
    assert tuple(map(int, nm.quantize_multiplier(3 * 2.0**-64))) == (2, 63)  # 1.5 -> 2
    assert tuple(map(int, nm.quantize_multiplier(0.0))) == (0, 0)
    mult, shift = nm.quantize_multiplier(np.array([0.5, 0.0, 3.0]))
    assert mult.dtype == np.int64 and shift.dtype == np.int64
    assert mult.tolist() == [2**30, 0, 3 * 2**29] and shift.tolist() == [31, 0, 29]


@pytest.mark.parametrize("bad", [2.0**31, 2.0**31 - 0.5, 1e300, -1e-9, float("nan"), float("inf"),
                                 [0.5, -0.5]])
def test_quantize_multiplier_rejects(bad):
    with pytest.raises(ValueError, match="factor"):
        nm.quantize_multiplier(bad)


def test_quantize_multiplier_largest_representable():
    mult, shift = nm.quantize_multiplier(2.0**31 - 1.0)
    assert (int(mult), int(shift)) == (2**31 - 1, 0)


# --------------------------------------------------------------------------------------------
# requantize, bounds


def _ref_requantize(acc: int, mult: int, shift: int, zp: int, lo: int, hi: int) -> int:
    return min(max(zp + round(Fraction(acc * mult, 2**shift)), lo), hi)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, 2**31 - 1), st.integers(0, 63)), min_size=1, max_size=5),
    zero_points,
    st.integers(-128, 127),
    st.integers(-128, 127),
)
def test_requantize_matches_fraction(accs, params, zp, b0, b1):
    lo, hi = min(b0, b1), max(b0, b1)
    c = len(params)
    acc = np.array([[a] * c for a in accs], dtype=np.int32)
    mult = np.array([p[0] for p in params], dtype=np.int64)
    shift = np.array([p[1] for p in params], dtype=np.int64)
    got = nm.requantize(acc, mult, shift, zp, lo, hi)
    assert got.dtype == np.int8 and got.shape == acc.shape
    ref = [[_ref_requantize(a, m, s, zp, lo, hi) for m, s in params] for a in accs]
    assert got.tolist() == ref


def test_requantize_saturates_and_broadcasts():
    acc = np.array([[2**31 - 1, -(2**31), 0, 100]], dtype=np.int32)
    got = nm.requantize(acc, 2**30, 31, 5)  # y = 5 + acc / 2
    assert got.tolist() == [[127, -128, 5, 55]]
    got = nm.requantize(acc, [2**30, 2**30, 2**30, 2**30], [31, 31, 31, 32], 5, lo=5, hi=60)
    assert got.tolist() == [[60, 5, 5, 30]]
    # the product is rounded before the zero point is added, ties to even:
    # 101/2 = 50.5 -> 50, 99/2 = 49.5 -> 50, -101/2 = -50.5 -> -50, 103/2 = 51.5 -> 52
    got = nm.requantize(np.array([101, 99, -101, 103], dtype=np.int32), 2**30, 31, 5)
    assert got.tolist() == [55, 55, -45, 57]


def test_requantize_rejects_out_of_range():
    with pytest.raises(ValueError, match="mult"):
        nm.requantize(np.array([1], dtype=np.int32), 2**31, 31, 0)
    with pytest.raises(ValueError, match="acc"):
        nm.requantize(np.array([2**31], dtype=np.int64), 2**30, 31, 0)
    with pytest.raises(ValueError, match="lo"):
        nm.requantize(np.array([1], dtype=np.int32), 2**30, 31, 0, lo=10, hi=9)


def test_relu_bounds():
    assert nm.relu_bounds(-7, True) == (-7, 127)
    assert nm.relu_bounds(-7, False) == (-128, 127)
    assert nm.relu_bounds(127, True) == (127, 127)


def test_clip_bounds_by_hand():
    assert nm.clip_bounds(-128, 6 / 255, 0.0, 6.0) == (-128, 127)  # ReLU6 as the output range
    assert nm.clip_bounds(0, 0.1, -1.0, 1.0) == (-10, 10)
    assert nm.clip_bounds(0, 0.1, None, float("inf")) == (-128, 127)
    assert nm.clip_bounds(3, 1.0, -0.5, 2.5) == (3, 5)  # 2.5 -> 2 (even), -0.5 -> 0
    assert nm.clip_bounds(0, 1e-3, 1.0, 2.0) == (127, 127)
    with pytest.raises(ValueError):
        nm.clip_bounds(0, 0.1, 1.0, -1.0)


@settings(max_examples=60, deadline=None)
@given(zero_points, scales, st.floats(-300, 300), st.floats(0, 300), seeds)
def test_clip_bounds_equal_float_clip(zp, scale, cmin, width, seed):
    """Clamping the quantised value equals quantising the clipped real value."""
    cmax = cmin + width
    lo, hi = nm.clip_bounds(zp, scale, cmin, cmax)
    q = np.arange(-128, 128)
    real = (q - zp) * np.float64(scale)
    ref = np.clip(np.rint(np.clip(real, cmin, cmax) / scale) + zp, -128, 127)
    assert np.clip(q, lo, hi).tolist() == ref.astype(int).tolist()


# --------------------------------------------------------------------------------------------
# conv2d / matmul (exact integer accumulation)


def _naive_conv2d(x, x_zp, w, bias, stride, pad) -> np.ndarray:
    n, h, wd, c = x.shape
    o, kh, kw, _ = w.shape
    sh, sw = stride
    pt, pl, pb, pr = pad
    oh = (h + pt + pb - kh) // sh + 1
    ow = (wd + pl + pr - kw) // sw + 1
    out = np.zeros((n, oh, ow, o), dtype=np.int32)
    wi = w.astype(np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                acc = bias.astype(np.int64).copy()
                for ky in range(kh):
                    for kx in range(kw):
                        iy, ix = oy * sh + ky - pt, ox * sw + kx - pl
                        if 0 <= iy < h and 0 <= ix < wd:
                            px = x[b, iy, ix].astype(np.int64)
                        else:
                            px = np.full(c, x_zp, dtype=np.int64)
                        acc += wi[:, ky, kx, :] @ (px - x_zp)
                out[b, oy, ox] = [_ref_wrap(int(v)) for v in acc]
    return out


conv_geometry = st.fixed_dictionaries({
    "h": st.integers(1, 9),
    "w": st.integers(1, 9),
    "c": st.integers(1, 20),
    "o": st.integers(1, 20),
    "kh": st.sampled_from([1, 1, 2, 3, 3, 3, 7]),
    "kw": st.sampled_from([1, 1, 2, 3, 3, 3, 7]),
    "stride": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "pad": st.tuples(*[st.integers(0, 3)] * 4),
})


def _conv_shapes(g: dict) -> tuple[int, int]:
    """Input height and width grown until the kernel fits the padded input."""
    pt, pl, pb, pr = g["pad"]
    return max(g["h"], g["kh"] - pt - pb), max(g["w"], g["kw"] - pl - pr)


@settings(max_examples=40, deadline=None)
@given(conv_geometry, zero_points, seeds, extremes, st.booleans())
def test_conv2d_matches_naive_loops(g, x_zp, seed, ext, huge_bias):
    rng = np.random.default_rng(seed)
    h, w = _conv_shapes(g)
    x = _tensor(rng, (1, h, w, g["c"]), ext)
    wt = _tensor(rng, (g["o"], g["kh"], g["kw"], g["c"]), ext)
    if huge_bias:  # exercise the int32 wrap
        bias = rng.choice(np.array([2**31 - 1, -(2**31), 2**31 - 1000], dtype=np.int32), g["o"])
    else:
        bias = rng.integers(-(2**20), 2**20, g["o"]).astype(np.int32)
    got = nm.conv2d(x, x_zp, wt, bias, g["stride"], g["pad"])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, _naive_conv2d(x, x_zp, wt, bias, g["stride"], g["pad"]))


def test_conv2d_wraps_like_int32():
    x = np.full((1, 1, 1, 1), 127, dtype=np.int8)
    w = np.full((1, 1, 1, 1), 127, dtype=np.int8)
    bias = np.array([2**31 - 1], dtype=np.int32)
    got = nm.conv2d(x, -128, w, bias)
    assert got.tolist() == [[[[_ref_wrap(255 * 127 + 2**31 - 1)]]]]


def test_conv2d_batch_and_many_rows():
    """N > 1 and more output rows than one patch chunk (exercises the chunking)."""
    rng = np.random.default_rng(1)
    x = _tensor(rng, (2, 5, 3, 4), 0.1)
    w = _tensor(rng, (6, 3, 3, 4), 0.1)
    bias = rng.integers(-1000, 1000, 6).astype(np.int32)
    ref = _naive_conv2d(x, 7, w, bias, (1, 1), (1, 1, 1, 1))
    np.testing.assert_array_equal(nm.conv2d(x, 7, w, bias, (1, 1), (1, 1, 1, 1)), ref)
    old = nm._CONV_ROWS_PER_CHUNK
    try:
        nm._CONV_ROWS_PER_CHUNK = 1
        np.testing.assert_array_equal(nm.conv2d(x, 7, w, bias, (1, 1), (1, 1, 1, 1)), ref)
    finally:
        nm._CONV_ROWS_PER_CHUNK = old


def _to_nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _to_nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@settings(max_examples=40, deadline=None)
@given(conv_geometry, zero_points, seeds, extremes)
def test_conv2d_matches_ort_conv_integer(g, x_zp, seed, ext):
    """onnxruntime ConvInteger (int8 x and w, x_zero_point) pads with the zero point too."""
    rng = np.random.default_rng(seed)
    h, w = _conv_shapes(g)
    x = _tensor(rng, (1, h, w, g["c"]), ext)
    wt = _tensor(rng, (g["o"], g["kh"], g["kw"], g["c"]), ext)
    bias = rng.integers(-(2**20), 2**20, g["o"]).astype(np.int32)
    node = helper.make_node("ConvInteger", ["x", "w", "x_zp"], ["y"], strides=list(g["stride"]),
                            pads=list(g["pad"]), kernel_shape=[g["kh"], g["kw"]])
    ref = _ort(node, {"x": _to_nchw(x)}, {"w": _to_nchw(wt), "x_zp": _i8(x_zp)},
               TensorProto.INT32)
    got = nm.conv2d(x, x_zp, wt, bias, g["stride"], g["pad"])
    np.testing.assert_array_equal(got, _to_nhwc(ref) + bias)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 20), zero_points, seeds, extremes)
def test_matmul_matches_ort_matmul_integer(n, k, o, x_zp, seed, ext):
    rng = np.random.default_rng(seed)
    x = _tensor(rng, (n, k), ext)
    w = _tensor(rng, (k, o), ext)
    bias = rng.integers(-(2**24), 2**24, o).astype(np.int32)
    node = helper.make_node("MatMulInteger", ["x", "w", "x_zp"], ["y"])
    ref = _ort(node, {"x": x}, {"w": w, "x_zp": _i8(x_zp)}, TensorProto.INT32)
    got = nm.matmul(x, x_zp, w, bias)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref + bias)


def test_matmul_wraps_like_int32():
    x = np.full((1, 2), -128, dtype=np.int8)
    w = np.full((2, 1), -128, dtype=np.int8)
    bias = np.array([2**31 - 1], dtype=np.int32)
    assert nm.matmul(x, 127, w, bias).tolist() == [[_ref_wrap(2 * 255 * 128 + 2**31 - 1)]]


# --------------------------------------------------------------------------------------------
# QLinearConv / fully connected (float requantization in the references: within 1 LSB)


def _typical_y_scale(x_scale: float, w_scale: np.ndarray, k: int, factor: float) -> float:
    """An output scale that puts typical accumulators in range, times ``factor``."""
    return float(np.float32(x_scale * float(w_scale.max()) * math.sqrt(k) * 74.0 * 74.0 / 64.0
                            * factor))


factors = _log_uniform(1 / 64, 16.0)


@settings(max_examples=50, deadline=None)
@given(conv_geometry, scales, zero_points, zero_points, factors, seeds, extremes,
       st.booleans(), st.booleans())
def test_qlinear_conv_matches_ort(g, x_scale, x_zp, y_zp, factor, seed, ext, per_channel, relu):
    rng = np.random.default_rng(seed)
    h, w = _conv_shapes(g)
    o = g["o"]
    x = _tensor(rng, (1, h, w, g["c"]), ext)
    wt = _tensor(rng, (o, g["kh"], g["kw"], g["c"]), ext)
    if per_channel:
        w_scale = _f32(10.0 ** rng.uniform(-4, 0, o))
    else:
        w_scale = _f32(np.full(o, 10.0 ** rng.uniform(-4, 0)))
    k = g["kh"] * g["kw"] * g["c"]
    y_scale = _typical_y_scale(x_scale, w_scale, k, factor)
    bias = rng.integers(-(2**16), 2**16, o).astype(np.int32)
    lo, hi = nm.relu_bounds(y_zp, relu)

    got = nm.qlinear_conv(x, x_scale, x_zp, wt, w_scale, bias, y_scale, y_zp, g["stride"],
                          g["pad"], lo, hi)
    assert got.dtype == np.int8

    node = helper.make_node(
        "QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"],
        ["y"], strides=list(g["stride"]), pads=list(g["pad"]), kernel_shape=[g["kh"], g["kw"]])
    inits = {"x_scale": _f32(x_scale), "x_zp": _i8(x_zp), "w": _to_nchw(wt), "w_scale": w_scale,
             "w_zp": np.zeros(o, np.int8), "y_scale": _f32(y_scale), "y_zp": _i8(y_zp),
             "b": bias}
    feeds = {"x": _to_nchw(x)}
    ref_ort = np.clip(_to_nhwc(_ort(node, feeds, inits)), lo, hi)
    _assert_within_1lsb(got, ref_ort, "QLinearConv vs onnxruntime")
    if k * o * got.size <= 200_000:  # onnx.reference's convolution is slow on big shapes
        ref_onnx = np.clip(_to_nhwc(_onnx_ref(node, feeds, inits)), lo, hi)
        _assert_within_1lsb(got, ref_onnx, "QLinearConv vs onnx.reference")


def test_qlinear_conv_statistics():
    """On a larger layer, nearly every element matches onnxruntime exactly."""
    rng = np.random.default_rng(7)
    x = _tensor(rng, (1, 14, 14, 32), 0.02)
    w = _tensor(rng, (48, 3, 3, 32), 0.0)
    w_scale = _f32(10.0 ** rng.uniform(-3, -1, 48))
    x_scale, x_zp, y_zp = 0.0173, -11, 9
    y_scale = _typical_y_scale(x_scale, w_scale, 9 * 32, 1.0)
    bias = rng.integers(-5000, 5000, 48).astype(np.int32)
    got = nm.qlinear_conv(x, x_scale, x_zp, w, w_scale, bias, y_scale, y_zp, (1, 1), (1, 1, 1, 1))
    node = helper.make_node(
        "QLinearConv", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"],
        ["y"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    inits = {"x_scale": _f32(x_scale), "x_zp": _i8(x_zp), "w": _to_nchw(w), "w_scale": w_scale,
             "w_zp": np.zeros(48, np.int8), "y_scale": _f32(y_scale), "y_zp": _i8(y_zp),
             "b": bias}
    ref = _to_nhwc(_ort(node, {"x": _to_nchw(x)}, inits))
    _assert_within_1lsb(got, ref, "QLinearConv vs onnxruntime")
    saturated = np.mean((ref == -128) | (ref == 127))
    assert saturated < 0.2  # the comparison is meaningful: most outputs are in range


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 20), scales, zero_points,
       zero_points, factors, seeds, extremes, st.booleans())
def test_fully_connected_matches_ort_qlinear_matmul(n, k, o, x_scale, x_zp, y_zp, factor, seed,
                                                    ext, per_channel):
    """QLinearMatMul has no bias: compare with bias 0 (per-column b_scale is accepted)."""
    rng = np.random.default_rng(seed)
    x = _tensor(rng, (n, k), ext)
    w = _tensor(rng, (k, o), ext)
    w_scale = _f32(10.0 ** rng.uniform(-4, 0, o if per_channel else 1))
    w_scale = np.broadcast_to(w_scale, (o,)).copy()
    y_scale = _typical_y_scale(x_scale, w_scale, k, factor)
    got = nm.fully_connected(x, x_scale, x_zp, w, w_scale, np.zeros(o, np.int32), y_scale, y_zp)
    node = helper.make_node(
        "QLinearMatMul", ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp"], ["y"])
    inits = {"x_scale": _f32(x_scale), "x_zp": _i8(x_zp), "w": w,
             "w_scale": w_scale if per_channel else _f32(w_scale[0]),
             "w_zp": np.zeros(o, np.int8) if per_channel else _i8(0),
             "y_scale": _f32(y_scale), "y_zp": _i8(y_zp)}
    _assert_within_1lsb(got, _ort(node, {"x": x}, inits), "fully_connected vs QLinearMatMul")


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 20), scales, zero_points,
       zero_points, factors, seeds, extremes, st.booleans())
def test_fully_connected_with_bias_matches_float(n, k, o, x_scale, x_zp, y_zp, factor, seed, ext,
                                                 relu):
    """MatMulInteger (onnxruntime) + bias, requantized in float64 with round half to even."""
    rng = np.random.default_rng(seed)
    x = _tensor(rng, (n, k), ext)
    w = _tensor(rng, (k, o), ext)
    w_scale = _f32(10.0 ** rng.uniform(-4, 0, o))
    y_scale = _typical_y_scale(x_scale, w_scale, k, factor)
    bias = rng.integers(-(2**16), 2**16, o).astype(np.int32)
    lo, hi = nm.relu_bounds(y_zp, relu)
    got = nm.fully_connected(x, x_scale, x_zp, w, w_scale, bias, y_scale, y_zp, lo, hi)
    node = helper.make_node("MatMulInteger", ["x", "w", "x_zp"], ["y"])
    acc = _ort(node, {"x": x}, {"w": w, "x_zp": _i8(x_zp)}, TensorProto.INT32) + bias
    ratio = np.float64(x_scale) * w_scale.astype(np.float64) / np.float64(y_scale)
    ref = np.clip(np.rint(acc * ratio) + y_zp, lo, hi).astype(np.int8)
    _assert_within_1lsb(got, ref, "fully_connected vs float64")


# --------------------------------------------------------------------------------------------
# Residual add


def _exact_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale):
    """The real value of each add output before rounding and the zero point, in rationals:
    ``((a - a_zp) * a_scale + (b - b_zp) * b_scale) / y_scale`` (as float64 and as the distance
    to the nearest half-integer, exactly)."""
    ra, rb = Fraction(a_scale) / Fraction(y_scale), Fraction(b_scale) / Fraction(y_scale)
    vals = [(int(p) - a_zp) * ra + (int(q) - b_zp) * rb
            for p, q in zip(np.ravel(a), np.ravel(b), strict=True)]
    real = np.array([float(v) for v in vals]).reshape(np.shape(a))
    tie = np.array([float(abs(v - math.floor(v) - Fraction(1, 2))) for v in vals])
    return real, tie.reshape(np.shape(a))


def _add_ref(real, y_zp, lo=-128, hi=127):
    return np.clip(np.rint(real) + y_zp, lo, hi).astype(np.int64)


def _ort_add_tolerance(ra: float, rb: float) -> float:
    """Bound on onnxruntime's float32 QLinearAdd error (MLAS: ratios, the zero-point constant
    and two fused multiply-adds, each rounded to float32, relative error 2**-24): 16 roundings of
    the largest magnitude involved."""
    return 16 * 2.0**-24 * (128 + 256 * (ra + rb))


@settings(max_examples=200, deadline=None)
@given(scales, scales, _log_uniform(1e-6, 1e4))
def test_add_multipliers_definition(a_scale, b_scale, y_scale):
    ra, rb = Fraction(a_scale) / Fraction(y_scale), Fraction(b_scale) / Fraction(y_scale)
    ma, mb, s = nm.add_multipliers(a_scale, b_scale, y_scale)
    assert 0 <= ma < 2**31 and 0 <= mb < 2**31 and 0 <= s <= 63
    # the shared shift is the one quantize_multiplier gives the larger ratio ...
    top = max(float(a_scale) / float(y_scale), float(b_scale) / float(y_scale))
    assert s == _ref_quantize_multiplier(top)[1]
    # ... which normalises the larger multiplier (Q31, as the convolution's) ...
    if s < 63:
        assert 2**30 <= max(ma, mb) < 2**31
    # ... and both are the float64 ratios rounded half to even at that shift
    for m, r in ((ma, a_scale / y_scale), (mb, b_scale / y_scale)):
        assert m == round(Fraction(r) * 2**s)
    # so each represents its exact ratio within 2**-(s+1) plus the float64 ratio's error
    assert abs(Fraction(ma, 2**s) - ra) <= Fraction(1, 2 ** (s + 1)) + ra * Fraction(1, 2**52)
    assert abs(Fraction(mb, 2**s) - rb) <= Fraction(1, 2 ** (s + 1)) + rb * Fraction(1, 2**52)


def test_add_multipliers_by_hand():
    assert nm.add_multipliers(0.1, 0.05, 0.2) == (2**30, 2**29, 31)
    assert nm.add_multipliers(1.0, 1.0, 1.0) == (2**30, 2**30, 30)
    assert nm.add_multipliers(1.0, 3.0, 4.0) == (2**29, 3 * 2**29, 31)
    assert nm.add_multipliers(2.0**31 - 1, 1.0, 1.0) == (2**31 - 1, 1, 0)
    assert nm.add_multipliers(2.0**-40, 2.0**-41, 1.0) == (2**23, 2**22, 63)   # shift capped
    with pytest.raises(ValueError, match="residual add rescale"):
        nm.add_multipliers(2.0**31, 1.0, 1.0)
    with pytest.raises(ValueError, match="a_scale"):
        nm.add_multipliers(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="ma"):
        nm.add(np.zeros(2, np.int8), 0, np.zeros(2, np.int8), 0, 2**31, 0, 31, 0)
    with pytest.raises(ValueError, match="s must"):
        nm.add(np.zeros(2, np.int8), 0, np.zeros(2, np.int8), 0, 1, 1, 64, 0)


multipliers31 = st.one_of(st.integers(0, 2**31 - 1), st.sampled_from([0, 1, 2**30, 2**31 - 1]))


@settings(max_examples=100, deadline=None)
@given(zero_points, zero_points, zero_points, multipliers31, multipliers31, st.integers(0, 63),
       seeds, extremes)
def test_add_matches_fraction(a_zp, b_zp, y_zp, ma, mb, s, seed, ext):
    rng = np.random.default_rng(seed)
    a = _tensor(rng, (3, 5), ext)
    b = _tensor(rng, (3, 5), ext)
    got = nm.add(a, a_zp, b, b_zp, ma, mb, s, y_zp)
    ref = [[min(max(y_zp + round(Fraction((int(p) - a_zp) * ma + (int(q) - b_zp) * mb, 2**s)),
                    -128), 127) for p, q in zip(ra, rb, strict=True)]
           for ra, rb in zip(a, b, strict=True)]
    assert got.dtype == np.int8 and got.tolist() == ref


def test_add_extremes_by_hand():
    """The largest sums (+-510 * (2**31 - 1), 41 bits) and exact ties, against rationals."""
    a = np.array([127, -128, 127, -128, 1, 3], dtype=np.int8)
    b = np.array([127, -128, -128, 127, 0, 0], dtype=np.int8)
    for zp, s in ((-128, 40), (127, 40), (-128, 41), (127, 63), (-128, 30), (0, 1)):
        m = 2**31 - 1 if s != 1 else 1
        got = nm.add(a, zp, b, zp, m, m, s, 0)
        ref = [min(max(round(Fraction((int(p) - zp) * m + (int(q) - zp) * m, 2**s)), -128), 127)
               for p, q in zip(a, b, strict=True)]
        assert got.tolist() == ref
    # halves round to even: (1 + 0) / 2 -> 0, (3 + 0) / 2 -> 2
    assert nm.add(a[4:], 0, b[4:], 0, 1, 1, 1, 0).tolist() == [0, 2]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), scales, scales, zero_points,
       zero_points, zero_points, _log_uniform(1 / 16, 64.0), seeds, extremes, st.booleans())
def test_qlinear_add_matches_exact_rationals_and_ort(h, w, c, a_scale, b_scale, a_zp, b_zp,
                                                    y_zp, div, seed, ext, relu):
    """Equal to the exactly rounded real sum except within the Q31 representation error of a
    tie: ``|error| <= (|a - a_zp| + |b - b_zp|) * 2**-(s+1) <= 510 * max(ra, rb) * 2**-31``
    (docs/numerics.md); and to onnxruntime's com.microsoft.QLinearAdd except within its float32
    error of a tie. ``y_scale = max(a_scale, b_scale) / div``, so ``ra, rb <= 64`` and outputs
    saturate often."""
    rng = np.random.default_rng(seed)
    a = _tensor(rng, (1, h, w, c), ext)
    b = _tensor(rng, (1, h, w, c), ext)
    y_scale = float(np.float32(max(a_scale, b_scale) / div))
    lo, hi = nm.relu_bounds(y_zp, relu)
    got = nm.qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, lo, hi)
    real, tie = _exact_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale)
    ref = _add_ref(real, y_zp, lo, hi)
    band = tie <= 510 * max(a_scale, b_scale) / y_scale * 2.0**-31
    diff = np.abs(got.astype(np.int64) - ref)
    assert diff.max() <= 1
    assert np.all((diff == 0) | band), "Q31 add off by 1 away from a rounding tie"
    ort_ref = np.clip(_ort_qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp), lo, hi)
    _assert_add_near_ort(got, ort_ref, real, tie, a_scale / y_scale, b_scale / y_scale,
                         "QLinearAdd vs onnxruntime")


dyadic = st.integers(-6, 4)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.integers(1, 20), scales, dyadic, dyadic, zero_points, zero_points,
       zero_points, seeds, extremes, st.booleans())
def test_qlinear_add_ties_round_half_to_even(w, c, y_scale, ka, kb, a_zp, b_zp, y_zp, seed, ext,
                                            relu):
    """Scales that are powers of two apart make exact halves frequent. The Q31 multipliers are
    then exact, so every output is the real sum rounded half to even, before the zero point is
    added (as QuantizeLinear: ``round(x / y_scale) + y_zp``). onnxruntime's float32 is exact here
    too, but MLAS's QLinearAdd folds the output zero point into its constant term and rounds
    ``x / y_scale + y_zp``: it agrees on every element except exact halves with an odd
    ``y_zp``."""
    rng = np.random.default_rng(seed)
    a = _tensor(rng, (1, 4, w, c), ext)
    b = _tensor(rng, (1, 4, w, c), ext)
    a_scale, b_scale = y_scale * 2.0**ka, y_scale * 2.0**kb
    lo, hi = nm.relu_bounds(y_zp, relu)
    got = nm.qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp, lo, hi)
    real, tie = _exact_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale)
    np.testing.assert_array_equal(got, _add_ref(real, y_zp, lo, hi))
    ref = np.clip(_ort_qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp), lo, hi)
    diff = np.abs(got.astype(np.int64) - ref)
    assert diff.max() <= 1
    assert np.all((diff == 0) | ((tie == 0) & (y_zp % 2 == 1)))


def _ort_qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
    node = helper.make_node(
        "QLinearAdd", ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"], ["y"],
        domain="com.microsoft")
    inits = {"a_scale": _f32(a_scale), "a_zp": _i8(a_zp), "b_scale": _f32(b_scale),
             "b_zp": _i8(b_zp), "y_scale": _f32(y_scale), "y_zp": _i8(y_zp)}
    return _ort(node, {"a": a, "b": b}, inits)


def _assert_add_near_ort(got, ref, real, tie, ra, rb, what):
    """At most 1 LSB from ``ref`` everywhere, and exactly equal wherever the real value is
    farther from a tie than ``ref``'s float32 error can reach."""
    diff = np.abs(got.astype(np.int64) - ref.astype(np.int64))
    assert diff.max(initial=0) <= 1, f"{what}: differs by {diff.max()} LSB"
    band = tie <= _ort_add_tolerance(ra, rb)
    off = (diff != 0) & ~band
    assert not off.any(), (f"{what}: {int(off.sum())} elements off by 1 away from a tie, e.g. "
                           f"real {real[off][0]!r}")


def _qdq_add_model(shape, a_scale, a_zp, b_scale, b_zp, y_scale, y_zp):
    """``DequantizeLinear(a), DequantizeLinear(b) -> Add -> QuantizeLinear``, what
    ``quantize_static`` makes of a residual add (onnxruntime fuses it or runs it in float32)."""
    nodes = [helper.make_node("DequantizeLinear", ["a", "a_scale", "a_zp"], ["a_f"]),
             helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zp"], ["b_f"]),
             helper.make_node("Add", ["a_f", "b_f"], ["y_f"]),
             helper.make_node("QuantizeLinear", ["y_f", "y_scale", "y_zp"], ["y"])]
    inits = {"a_scale": _f32(a_scale), "a_zp": _i8(a_zp), "b_scale": _f32(b_scale),
             "b_zp": _i8(b_zp), "y_scale": _f32(y_scale), "y_zp": _i8(y_zp)}
    graph = helper.make_graph(
        nodes, "qdq_add",
        [helper.make_tensor_value_info(k, TensorProto.INT8, shape) for k in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.INT8, shape)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("a_scale, b_scale, y_scale, a_zp, b_zp, y_zp", [
    (0.021, 0.013, 0.034, -128, 5, -30),       # a ResNet block: y_scale a little above both
    (0.1, 0.05, 0.2, 0, 0, 0),                 # dyadic: exact halves everywhere
    (0.003, 0.07, 0.0625, 127, -128, 127),     # extreme zero points, unequal inputs
    (0.5, 0.5, 0.01, 3, -3, 0),                # saturates nearly everywhere
])
def test_qdq_add_matches_ort_and_onnx_reference(a_scale, b_scale, y_scale, a_zp, b_zp, y_zp):
    """The QDQ form of the add, on onnxruntime and on onnx.reference (float32 throughout)."""
    rng = np.random.default_rng(7)
    shape = (1, 16, 32, 32)
    a = _tensor(rng, shape, 0.05)
    b = _tensor(rng, shape, 0.05)
    a_scale, b_scale, y_scale = (float(np.float32(v)) for v in (a_scale, b_scale, y_scale))
    got = nm.qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)
    real, tie = _exact_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale)
    model = _qdq_add_model(shape, a_scale, a_zp, b_scale, b_zp, y_scale, y_zp)
    sess = ort_session(model)
    refs = {"onnxruntime": sess.run(None, {"a": a, "b": b})[0],
            "onnx.reference": ReferenceEvaluator(model).run(None, {"a": a, "b": b})[0]}
    for name, ref in refs.items():
        _assert_add_near_ort(got, ref, real, tie, a_scale / y_scale, b_scale / y_scale,
                             f"QDQ add vs {name}")


def test_qlinear_add_equality_fraction():
    """Measured over 2**21 outputs with residual-block scales (ratios 0.3 to 1, zero points
    anywhere): onnxruntime's QLinearAdd differs on at most 2 in 10^5 (float32 near ties; the
    earlier 16-bit multipliers differed on about 3 in 10^4)."""
    rng = np.random.default_rng(11)
    total = off = 0
    for _ in range(32):
        a_scale, b_scale = (float(np.float32(10 ** rng.uniform(-3, -1))) for _ in range(2))
        y_scale = float(np.float32(max(a_scale, b_scale) * 10 ** rng.uniform(0, 0.5)))
        a_zp, b_zp, y_zp = (int(v) for v in rng.integers(-128, 128, 3))
        a = _tensor(rng, (1, 8, 64, 128), 0.02)
        b = _tensor(rng, (1, 8, 64, 128), 0.02)
        got = nm.qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)
        ref = _ort_qlinear_add(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)
        diff = np.abs(got.astype(np.int64) - ref.astype(np.int64))
        assert diff.max() <= 1
        total, off = total + diff.size, off + int(np.count_nonzero(diff))
    print(f"QLinearAdd: {total - off}/{total} equal to onnxruntime ({off / total:.2e} off)")
    assert off <= 2e-5 * total


# --------------------------------------------------------------------------------------------
# Pooling


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 20),
       st.sampled_from([1, 2, 3, 3, 7]), st.sampled_from([1, 2, 3, 3, 7]),
       st.tuples(st.integers(1, 2), st.integers(1, 2)), st.tuples(*[st.integers(0, 3)] * 4),
       seeds, extremes)
def test_maxpool_matches_ort(h, w, c, kh, kw, stride, pad, seed, ext):
    pt, pl, pb, pr = pad
    pad = (min(pt, kh - 1), min(pl, kw - 1), min(pb, kh - 1), min(pr, kw - 1))
    h, w = max(h, kh - pad[0] - pad[2]), max(w, kw - pad[1] - pad[3])
    rng = np.random.default_rng(seed)
    x = _tensor(rng, (2, h, w, c), ext)
    got = nm.maxpool(x, (kh, kw), stride, pad)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[kh, kw], strides=list(stride),
                            pads=list(pad))
    ref = _to_nhwc(_ort(node, {"x": _to_nchw(x)}, {}))
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, ref)


def test_maxpool_padding_never_wins():
    x = np.full((1, 2, 2, 1), -100, dtype=np.int8)
    got = nm.maxpool(x, (3, 3), (2, 2), (1, 1, 1, 1))
    assert got.tolist() == [[[[-100]]]]
    x = np.full((1, 1, 1, 1), -128, dtype=np.int8)
    assert nm.maxpool(x, (3, 3), (1, 1), (1, 1, 1, 1)).tolist() == [[[[-128]]]]
    with pytest.raises(ValueError, match="padding"):
        nm.maxpool(x, (3, 3), (1, 1), (3, 0, 0, 0))


def test_global_avgpool_params_by_hand():
    bias, mult, shift = nm.global_avgpool_params(49, 0.1, 3, 0.05)
    assert bias == -147
    assert (mult, shift) == tuple(map(int, nm.quantize_multiplier(0.1 / (49 * 0.05))))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), scales,
       zero_points, zero_points, _log_uniform(1 / 8, 8.0), seeds, extremes)
def test_global_avgpool_matches_ort(n, h, w, c, x_scale, x_zp, y_zp, div, seed, ext):
    """com.microsoft.QLinearGlobalAveragePool with channels_last=1 (NHWC in and out).

    The mean of ``H * W`` integers is often exactly halfway between two integers (when
    ``y_scale == x_scale`` and ``H * W`` is even, say). There the result depends on which way the
    representation of ``1 / (H * W)`` is rounded (Q31 here, float32 in onnxruntime), so such
    elements may differ by 1 LSB; every other element must be exact.
    """
    rng = np.random.default_rng(seed)
    x = _tensor(rng, (n, h, w, c), ext)
    y_scale = float(np.float32(x_scale / div))
    got = nm.global_avgpool(x, x_scale, x_zp, y_scale, y_zp)
    assert got.dtype == np.int8 and got.shape == (n, 1, 1, c)
    got = got.reshape(n, c)
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "x_scale", "x_zp", "y_scale", "y_zp"],
                            ["y"], domain="com.microsoft", channels_last=1)
    inits = {"x_scale": _f32(x_scale), "x_zp": _i8(x_zp), "y_scale": _f32(y_scale),
             "y_zp": _i8(y_zp)}
    ref = _ort(node, {"x": x}, inits).reshape(n, c)
    # the exact real value before rounding, in rationals
    ratio = Fraction(x_scale) / (h * w * Fraction(y_scale))
    sums = x.astype(np.int64).sum(axis=(1, 2)) - h * w * x_zp
    real = np.array([[float(int(v) * ratio) for v in row] for row in sums])
    exact = np.clip(np.rint(real) + y_zp, -128, 127)
    near_tie = np.abs(np.abs(real - np.floor(real)) - 0.5) < 1e-4
    for other, name in ((ref, "onnxruntime"), (exact, "exact mean")):
        diff = np.abs(got.astype(np.int32) - other.astype(np.int32))
        assert diff.max() <= 1, f"global_avgpool vs {name}: {diff.max()} LSB"
        assert np.all((diff == 0) | near_tie), f"global_avgpool vs {name}: off away from a tie"


def test_global_avgpool_saturates():
    x = np.full((1, 2, 2, 3), 127, dtype=np.int8)
    assert nm.global_avgpool(x, 1.0, -128, 0.01, 0).tolist() == [[[[127, 127, 127]]]]
    x = np.full((1, 2, 2, 1), -128, dtype=np.int8)
    assert nm.global_avgpool(x, 1.0, 127, 0.01, 0).tolist() == [[[[-128]]]]

