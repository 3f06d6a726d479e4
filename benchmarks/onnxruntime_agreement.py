"""End-to-end agreement with onnxruntime: ResNets compiled and run on the golden backend.

Usage: ``.venv/bin/python benchmarks/onnxruntime_agreement.py [--arch resnet18 resnet50]
[--size 32 224] [--images N] [--config default] [--seeds]``

For each architecture and input size: the seeded model of :mod:`firmware.models` (quantised by
onnxruntime's ``quantize_static``: 10 classes and 8 calibration images at sizes below 224, 1000
classes and 4 calibration images at 224, as the tests use), compiled for ``--config`` and run on
the golden backend for ``--images`` synthetic inputs (default 12 below 224, 4 at 224); each
int8 output is compared with onnxruntime's (CPUExecutionProvider, default optimisations) for
the same float input: the fraction of exactly equal logits, the largest difference in LSB, and
the top-1 class.

``--seeds`` also finds where the differences start. onnxruntime's optimised graph is saved and
run again with every intermediate tensor as an output (optimisations off, so the kernels are
the same); each layer of ours is then evaluated on onnxruntime's own int8 inputs, and every
element that differs is a seed. For each seed the layer, the kind of kernel onnxruntime ran it
with (``QLinearConv``, or a float ``Conv``/``Add`` between DequantizeLinear and QuantizeLinear)
and the distance of the exact real value from a rounding tie are recorded.

Results are printed and written to ``benchmarks/results/onnxruntime_agreement.json``.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from firmware import driver
from firmware.compiler import compile_model, import_onnx
from firmware.compiler.interpret import evaluate, real_before_rounding
from firmware.compiler.ir import Add
from firmware.models import quantized_resnet, synthetic_images
from firmware.reference import ort_session

RESULTS = Path(__file__).resolve().parent / "results" / "onnxruntime_agreement.json"


def _model(arch, size, integer=False):
    return quantized_resnet(arch, size, 1000, calib=4, dedicated=integer) if size >= 224 else \
        quantized_resnet(arch, size, 10, dedicated=integer)


#: onnxruntime optimisers left out with ``--integer-reference``: common-subexpression
#: elimination merges the dedicated DequantizeLinear nodes back into one with several consumers,
#: which no QDQ fusion accepts.
_INTEGER_DISABLED = ["CommonSubexpressionElimination"]


def _session(model, level=None, disabled=()):
    return ort_session(model, level=level, disabled=disabled)


def _ort_int8(sess, prog, x):
    y = sess.run(None, {prog.manifest["input"]["name"]: x})[0]
    o = prog.manifest["output"]
    return (np.rint(y / np.float32(o["scale"])) + o["zero_point"]).astype(np.int64).reshape(-1)


class _OrtIntermediates:
    """onnxruntime's default execution of a model, with its int8 intermediate tensors.

    The optimised graph (fused QLinearConv nodes, int8 activations converted to uint8, layout
    transposes, float Conv/Add left between DQ and Q) is mapped back onto the IR tensors: a
    tensor keeps its name, or is the output of the fused node named after the IR op, or of the
    QuantizeLinear named after it.
    """

    def __init__(self, path, graph, disabled=()):
        with tempfile.TemporaryDirectory() as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            self.reference = ort_session(path, disabled=disabled, optimized_path=optimized)
            opt = onnx.load(optimized)
        producer = {out: n for n in opt.graph.node for out in n.output}
        inits = {i.name: i for i in opt.graph.initializer}
        quant = {n.name: n for n in opt.graph.node if n.op_type == "QuantizeLinear"}
        quantizes = {n.input[0]: n for n in quant.values()}
        self.names, self.kinds = {}, {}
        for op in graph.ops:
            q = quant.get(op.out.removesuffix("_Output"))
            name = op.out if op.out in producer else op.name if op.name in producer else \
                q.output[0] if q is not None else None
            if name is None:
                continue
            if name in quantizes:       # a float result (DQ -> op -> Q): the int8 is its Q's
                name = quantizes[name].output[0]
            node = producer[name]
            self.names[op.out] = name
            if node.op_type == "QuantizeLinear":
                src = producer.get(node.input[0])
                self.kinds[op.name] = f"float {src.op_type if src is not None else '?'}"
            else:
                self.kinds[op.name] = node.op_type
        for name in self.names.values():
            node = producer[name]
            zp = {"QuantizeLinear": 2, "QLinearConv": 7}.get(node.op_type)
            dtype = inits[node.input[zp]].data_type if zp is not None and \
                node.input[zp] in inits else TensorProto.INT8
            opt.graph.output.append(helper.make_tensor_value_info(name, dtype, None))
        self.session = _session(opt.SerializeToString(),
                                ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        self.graph = graph

    def run(self, x, x_q):
        """IR tensor name -> onnxruntime's int8 NHWC value, for float input ``x``."""
        outs = dict(zip([o.name for o in self.session.get_outputs()],
                        self.session.run(None, {"input": x}), strict=True))
        feed = {self.graph.input: x_q}
        for ours, theirs in self.names.items():
            v = outs[theirs].astype(np.int64) - (128 if outs[theirs].dtype == np.uint8 else 0)
            q = self.graph.tensors[ours]
            if v.ndim == 4 and v.shape[1:] == (q.c, q.h, q.w):
                v = v.transpose(0, 2, 3, 1)
            feed[ours] = v.reshape(1, q.h, q.w, q.c).astype(np.int8)
        return feed


