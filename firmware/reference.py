"""Independent references: single-node QLinear ONNX models run by onnxruntime.

These never share code with the golden functions they check; they only build the ONNX graph the
operation corresponds to and let onnxruntime compute it.
"""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

__all__ = ["run_node", "ort_qlinear_conv"]


def run_node(node, inputs, initializers, output_type=TensorProto.INT8, opset=21):
    """Run one ONNX node with onnxruntime. ``inputs``/``initializers``: name -> numpy array."""
    import onnxruntime as ort

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
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)[0]


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
