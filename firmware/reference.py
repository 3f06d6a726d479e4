"""Independent references: single-node QLinear ONNX models run by onnxruntime.

These never share code with the golden functions they check; they only build the ONNX graph the
operation corresponds to and let onnxruntime compute it.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

__all__ = ["ort_session", "run_node", "ort_qlinear_conv"]


def ort_session(model, *, level=None, disabled=(), optimized_path=None):
    """An onnxruntime CPU session for ``model`` (a ModelProto, serialized bytes or a path) that
    computes int8 exactly on every x86 CPU.

    onnxruntime's default x86 kernels for uint8 x int8 products (QLinearConv, MatMulInteger and
    the QDQ convolutions it fuses into them) add pairs of products in 16 bits with saturation on
    CPUs without VNNI (SSE4.1, AVX2, AVX-512 without VNNI), so their results depend on the
    machine (up to 8 LSB on ResNet-18 here). ``session.x64quantprecision = 1`` makes it use the
    exact uint8 x uint8 kernels there; on VNNI CPUs it changes nothing. A model with explicit
    int8-activation QLinearConv or QGemm nodes is refused with that option (its weight rewrite
    leaves them without a kernel); those run on the int8 x int8 kernels, which are exact, so
    the session is then made without it.

    ``level``: a ``GraphOptimizationLevel`` (default: onnxruntime's); ``disabled``: optimizer
    names to leave out; ``optimized_path``: where to save the optimized graph.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = str(model)

    def session(precise):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if precise:
            options.add_session_config_entry("session.x64quantprecision", "1")
        if level is not None:
            options.graph_optimization_level = level
        if optimized_path is not None:
            options.optimized_model_filepath = str(optimized_path)
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled))

    try:
        return session(precise=True)
    except OrtNotImplemented:
        return session(precise=False)


def run_node(node, inputs, initializers, output_type=TensorProto.INT8, opset=21):
    """Run one ONNX node with onnxruntime. ``inputs``/``initializers``: name -> numpy array."""
    def info(name, arr):
        return helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(np.asarray(arr).dtype), np.asarray(arr).shape)

    graph = helper.make_graph(
        [node], "ref", [info(k, v) for k, v in inputs.items()],
        [helper.make_tensor_value_info(node.output[0], output_type, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                     helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    return ort_session(model).run(None, inputs)[0]


def ort_qlinear_conv(x, x_scale, x_zp, w, w_scale, bias, y_scale, y_zp, stride, pad):
    """onnxruntime's QLinearConv on NHWC int8 ``x`` and (O, KH, KW, C) int8 ``w`` with
    per-channel ``w_scale``; returns NHWC int8. ``pad`` is (top, left, bottom, right)."""
    o = w.shape[0]
    node = helper.make_node(
        "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
        strides=list(stride), pads=[pad[0], pad[1], pad[2], pad[3]],
        kernel_shape=list(w.shape[1:3]))
    inits = {
        "xs": np.float32(x_scale), "xz": np.int8(x_zp),
        "w": np.ascontiguousarray(w.transpose(0, 3, 1, 2)),
        "ws": np.asarray(w_scale, dtype=np.float32).reshape(o),
        "wz": np.zeros(o, dtype=np.int8),
        "ys": np.float32(y_scale), "yz": np.int8(y_zp),
        "b": np.asarray(bias, dtype=np.int32),
    }
    y = run_node(node, {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}, inits)
    return y.transpose(0, 2, 3, 1)
