"""Layer kernels on the golden model against the numerics golden functions, on every config.

The kernels turn a layer into commands (tiling, double buffering, tokens); the golden model
executes them; the result must equal the golden function of the operation bit for bit. Each run
also uses a random schedule, so a missing token would show up as a difference.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware import numerics
from firmware.golden import GoldenNpu
from firmware.kernels import KernelError, Requant, Residual, conv2d, global_avgpool, maxpool
from firmware.program import Program
from hdl.config import NpuConfig, shipped_configs

CONFIGS = {name: NpuConfig.load(name) for name in shipped_configs()}


def execute(prog, out, seed):
    npu = GoldenNpu(prog.config, prog.image_size, prog.base)
    prog.load_into(npu)
    r = npu.run(prog.prog_base, len(prog.commands), window=(prog.base, prog.base + prog.image_size),
                schedule=np.random.default_rng(seed))
    assert r.ok, r.message
    return npu.read(out.address, out.size).view(np.int8).reshape(out.shape), r


def quant_conv(rng, c, o, k):
    w = rng.integers(-128, 128, (o, k, k, c), dtype=np.int8)
    w[:, 0, 0, 0] = rng.choice([-128, 127], o)              # extremes
    x_scale, y_scale = 0.05, float(rng.uniform(0.2, 4.0))
    w_scale = rng.uniform(1e-3, 1e-2, o)
    bias = rng.integers(-20000, 20000, o).astype(np.int32)
    return w, x_scale, w_scale, bias, y_scale


def lower_conv(prog, x_zp, w, x_scale, w_scale, bias, y_scale, y_zp, lo, hi):
    mult, shift = numerics.requant_params(x_scale, w_scale, y_scale, w.shape[0])
    folded = numerics.wrap_int32(bias.astype(np.int64)
                                 - x_zp * w.astype(np.int64).sum(axis=(1, 2, 3)))
    return Requant(folded, mult, shift, y_zp, lo, hi)


conv_cases = st.fixed_dictionaries({
    "config": st.sampled_from(sorted(CONFIGS)),
    "h": st.integers(1, 12), "w": st.integers(1, 12),
    "c": st.integers(1, 36), "o": st.integers(1, 36),
    "k": st.sampled_from([1, 1, 3, 3, 5, 7]), "s": st.integers(1, 2),
    "x_zp": st.sampled_from([-128, -1, 0, 5, 127]), "y_zp": st.sampled_from([-128, 0, 17, 127]),
    "relu": st.booleans(), "seed": st.integers(0, 2**31),
})


@settings(max_examples=40, deadline=None)
@given(conv_cases)
def test_conv_matches_qlinear_conv(p):
    rng = np.random.default_rng(p["seed"])
    cfg, k = CONFIGS[p["config"]], p["k"]
    pad = (k // 2,) * 4
    h, w_ = max(p["h"], k - 2 * (k // 2)), max(p["w"], k - 2 * (k // 2))
    x = rng.integers(-128, 128, (1, h, w_, p["c"]), dtype=np.int8)
    w, xs, ws, bias, ys = quant_conv(rng, p["c"], p["o"], k)
    lo, hi = numerics.relu_bounds(p["y_zp"], p["relu"])
    want = numerics.qlinear_conv(x, xs, p["x_zp"], w, ws, bias, ys, p["y_zp"], (p["s"],) * 2,
                                 pad, lo, hi)
    prog = Program(cfg)
    xt = prog.tensor("x", h, w_, p["c"], x[0])
    yt = prog.tensor("y", want.shape[1], want.shape[2], p["o"])
    conv2d(prog, xt, p["x_zp"], w, lower_conv(prog, p["x_zp"], w, xs, ws, bias, ys, p["y_zp"],
                                              lo, hi), yt, (p["s"],) * 2, pad)
    prog.end()
    got, r = execute(prog, yt, p["seed"])
    np.testing.assert_array_equal(got, want)
    assert r.counters["macs"] >= want.size * k * k * p["c"]   # padded lanes make it larger


@pytest.mark.parametrize("config", ["tiny", "default"])
def test_conv_with_fused_residual_add_matches_qlinear_add(config):
    rng = np.random.default_rng(11)
    cfg = CONFIGS[config]
    x = rng.integers(-128, 128, (1, 9, 9, 24), dtype=np.int8)
    w, xs, ws, bias, ys = quant_conv(rng, 24, 20, 1)
    a_zp, r_zp, y_zp = 4, -9, -128
    res = rng.integers(-128, 128, (1, 9, 9, 20), dtype=np.int8)
    r_scale, y_scale = 0.7 * ys, 1.3 * ys
    a = numerics.qlinear_conv(x, xs, 2, w, ws, bias, ys, a_zp)
    lo, hi = numerics.relu_bounds(y_zp, True)
    want = numerics.qlinear_add(a, ys, a_zp, res, r_scale, r_zp, y_scale, y_zp, lo, hi)
    ma, mb, s = numerics.add_multipliers(ys, r_scale, y_scale)
    prog = Program(cfg)
    xt = prog.tensor("x", 9, 9, 24, x[0])
    rt = prog.tensor("res", 9, 9, 20, res[0])
    yt = prog.tensor("y", 9, 9, 20)
    conv2d(prog, xt, 2, w, lower_conv(prog, 2, w, xs, ws, bias, ys, a_zp, -128, 127), yt,
           residual=Residual(rt, r_zp, y_zp, ma, mb, s, lo, hi))
    prog.end()
    got, _ = execute(prog, yt, 3)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_fully_connected_as_1x1_conv(config):
    rng = np.random.default_rng(12)
    cfg = CONFIGS[config]
    x = rng.integers(-128, 128, (1, 70), dtype=np.int8)
    w = rng.integers(-128, 128, (70, 37), dtype=np.int8)
    bias = rng.integers(-5000, 5000, 37).astype(np.int32)
    ws = rng.uniform(1e-3, 1e-2, 37)
    want = numerics.fully_connected(x, 0.03, -3, w, ws, bias, 0.4, 6)
    w4 = w.T.reshape(37, 1, 1, 70)
    prog = Program(cfg)
    xt, yt = prog.tensor("x", 1, 1, 70, x), prog.tensor("y", 1, 1, 37)
    conv2d(prog, xt, -3, w4, lower_conv(prog, -3, w4, 0.03, ws, bias, 0.4, 6, -128, 127), yt)
    prog.end()
    got, _ = execute(prog, yt, 4)
    np.testing.assert_array_equal(got.reshape(1, 37), want)


@settings(max_examples=25, deadline=None)
@given(config=st.sampled_from(sorted(CONFIGS)), h=st.integers(1, 14), w=st.integers(1, 14),
       c=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_maxpool_matches_numerics(config, h, w, c, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
    want = numerics.maxpool(x, (3, 3), (2, 2), (1, 1, 1, 1))
    prog = Program(CONFIGS[config])
    xt = prog.tensor("x", h, w, c, x[0])
    yt = prog.tensor("y", want.shape[1], want.shape[2], c)
    maxpool(prog, xt, yt)
    prog.end()
    got, _ = execute(prog, yt, seed)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=25, deadline=None)
@given(config=st.sampled_from(sorted(CONFIGS)), h=st.integers(1, 16), w=st.integers(1, 16),
       c=st.integers(1, 40), x_zp=st.sampled_from([-128, 0, 9, 127]),
       y_zp=st.sampled_from([-128, 0, 127]), seed=st.integers(0, 2**31))
def test_global_avgpool_matches_numerics(config, h, w, c, x_zp, y_zp, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (1, h, w, c), dtype=np.int8)
    xs, ys = 0.05, float(rng.uniform(0.005, 0.1))
    want = numerics.global_avgpool(x, xs, x_zp, ys, y_zp)
    prog = Program(CONFIGS[config])
    xt, yt = prog.tensor("x", h, w, c, x[0]), prog.tensor("y", 1, 1, c)
    global_avgpool(prog, xt, xs, x_zp, ys, y_zp, yt)
    prog.end()
    got, _ = execute(prog, yt, seed)
    np.testing.assert_array_equal(got, want)


def test_tiny_config_tiles_channels_space_and_parameters():
    """On tiny, a 64-channel 3x3 conv must split input channels into groups, tile space, and
    reload parameters in chunks: the result is still exact."""
    cfg = CONFIGS["tiny"]
    rng = np.random.default_rng(13)
    x = rng.integers(-128, 128, (1, 12, 12, 64), dtype=np.int8)
    w, xs, ws, bias, ys = quant_conv(rng, 64, 24, 3)
    want = numerics.qlinear_conv(x, xs, 1, w, ws, bias, ys, 0, (1, 1), (1, 1, 1, 1))
    prog = Program(cfg)
    xt, yt = prog.tensor("x", 12, 12, 64, x[0]), prog.tensor("y", 12, 12, 24)
    conv2d(prog, xt, 1, w, lower_conv(prog, 1, w, xs, ws, bias, ys, 0, -128, 127), yt,
           pad=(1, 1, 1, 1))
    prog.end()
    assert 24 // cfg.cols * 3 > cfg.param_depth           # parameters come in chunks
    got, _ = execute(prog, yt, 5)
    np.testing.assert_array_equal(got, want)


def test_kernel_that_cannot_fit_names_the_layer():
    cfg = CONFIGS["tiny"]
    prog = Program(cfg)
    xt, yt = prog.tensor("x", 40, 40, 4), prog.tensor("y", 1, 1, 2)
    with pytest.raises(KernelError, match="bigconv"):
        conv2d(prog, xt, 0, np.zeros((2, 40, 40, 4), np.int8),
               Requant(np.zeros(2, np.int32), np.zeros(2), np.zeros(2), 0), yt, name="bigconv")