def _seeds(ints, graph, x, x_q):
    feed = ints.run(x, x_q)
    out = []
    for op in graph.ops:
        if op.out not in feed or any(i not in feed for i in _inputs(op)):
            continue
        got = evaluate(op, graph.tensors, feed).astype(np.int64)
        want = feed[op.out].reshape(got.shape).astype(np.int64)
        diff = got != want
        if not diff.any():
            continue
        real = real_before_rounding(op, graph.tensors, feed)
        tie = None if real is None else np.abs(np.abs(real - np.floor(real)) - 0.5)[diff]
        out.append({"layer": op.name, "onnxruntime_kernel": ints.kinds.get(op.name),
                    "elements": int(diff.sum()),
                    "max_diff_lsb": int(np.abs(got - want).max()),
                    "max_distance_from_tie": None if tie is None else float(tie.max())})
    return out


def _inputs(op):
    return [op.a, op.b] if isinstance(op, Add) else [op.x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--size", nargs="+", type=int, default=[32, 224])
    ap.add_argument("--images", type=int, default=None, help="inputs per model")
    ap.add_argument("--config", default="default")
    ap.add_argument("--seeds", action="store_true", help="locate the first differences")
    ap.add_argument("--integer-reference", action="store_true",
                    help="quantise with DedicatedQDQPair and run onnxruntime without "
                         "common-subexpression elimination, so that it fuses every convolution "
                         "into QLinearConv")
    ap.add_argument("--output", default=None,
                    help=f"JSON results (default {RESULTS}, or its -integer variant)")
    args = ap.parse_args()
    disabled = _INTEGER_DISABLED if args.integer_reference else ()
    if args.output is None:
        args.output = str(RESULTS.with_stem(RESULTS.stem + "-integer")) \
            if args.integer_reference else str(RESULTS)

    results = []
    for arch in args.arch:
        for size in args.size:
            path = _model(arch, size, args.integer_reference)
            prog = compile_model(path, args.config, memory_size=1 << 28)
            sess = _session(str(path), disabled=disabled)
            graph = import_onnx(onnx.load(str(path)))
            ints = _OrtIntermediates(path, graph, disabled) if args.seeds else None
            images = args.images or (4 if size >= 224 else 12)
            for seed in range(images):
                x = synthetic_images(1, size, seed=seed)
                x_q = driver.quantize_input(prog, x)
                got = driver.run_int8(prog, x_q).astype(np.int64).reshape(-1)
                want = _ort_int8(sess, prog, x)
                diff = np.abs(got - want)
                row = {"arch": arch, "size": size, "image": seed,
                       "logits": int(diff.size),
                       "equal_fraction": float(np.mean(diff == 0)),
                       "within_1_lsb_fraction": float(np.mean(diff <= 1)),
                       "max_abs_diff_lsb": int(diff.max()), "top1": int(got.argmax()),
                       "top1_onnxruntime": int(want.argmax())}
                if ints is not None:
                    row["seeds"] = _seeds(ints, graph, x, x_q)
                results.append(row)
                print(f"{arch} {size}x{size} image {seed}: {row['equal_fraction']:.1%} equal, "
                      f"{row['within_1_lsb_fraction']:.1%} within 1 LSB, max "
                      f"{row['max_abs_diff_lsb']} LSB, top-1 {row['top1']} / "
                      f"{row['top1_onnxruntime']}", flush=True)
                for s in row.get("seeds", []):
                    print(f"    seed: {s['layer']} ({s['onnxruntime_kernel']}): "
                          f"{s['elements']} element(s), {s['max_distance_from_tie']:.1e} from "
                          f"a tie")
    dest = Path(args.output)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"benchmark": "onnxruntime_agreement", "config": args.config,
                                "integer_reference": args.integer_reference,
                                "onnxruntime": ort.__version__, "cpus": os.cpu_count(),
                                "runs": results}, indent=2) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
