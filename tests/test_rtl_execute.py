"""cocotb tests of the compute datapath (sim/tb_execute.py) on Verilator and Icarus.

Each test builds a case with the ISA encoder (tiles laid out as firmware.kernels lays them out),
runs it through firmware.golden.GoldenNpu with the same buffer contents, and has the testbench
check the RTL's ACC and post-processed rows against the golden results bit for bit.
"""

import json

import numpy as np
import pytest

from firmware import numerics
from firmware.golden import GoldenNpu
from hdl.config import NpuConfig
from hdl.exec_top import ExecTop, pp_request_layout
from hdl.isa import Buffer, Opcode, PoolMode, encode
from sim import runner

CONFIG = NpuConfig.load("small")
SIMULATORS = [
    pytest.param("verilator", id="verilator"),
    pytest.param("icarus", id="icarus", marks=pytest.mark.skipif(
        runner.simulator_available("icarus") is not None,
        reason=f"Icarus: {runner.simulator_available('icarus')}")),
]


def _golden(cfg, buffers, cmds):
    npu = GoldenNpu(cfg, 1 << 16)
    for k, v in buffers.items():
        npu.buffers[k][:] = v
    raw = b"".join(encode(op, **f) for op, f in cmds) + encode(Opcode.END)
    npu.write(0x8000, raw)
    result = npu.run(0x8000, len(cmds) + 1)
    assert result.ok, result.message
    return npu


def _pp_expect(cfg, acc, param, setpp, reqs, residual, use):
    out = []
    for (a, p), r, u in zip(reqs, residual, use):
        v = numerics.wrap_int32(acc[a].astype(np.int64) + param[p])
        y = numerics.requantize(v, param[p + 1], param[p + 2] & 63, setpp["zp"], setpp["lo"],
                                setpp["hi"])
        if u:
            y = numerics.add(y, setpp["zp"], r, setpp["res_zp"], setpp["add_ma"],
                             setpp["add_mb"], setpp["add_shift"], setpp["add_zp"],
                             setpp["add_lo"], setpp["add_hi"])
        out.append(y.astype(np.int64))
    return np.array(out)


def _run_case(tmp_path, simulator, cfg, buffers, cmds, pp=None, seed=1, p_idle=0.2):
    npu = _golden(cfg, buffers, cmds)
    case = {
        "seed": seed, "cols": cfg.cols, "p_idle": p_idle,
        "acc_latency": ExecTop.acc_read_latency(cfg),
        "input": buffers[Buffer.INPUT], "weight": buffers[Buffer.WEIGHT],
        "acc": buffers[Buffer.ACC], "param": buffers[Buffer.PARAM],
        "cmds": np.array([list(encode(op, **f)) for op, f in cmds], dtype=np.uint8),
        "expect_acc": npu.buffers[Buffer.ACC],
        "pp_reqs": np.zeros((0, 2), dtype=np.int64),
    }
    if pp is not None:
        setpp, reqs, residual, use = pp
        layout = pp_request_layout(cfg)
        case.update(
            pp_config=np.frombuffer(encode(Opcode.SETPP, **setpp), dtype=np.uint8),
            pp_reqs=np.array(reqs), pp_residual=residual, pp_use=np.array(use),
            pp_offsets=np.array([layout[k].offset for k in ("acc_addr", "param_addr",
                                                             "residual", "use_residual")]),
            expect_pp=_pp_expect(cfg, npu.buffers[Buffer.ACC], buffers[Buffer.PARAM], setpp,
                                 reqs, residual, use))
    path, result = tmp_path / "case.npz", tmp_path / "result.json"
    np.savez(path, **case)
    tests, failed = runner.run(cfg, "tb_execute", simulator, top="npu_datapath", extra_env={
        "NPU_TB_CASE": str(path), "NPU_TB_RESULT": str(result)})
    assert (tests, failed) == (1, 0), f"{simulator}: testbench failed, see build/sim/*/*.log"
    return npu, json.loads(result.read_text())


def _empty(cfg):
    return {Buffer.INPUT: np.zeros((cfg.input_depth, cfg.rows), np.int8),
            Buffer.WEIGHT: np.zeros((cfg.weight_depth, cfg.cols), np.int8),
            Buffer.ACC: np.zeros((cfg.acc_depth, cfg.cols), np.int32),
            Buffer.PARAM: np.zeros((cfg.param_depth, cfg.cols), np.int32)}


