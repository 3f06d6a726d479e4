"""The compiler: a quantised ONNX model -> an :class:`~firmware.npubin.NpuProgram` for one
:class:`~hdl.config.NpuConfig`.

Stages, each a plain function from plain data to plain data::

    import_onnx (importer.py)  ONNX QDQ/QOperator model  -> Graph (NHWC int8 IR)
    lower       (lower.py)     Graph                     -> steps with integer parameters,
                                                             residual adds fused into convolutions
    allocate    (allocate.py)  steps                     -> activation offsets (liveness reuse)
    schedule    (schedule.py)  steps + offsets + config  -> commands (tiled, double-buffered,
                                                             tokens) + per-layer statistics
    package     (here)         program                   -> NpuProgram (image, commands, manifest)
"""

from __future__ import annotations

import csv
import io

from hdl.config import NpuConfig
from hdl.isa import ISA_VERSION

from ..npubin import NpuProgram
from .allocate import allocate
from .importer import SUPPORTED_OPS, import_onnx
from .ir import CompileError
from .lower import lower
from .schedule import schedule

__all__ = ["compile_model", "import_onnx", "lower", "allocate", "schedule", "package",
           "CompileError", "SUPPORTED_OPS", "layer_table", "layer_csv", "TABLE_COLUMNS"]

TABLE_COLUMNS = ("layer", "op", "macs", "ideal_cycles", "predicted_cycles", "bytes_moved",
                 "commands")


def package(prog, tensors, low, graph, alloc, config, memory_size=None) -> NpuProgram:
    """The program as an :class:`NpuProgram`: the image from ``base``, the commands, and the
    manifest. ``memory_size`` (bytes from the window base) overrides the configuration's window
    for memories larger than the one the configuration describes; the image must fit."""
    cfg = config
    image = prog.image()
    data_len = prog.prog_base - prog.base
    limit_size = cfg.window_size if memory_size is None else int(memory_size)
    if prog.image_size > limit_size or prog.base + limit_size > 1 << 32:
        raise CompileError(None, None, _too_big(prog.image_size, cfg, limit_size))

    def tensor_info(name, onnx_name, onnx_shape, pad=(0, 0, 0, 0)):
        q, t = low.tensors[name], tensors[name]
        return {"name": onnx_name, "address": t.address, "nhwc": [1, q.h, q.w, q.c],
                "onnx_shape": list(onnx_shape), "scale": q.scale, "zero_point": q.zp,
                "dtype": "int8", "size": q.size, "pad": list(pad),
                "stored_nhwc": [1, q.h + pad[0] + pad[2], q.w + pad[1] + pad[3], q.c]}

    rows = [s.row(cfg) for s in prog.layers]
    manifest = {
        "format": "npubin",
        "isa_version": list(ISA_VERSION),
        "config": {"name": cfg.name, "fingerprint": cfg.fingerprint(), "dict": cfg.to_dict()},
        "model": graph.source,
        "memory": {"base": prog.base, "prog_base": prog.prog_base,
                   "image_size": prog.image_size, "window_base": prog.base,
                   "window_limit": prog.base + limit_size - 1,
                   "activations": {"address": prog.address("activations"), "size": alloc.size,
                                   "without_reuse": alloc.naive}},
        "input": tensor_info(low.input, graph.input_name, graph.input_shape, low.input_pad),
        "output": tensor_info(low.output, graph.output_name, graph.output_shape),
        "layers": rows,
        "totals": {k: sum(r[k] for r in rows) for k in TABLE_COLUMNS[2:]},
    }
    return NpuProgram(manifest, image[:data_len].tobytes(), image[data_len:].tobytes())


def _too_big(need, cfg, limit, least=""):
    return (f"the program needs {least}{need} bytes of memory, but config {cfg.name!r} has a "
            f"{limit}-byte window (memory.window_size); compile for a larger memory with "
            f"--memory-size")


def compile_model(model, config, memory_size=None) -> NpuProgram:
    """Compile a quantised ONNX model (path or ``ModelProto``) for ``config`` (name, path or
    :class:`NpuConfig`)."""
    cfg = NpuConfig.load(config)
    graph = import_onnx(model)
    low = lower(graph, cfg.rows)
    alloc = allocate(low)
    limit = cfg.window_size if memory_size is None else int(memory_size)
    least = alloc.size + sum(s.w.nbytes for s in low.steps if hasattr(s, "w"))
    if least > limit:                 # fail before scheduling: weights alone do not fit
        raise CompileError(None, None, _too_big(least, cfg, limit, "at least "))
    prog, tensors = schedule(low, alloc, cfg)
    return package(prog, tensors, low, graph, alloc, cfg, memory_size)


def layer_table(program: NpuProgram) -> str:
    """The per-layer table as aligned text, with a totals row."""
    rows = program.manifest["layers"]
    tot = program.manifest["totals"]
    head = ("layer", "op", "MACs", "ideal cycles", "predicted cycles", "bytes moved",
            "commands")
    body = [(r["layer"], r["op"], f"{r['macs']:,}", f"{r['ideal_cycles']:,}",
             f"{r['predicted_cycles']:,}", f"{r['bytes_moved']:,}", f"{r['commands']:,}")
            for r in rows]
    body.append(("total", "", f"{tot['macs']:,}", f"{tot['ideal_cycles']:,}",
                 f"{tot['predicted_cycles']:,}", f"{tot['bytes_moved']:,}",
                 f"{tot['commands']:,}"))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                              for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(head), "  ".join("-" * w for w in widths)] + [fmt(b) for b in body]
    return "\n".join(lines)


def layer_csv(program: NpuProgram) -> str:
    """The per-layer table as CSV (one row per layer, the columns of :data:`TABLE_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TABLE_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in program.manifest["layers"]:
        w.writerow({k: r[k] for k in TABLE_COLUMNS})
    return buf.getvalue()
