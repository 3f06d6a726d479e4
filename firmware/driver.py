"""The host driver: run a compiled program on a backend, float in and float out.

::

    from firmware import driver, npubin
    prog = npubin.load("model.npubin")
    y = driver.run(prog, x)                    # x: the ONNX model's float input (NCHW)

The driver quantises the input with the model's input scale and zero point (round half to even
and saturation, as ONNX ``QuantizeLinear``, in float32), converts NCHW to NHWC, lets the backend
execute the program, reads the int8 output and dequantises it (``(q - zp) * scale`` in float32,
as ``DequantizeLinear``), back in the ONNX output's layout.

Backends are pluggable: a backend is any object with
``execute(program, writes, reads) -> list of bytes``, where ``writes`` are ``(address, bytes)``
to put in memory after the program image and ``reads`` are ``(address, size)`` to read back
after the program has finished. ``golden`` (the numpy model) is built in; the RTL and board
backends register theirs with :func:`register_backend`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .golden import GoldenNpu
from .npubin import NpuProgram

__all__ = ["run", "run_int8", "run_batch", "run_int8_batch", "quantize_input",
           "dequantize_output", "register_backend", "backends", "get_backend", "GoldenBackend",
           "DriverError"]


class DriverError(RuntimeError):
    """The program could not be run (bad input, unknown backend, NPU error)."""


class GoldenBackend:
    """The bit-exact numpy golden model (:class:`firmware.golden.GoldenNpu`).

    Parameters
    ----------
    schedule : numpy.random.Generator or None
        Passed to :meth:`GoldenNpu.run`: None runs the oldest ready command, a generator a
        random one (any token-correct program gives the same result).
    """

    name = "golden"

    def __init__(self, schedule=None):
        self.schedule = schedule
        self.last_result = None

    def execute(self, program: NpuProgram, writes, reads):
        cfg = program.config()
        npu = GoldenNpu(cfg, program.image_size, program.base)
        npu.write(program.base, program.image())
        for addr, raw in writes:
            npu.write(addr, raw)
        result = npu.run(program.prog_base, program.num_commands, window=program.window,
                         schedule=self.schedule)
        self.last_result = result
        if not result.ok:
            raise DriverError(f"golden backend: the NPU stopped: {result.message}")
        return [npu.read(a, n).tobytes() for a, n in reads]


_BACKENDS: dict[str, Callable] = {"golden": GoldenBackend}

#: Backends imported when first asked for (they pull in simulators or serial ports).
_LAZY = {"rtl": ("sim.rtl", "RtlBackend"), "board": ("firmware.board", "BoardBackend")}


def register_backend(name: str, factory: Callable) -> None:
    """Make ``factory(**options)`` available as ``backend=name``."""
    _BACKENDS[name] = factory


def backends() -> list[str]:
    return sorted(set(_BACKENDS) | set(_LAZY))


def get_backend(backend, **options):
    """A backend object: ``backend`` itself if it is one, else the backend registered under that
    name, made with ``options``."""
    if isinstance(backend, str):
        if backend not in _BACKENDS and backend in _LAZY:
            import importlib
            module, attr = _LAZY[backend]
            try:
                _BACKENDS[backend] = getattr(importlib.import_module(module), attr)
            except ImportError as err:
                raise DriverError(f"backend {backend!r} is not available: {err}") from None
        if backend not in _BACKENDS:
            raise DriverError(f"unknown backend {backend!r} (available: {', '.join(backends())})")
        return _BACKENDS[backend](**options)
    if options:
        raise DriverError("options are given to a backend by name only")
    return backend


def quantize_input(program: NpuProgram, x) -> np.ndarray:
    """The float input (the ONNX input's shape, NCHW) as int8 NHWC, as QuantizeLinear does."""
    info = program.manifest["input"]
    x = np.asarray(x, dtype=np.float32)
    want = tuple(info["onnx_shape"])
    if x.shape != want:
        if x.size == int(np.prod(want)) and x.ndim == len(want) - 1:
            x = x.reshape(want)
        else:
            raise DriverError(f"input {info['name']!r} must have shape {want}, not {x.shape}")
    q = np.rint(x / np.float32(info["scale"])) + np.float32(info["zero_point"])
    q = np.clip(q, -128, 127).astype(np.int8)
    if q.ndim == 4:
        q = q.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(q)


def dequantize_output(program: NpuProgram, q) -> np.ndarray:
    """int8 NHWC output -> float32 in the ONNX output's shape, as DequantizeLinear does."""
    info = program.manifest["output"]
    shape = tuple(info["onnx_shape"])
    q = np.asarray(q, dtype=np.int8).reshape(info["nhwc"])
    if len(shape) == 4:
        q = q.transpose(0, 3, 1, 2)
    y = (q.astype(np.int32) - info["zero_point"]).astype(np.float32) * np.float32(info["scale"])
    return y.reshape(shape)


def run_int8(program: NpuProgram, x_q, backend="golden") -> np.ndarray:
    """Run on an int8 NHWC input; returns the int8 NHWC output."""
    out = program.manifest["output"]
    raw = get_backend(backend).execute(program, _input_writes(program, x_q),
                                       [(out["address"], out["size"])])[0]
    return np.frombuffer(raw, dtype=np.int8).reshape(out["nhwc"])


def _input_writes(program, x_q):
    inp = program.manifest["input"]
    x_q = np.asarray(x_q, dtype=np.int8)
    if x_q.size != inp["size"]:
        raise DriverError(f"int8 input must have {inp['size']} elements, not {x_q.size}")
    # The program may want the input stored with a border of its zero point (a packed stem).
    pt, pl, pb, pr = inp.get("pad", (0, 0, 0, 0))
    x_q = np.pad(x_q.reshape(inp["nhwc"]), ((0, 0), (pt, pb), (pl, pr), (0, 0)),
                 constant_values=inp["zero_point"])
    return [(inp["address"], x_q.tobytes())]


def run_int8_batch(program: NpuProgram, xs_q, backend="golden") -> list[np.ndarray]:
    """:func:`run_int8` over several inputs; a backend with ``execute_batch`` (the RTL one)
    runs them all in one session."""
    out = program.manifest["output"]
    reads = [(out["address"], out["size"])]
    be = get_backend(backend)
    batch = [_input_writes(program, x) for x in xs_q]
    if hasattr(be, "execute_batch"):
        raws = [r[0] for r in be.execute_batch(program, batch, reads)]
    else:
        raws = [be.execute(program, writes, reads)[0] for writes in batch]
    return [np.frombuffer(r, dtype=np.int8).reshape(out["nhwc"]) for r in raws]


def run_batch(program: NpuProgram, xs, backend="golden", config=None) -> np.ndarray:
    """:func:`run` over a sequence of float inputs; returns the outputs stacked."""
    if config is not None:
        program.check_config(config)
    qs = [quantize_input(program, x) for x in xs]
    return np.stack([dequantize_output(program, y)
                     for y in run_int8_batch(program, qs, backend)])


def run(program: NpuProgram, x, backend="golden", config=None) -> np.ndarray:
    """Run ``program`` on the float input ``x`` and return the float output.

    ``config``, when given, is the configuration of the NPU at hand: a program compiled for
    another one is refused (:class:`firmware.npubin.NpubinError`).
    """
    if config is not None:
        program.check_config(config)
    return dequantize_output(program, run_int8(program, quantize_input(program, x), backend))