def _pp_params(rng, cfg, buffers, groups):
    """Random PARAM rows for ``groups`` channel groups, a SETPP and its requests."""
    for g in range(groups):
        buffers[Buffer.PARAM][3 * g] = rng.integers(-5000, 5000, cfg.cols)
        buffers[Buffer.PARAM][3 * g + 1] = rng.integers(1 << 30, 1 << 31, cfg.cols)
        buffers[Buffer.PARAM][3 * g + 2] = rng.integers(30, 48, cfg.cols)
    setpp = dict(param_addr=0, zp=-5, lo=-128, hi=127, res_zp=3, add_zp=-1, add_lo=-128,
                 add_hi=127, add_ma=1_966_080_123, add_mb=1_376_256_077, add_shift=31)
    return setpp


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_matmul_tile(tmp_path, simulator):
    """x (20 x 36) @ w (36 x 12): three reduction tiles of one COMPUTE, then requantisation with
    and without the residual stage."""
    cfg, rng = CONFIG, np.random.default_rng(11)
    rows, cols = cfg.rows, cfg.cols
    n, tiles = 20, 3
    x = rng.integers(-128, 128, (n, tiles * rows))
    w = rng.integers(-128, 128, (tiles * rows, cols))
    x[0, :] = -128
    w[:, 0] = -128
    buffers = _empty(cfg)
    for t in range(tiles):      # input row (t, i) at t*n + i: tile-major, as in_kx_stride = n
        buffers[Buffer.INPUT][t * n:(t + 1) * n] = x[:, t * rows:(t + 1) * rows]
    buffers[Buffer.WEIGHT][:tiles * rows] = w
    cmd = (Opcode.COMPUTE, dict(wgt_addr=0, in_addr=0, acc_addr=100, x_size=n, y_size=1,
                                in_x_stride=1, acc_x_stride=1, kx_size=tiles, ky_size=1,
                                kz_size=1, in_kx_stride=n))
    setpp = _pp_params(rng, cfg, buffers, 1)
    reqs = [(100 + i, 0) for i in range(n)]
    residual = rng.integers(-128, 128, (n, cols))
    use = [i % 2 for i in range(n)]
    npu, res = _run_case(tmp_path, simulator, cfg, buffers, [cmd],
                         pp=(setpp, reqs, residual, use))
    # The golden model itself agrees with the numerics golden function.
    ref = numerics.matmul(x, 0, w, np.zeros(cols, np.int32))
    assert np.array_equal(npu.buffers[Buffer.ACC][100:100 + n], ref)
    assert res["mac"] == n * tiles and res["done"] == 1 and res["pp_rows"] == n


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_conv_tile_and_maxpool(tmp_path, simulator):
    """A 3x3 convolution tile over 24 channels (two channel blocks) as one COMPUTE, laid out as
    firmware.kernels.conv2d lays it out, then a 3x3 stride-2 max pool and a 3x3 stride-2 sum
    pool of the same input (a window's rows, one after the other into one ACC row: each
    update takes the one before it, forwarded)."""
    cfg, rng = CONFIG, np.random.default_rng(12)
    rows, cols = cfg.rows, cfg.cols
    oh, ow, kh, kw, nkb = 4, 5, 3, 3, 2
    ih, iw = oh + kh - 1, ow + kw - 1
    x = rng.integers(-128, 128, (ih, iw, nkb * rows))
    w = rng.integers(-128, 128, (cols, kh, kw, nkb * rows))
    buffers = _empty(cfg)
    in_base, acc_base = 64, 200
    for kb in range(nkb):       # block-major input rows: (kb, iy, ix)
        blk = x[:, :, kb * rows:(kb + 1) * rows].reshape(ih * iw, rows)
        buffers[Buffer.INPUT][in_base + kb * ih * iw:in_base + (kb + 1) * ih * iw] = blk
    # weight tiles (kb, ky, kx), each rows x cols: W[t*rows + k][o] = w[o, ky, kx, kb*rows + k]
    wt = w.reshape(cols, kh, kw, nkb, rows).transpose(3, 1, 2, 4, 0).reshape(-1, cols)
    buffers[Buffer.WEIGHT][:wt.shape[0]] = wt
    buffers[Buffer.ACC][:] = rng.integers(-1000, 1000, buffers[Buffer.ACC].shape)
    conv = (Opcode.COMPUTE, dict(
        accumulate=0, wgt_addr=0, in_addr=in_base, acc_addr=acc_base, y_size=oh, x_size=ow,
        in_y_stride=iw, in_x_stride=1, acc_y_stride=ow, acc_x_stride=1, kz_size=nkb,
        ky_size=kh, kx_size=kw, in_kz_stride=ih * iw, in_ky_stride=iw, in_kx_stride=1))
    ph, pw = (ih - 3) // 2 + 1, (iw - 3) // 2 + 1
    pool = (Opcode.POOL, dict(
        mode=PoolMode.MAX, accumulate=0, win_w=3, win_h=3, in_addr=in_base, acc_addr=400,
        y_size=ph, x_size=pw, in_y_stride=2 * iw, in_x_stride=2, win_y_stride=iw,
        win_x_stride=1, acc_y_stride=pw, acc_x_stride=1))
    pool_sum = (Opcode.POOL, dict(
        mode=PoolMode.SUM, accumulate=0, win_w=3, win_h=3, in_addr=in_base, acc_addr=500,
        y_size=ph, x_size=pw, in_y_stride=2 * iw, in_x_stride=2, win_y_stride=iw,
        win_x_stride=1, acc_y_stride=pw, acc_x_stride=1))
    setpp = _pp_params(rng, cfg, buffers, 1)
    reqs = [(acc_base + i, 0) for i in range(oh * ow)]
    residual = rng.integers(-128, 128, (oh * ow, cols))
    npu, res = _run_case(tmp_path, simulator, cfg, buffers, [conv, pool, pool_sum],
                         pp=(setpp, reqs, residual, [1] * (oh * ow)), seed=2)
    ref = numerics.conv2d(x[None], 0, w, np.zeros(cols, np.int32))[0].reshape(oh * ow, cols)
    assert np.array_equal(npu.buffers[Buffer.ACC][acc_base:acc_base + oh * ow], ref)
    ref_pool = numerics.maxpool(x[None, :, :, :rows].astype(np.int8), (3, 3), (2, 2),
                                (0, 0, 0, 0))[0].reshape(ph * pw, rows)
    assert np.array_equal(npu.buffers[Buffer.ACC][400:400 + ph * pw, :rows], ref_pool)
    xs = x[:, :, :rows].astype(np.int64)
    ref_sum = np.array([[xs[2 * i:2 * i + 3, 2 * j:2 * j + 3].sum(axis=(0, 1))
                         for j in range(pw)] for i in range(ph)]).reshape(ph * pw, rows)
    assert np.array_equal(npu.buffers[Buffer.ACC][500:500 + ph * pw, :rows], ref_sum)
    assert res["mac"] == oh * ow * nkb * kh * kw and res["done"] == 3


