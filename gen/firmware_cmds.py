"""``npugen compile``, ``npugen run`` and ``npugen quantize``: thin shells over firmware/.

Every user mistake becomes a :class:`gen.cli.UserError` (one line, exit status 2) and no partial
output file is left behind: outputs are written to a temporary file and renamed into place.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["add_compile_args", "add_run_args", "add_quantize_args", "cmd_compile", "cmd_run",
           "cmd_quantize"]


def _user_error(err):
    from .cli import UserError
    return UserError(str(err))


def _atomic_write(path: Path, write):
    """``write(tmp_path)``, then rename onto ``path``; nothing is left at ``path`` on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)               # mkstemp makes 0600; use the usual mode
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _need_file(path, what):
    p = Path(path)
    if not p.is_file():
        from .cli import UserError
        raise UserError(f"{path}: no such {what}")
    return p


# -- compile -------------------------------------------------------------------------------------


def add_compile_args(s):
    s.add_argument("model", help="quantised ONNX model (QDQ or QOperator)")
    s.add_argument("--memory-size", type=lambda v: int(v, 0), default=None,
                   help="bytes of memory from the window base, if larger than the config's "
                        "window (the driver sets WIN_LIMIT accordingly)")
    s.add_argument("--quiet", "-q", action="store_true", help="do not print the layer table")
    s.set_defaults(output=None)


def cmd_compile(args):
    import onnx

    from firmware import npubin
    from firmware.compiler import CompileError, compile_model, layer_csv, layer_table
    from firmware.kernels import KernelError
    from hdl.config import NpuConfig

    model = _need_file(args.model, "model file")
    out = Path(args.output) if args.output else model.with_suffix(".npubin")
    cfg = NpuConfig.load(args.config)
    try:
        proto = onnx.load(str(model))
    except Exception as e:   # noqa: BLE001 - onnx raises many kinds
        raise _user_error(f"{model}: not an ONNX model: {e}") from None
    t0 = time.perf_counter()
    try:
        prog = compile_model(proto, cfg, memory_size=args.memory_size)
    except (CompileError, KernelError, ValueError) as e:
        raise _user_error(f"{model}: {e}") from None
    elapsed = time.perf_counter() - t0
    csv_path = out.with_suffix(".csv")
    _atomic_write(csv_path, lambda p: p.write_text(layer_csv(prog)))
    try:
        npubin.save(prog, out)
    except BaseException:
        csv_path.unlink(missing_ok=True)
        raise
    if not args.quiet:
        print(layer_table(prog))
    m = prog.manifest
    act = m["memory"]["activations"]
    print(f"\ncompiled {model} for config {cfg.name!r} in {elapsed:.2f} s: "
          f"{prog.num_commands} commands, {prog.image_size / 2**20:.1f} MiB image "
          f"(activations {act['size'] / 2**10:.0f} KiB, {act['without_reuse'] / 2**10:.0f} KiB "
          f"without reuse)")
    print(f"wrote {out}\nwrote {csv_path}")


# -- run -----------------------------------------------------------------------------------------


def add_run_args(s):
    from firmware.driver import backends
    s.add_argument("program", help="a .npubin program")
    s.add_argument("--input", "-i", required=True,
                   help=".npy with the model's float input (its ONNX shape, NCHW)")
    s.add_argument("--backend", "-b", default="golden",
                   help=f"where to run it (available: {', '.join(backends())})")
    rtl = s.add_argument_group("rtl backend")
    rtl.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                     help="simulator of the rtl backend (default: verilator)")
    rtl.add_argument("--waves", action="store_true",
                     help="record waveforms (VCD on Verilator, FST on Icarus) in the build "
                          "directory")
    rtl.add_argument("--stall", type=int, default=0, metavar="PCT",
                     help="random backpressure: percent of cycles each memory channel stalls")
    rtl.add_argument("--layers", action="store_true",
                     help="print the measured cycles and MAC utilization of every layer")
    board = s.add_argument_group("board backend")
    board.add_argument("--port", help="the serial port of the board (/dev/ttyUSB0)")
    board.add_argument("--baud", type=int, default=1_000_000,
                       help="the bitstream's baud rate (default 1000000)")
    s.set_defaults(output=None, config=None)