def test_accumulator_forwarding_at_every_distance(tmp_path):
    """Rows into the same ACC row 1 to 6 rows apart, back to back: POOLs of 1 x 1 (and 2 x 1)
    windows over ``d`` columns whose y steps come back to the same ACC rows (``acc_y_stride``
    0), as SUM and MAX accumulating into what is there, and as MAX starting each window
    afresh. Each distance takes the old row from a different place in the read-modify-write
    (the read itself, or a row forwarded from one of the stages after it)."""
    cfg, rng = CONFIG, np.random.default_rng(13)
    buffers = _empty(cfg)
    buffers[Buffer.INPUT][:] = rng.integers(-128, 128, buffers[Buffer.INPUT].shape)
    buffers[Buffer.ACC][:] = rng.integers(-1000, 1000, buffers[Buffer.ACC].shape)
    cmds, acc = [], 16
    for d in range(1, 7):
        for mode, accumulate, win_w in ((PoolMode.SUM, 1, 1), (PoolMode.MAX, 1, 1),
                                        (PoolMode.MAX, 0, 2)):
            cmds.append((Opcode.POOL, dict(
                mode=mode, accumulate=accumulate, win_w=win_w, win_h=1,
                in_addr=int(rng.integers(0, 64)), acc_addr=acc, y_size=5, x_size=d,
                in_y_stride=7, in_x_stride=3, win_y_stride=1, win_x_stride=1,
                acc_y_stride=0, acc_x_stride=1)))
            acc += d
    _, res = _run_case(tmp_path, "verilator", cfg, buffers, cmds, seed=3, p_idle=0)
    assert res["done"] == len(cmds)


def test_long_matmul_utilization(tmp_path):
    """K = 1024 (86 tiles of 12) over 16 vectors per tile, one COMPUTE: MAC-active cycles are at
    least 95% of the cycles from the first vector into the array to the last ACC write."""
    cfg, rng = CONFIG, np.random.default_rng(13)
    rows, cols = cfg.rows, cfg.cols
    n, tiles = 16, -(-1024 // cfg.rows)
    buffers = _empty(cfg)
    buffers[Buffer.INPUT][:n * tiles] = rng.integers(-128, 128, (n * tiles, rows))
    buffers[Buffer.WEIGHT][:rows * tiles] = rng.integers(-128, 128, (rows * tiles, cols))
    cmd = (Opcode.COMPUTE, dict(wgt_addr=0, in_addr=0, acc_addr=0, x_size=n, y_size=1,
                                in_x_stride=1, acc_x_stride=1, kx_size=tiles, ky_size=1,
                                kz_size=1, in_kx_stride=n))
    _, res = _run_case(tmp_path, "verilator", cfg, buffers, [cmd], p_idle=0)
    total = res["last_done"] - res["first_mac"] + 1
    assert res["mac"] == n * tiles
    # fill and drain: one array latency (rows + cols, products registered, and for small's fast
    # clock the multipliers' operands) plus the input read and the accumulator update (five
    # stages for the fast clock: the two-cycle ACC read, the old row's register, the update's
    # two stages), less the cycle counted at both ends
    assert cfg.slices
    assert total == n * tiles + cfg.rows + cfg.cols + 6, total
    assert res["mac"] / total >= 0.95