def _backend(args):
    """The backend ``args`` ask for, with its options."""
    from firmware import driver
    if args.backend == "rtl":
        return driver.get_backend("rtl", simulator=args.sim, waves=args.waves, stall=args.stall)
    if args.backend == "board":
        return driver.get_backend("board", port=args.port, baud=args.baud)
    return driver.get_backend(args.backend)


def _rtl_summary(prog, backend, layers):
    from sim.rtl import layer_report
    run = backend.last[0]
    cfg = prog.config()
    rep = layer_report(prog, run)
    cycles = run.perf["CYCLES"]
    macs = sum(r["macs"] for r in rep)
    print(f"rtl ({backend.simulator}): {cycles:,} cycles ({run.wall_s:.1f} s simulated, "
          f"{cycles / max(run.wall_s, 1e-9):,.0f} cycles/s), MAC utilization "
          f"{macs / (cfg.macs * cycles):.1%}, {run.perf['BYTES_READ']:,} bytes read, "
          f"{run.perf['BYTES_WRITTEN']:,} written")
    if layers:
        w = max(len(r["layer"]) for r in rep)
        print(f"{'layer':<{w}}  {'MACs':>13}  {'cycles':>10}  {'predicted':>10}  {'util':>6}")
        for r in rep:
            print(f"{r['layer']:<{w}}  {r['macs']:>13,}  {r['cycles']:>10,}  "
                  f"{r['predicted_cycles']:>10,}  {r['utilization']:>6.1%}")
    if backend.waves:
        print(f"waveforms in {backend.build_dir}")


def cmd_run(args):
    from firmware import driver, npubin

    prog_path = _need_file(args.program, "program")
    in_path = _need_file(args.input, "input file")
    try:
        prog = npubin.load(prog_path, config=args.config)
    except (npubin.NpubinError, ValueError) as e:
        raise _user_error(e) from None
    try:
        x = np.load(in_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise _user_error(f"{in_path}: not a .npy array: {e}") from None
    t0 = time.perf_counter()
    try:
        backend = _backend(args)
        y = driver.run(prog, x, backend=backend)
    except driver.DriverError as e:
        raise _user_error(e) from None
    elapsed = time.perf_counter() - t0
    if args.output:
        out = Path(args.output)
        _atomic_write(out, lambda p: np.save(p, y))
        print(f"wrote {out}")
    flat = y.reshape(-1)
    print(f"ran {prog_path} on {args.backend} in {elapsed:.2f} s: output {list(y.shape)}, "
          f"top-1 index {int(flat.argmax())} ({float(flat.max()):.4g})")
    if args.backend == "rtl":
        _rtl_summary(prog, backend, args.layers)


# -- quantize ------------------------------------------------------------------------------------


def add_quantize_args(s):
    s.add_argument("model", help="float32 ONNX model")
    s.add_argument("--calib", required=True,
                   help="calibration data: a .npy of samples (N x input shape, or one sample), "
                        "or a directory of such .npy files")
    s.set_defaults(output=None)


def _calibration(path, shape):
    p = Path(path)
    files = sorted(p.glob("*.npy")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        from .cli import UserError
        raise UserError(f"{path}: no calibration .npy files")
    samples = []
    for f in files:
        try:
            a = np.load(f, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as e:
            raise _user_error(f"{f}: not a .npy array: {e}") from None
        one = tuple(shape[1:])
        if a.shape == one:
            samples.append(a)
        elif a.shape[1:] == one:
            samples.extend(a)
        elif a.shape == tuple(shape):
            samples.append(a[0])
        else:
            raise _user_error(f"{f}: shape {a.shape} does not match the model input {shape}")
    return np.stack(samples)


def cmd_quantize(args):
    import onnx

    from firmware.models import model_input_shape, quantize

    model = _need_file(args.model, "model file")
    out = Path(args.output) if args.output else model.with_suffix(".int8.onnx")
    try:
        proto = onnx.load(str(model))
    except Exception as e:   # noqa: BLE001
        raise _user_error(f"{model}: not an ONNX model: {e}") from None
    _, shape = model_input_shape(proto)
    calib = _calibration(args.calib, shape)
    try:
        _atomic_write(out, lambda p: quantize(proto, p, calib))
    except Exception as e:   # noqa: BLE001 - onnxruntime's quantizer raises many kinds
        raise _user_error(f"{model}: onnxruntime quantization failed: {e}") from None
    print(f"quantised {model} on {len(calib)} calibration samples (QDQ, per-channel int8 "
          f"weights, int8 activations)\nwrote {out}", file=sys.stdout)
