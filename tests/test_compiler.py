"""The compiler end to end: ONNX ResNets -> programs for every shipped config -> golden model,
checked against the numerics golden functions (bit for bit) and onnxruntime (same QDQ model).

What is asserted, and why it is split this way:

- the program's int8 output equals, bit for bit, the graph evaluated layer by layer with the
  golden functions of :mod:`firmware.numerics` (:func:`interpret`): tiling, scheduling, tokens
  and memory reuse change nothing, on every config;
- every layer, fed onnxruntime's own int8 input, is within 1 LSB of onnxruntime's int8 output
  (the numerics contract of docs/numerics.md);
- the whole network gives the same top-1 class as onnxruntime, and ResNet-18 is within 1 LSB
  of it on every output element (on every config). ResNet-50 is not, on some images: wherever
  onnxruntime rounds in float32 (its float32 requantization, and the convolutions its CPU
  execution leaves in float, DQ -> Conv -> Q) a real value within about 2e-5 of a rounding tie
  can round the other way, and 50 layers amplify one such element to several LSB at the output
  (docs/compiler.md). :func:`test_resnet50_end_to_end_within_one_lsb` records this as a strict
  xfail; :func:`test_every_layer_within_one_lsb_of_onnxruntime` checks that layer by layer every
  difference is such a near-tie.
"""

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from firmware import driver, npubin
from firmware.compiler import CompileError, compile_model, import_onnx, layer_csv, layer_table
from firmware.compiler.allocate import allocate
from firmware.compiler.interpret import evaluate, interpret, real_before_rounding
from firmware.compiler.lower import lower
from firmware.models import quantized_resnet, synthetic_images
from firmware.reference import ort_session
from hdl.config import NpuConfig, shipped_configs

CONFIGS = shipped_configs()
ARCHS = ("resnet18", "resnet50")
SIZE = 32
BIG = 1 << 28          # tiny and small have 128/256 KiB windows: compile for a larger memory


@functools.cache
def model(arch, fmt="qdq", activations="int8"):
    return quantized_resnet(arch, SIZE, num_classes=10, fmt=fmt, activations=activations)


@functools.cache
def program(arch, config, fmt="qdq", activations="int8"):
    return compile_model(model(arch, fmt, activations), config, memory_size=BIG)


@functools.cache
def session(path):
    return ort_session(path)


def ort_int8(path, prog, x):
    """onnxruntime's output for float input ``x``, as the int8 values it dequantised."""
    y = session(path).run(None, {prog.manifest["input"]["name"]: x})[0]
    o = prog.manifest["output"]
    return (np.rint(y / np.float32(o["scale"])) + o["zero_point"]).astype(np.int64).reshape(-1)


def npu_int8(prog, x):
    return driver.run_int8(prog, driver.quantize_input(prog, x)).astype(np.int64).reshape(-1)


def image(seed):
    return synthetic_images(1, SIZE, seed=seed)


# -- whole networks --------------------------------------------------------------------------------


@functools.cache
def reference(arch, seed, fmt="qdq", activations="int8"):
    """(interpreted int8 output, onnxruntime int8 output) for image ``seed``."""
    prog = program(arch, "default", fmt, activations)
    x = image(seed)
    graph = import_onnx(model(arch, fmt, activations))
    vals = interpret(graph, driver.quantize_input(prog, x))
    return vals[graph.output].astype(np.int64).reshape(-1), ort_int8(model(arch, fmt, activations),
                                                                      prog, x)


#: (arch, config) pairs of the fast tests; ResNet-50 on tiny (4x2 array, 144k commands) is slow.
PAIRS = [(a, c) for a in ARCHS for c in CONFIGS if (a, c) != ("resnet50", "tiny")]


@pytest.mark.parametrize("arch,config", PAIRS + [
    pytest.param("resnet50", "tiny", marks=pytest.mark.slow)])
def test_network_on_golden_matches_numerics_and_onnxruntime_top1(arch, config):
    """Bit-exact with the golden functions (so identical on every config) and the same top-1 as
    onnxruntime, for several images on the default config."""
    seeds = {"resnet18": (0, 1, 2), "resnet50": (0, 1)}[arch] if config == "default" else (0,)
    prog = program(arch, config)
    assert prog.manifest["config"]["name"] == config
    for seed in seeds:
        got = npu_int8(prog, image(seed))
        spec, ort = reference(arch, seed)
        np.testing.assert_array_equal(got, spec)       # bit-exact with the golden functions
        diff = np.abs(got - ort)
        print(f"{arch} {config} image {seed}: {np.mean(diff == 0):.1%} equal to onnxruntime, "
              f"max |diff| {diff.max()} LSB, top-1 {got.argmax()} vs {ort.argmax()}")
        assert got.argmax() == ort.argmax()
        if arch == "resnet18":
            assert diff.max() <= 1


def test_random_schedule_gives_the_same_result():
    """Any order the token protocol allows (layers separated by barriers) gives the same
    memory: a missing dependency would show up as a difference."""
    prog = program("resnet18", "large")
    x_q = driver.quantize_input(prog, image(6))
    want = driver.run_int8(prog, x_q)
    for seed in (1, 2):
        backend = driver.GoldenBackend(schedule=np.random.default_rng(seed))
        np.testing.assert_array_equal(driver.run_int8(prog, x_q, backend=backend), want)


def test_resnet18_end_to_end_within_one_lsb():
    """Several images: every logit within 1 LSB of onnxruntime (measured: all equal)."""
    for seed in range(4):
        got, ort = reference("resnet18", seed)
        diff = np.abs(got - ort)
        print(f"resnet18 image {seed}: {np.mean(diff == 0):.1%} equal, max {diff.max()} LSB")
        assert diff.max() <= 1, f"image {seed}: {diff.max()} LSB from onnxruntime"


@pytest.mark.xfail(strict=True, reason="onnxruntime rounds some convolution outputs within 2e-5 "
                   "of a tie the other way (float32 requantization; convolutions it runs in "
                   "float); ResNet-50 amplifies one such element to 5 LSB on image 1")
def test_resnet50_end_to_end_within_one_lsb():
    got, ort = reference("resnet50", 1)
    assert np.abs(got - ort).max() <= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_every_layer_within_one_lsb_of_onnxruntime(arch):
    """Each layer, fed onnxruntime's own int8 input, against onnxruntime's int8 output: within
    1 LSB, and different only where the real value is within 1e-4 of a rounding tie (images 1
    and 3 of ResNet-50 have such elements). With every tensor a graph output, onnxruntime runs
    each convolution as DQ -> Conv (float32) -> Q and each add as QLinearAdd."""
    path = model(arch)
    m = onnx.load(str(path))
    graph = import_onnx(m)
    for op in graph.ops:
        m.graph.output.append(helper.make_tensor_value_info(op.out, TensorProto.INT8, None))
    sess = ort_session(m)
    prog = program(arch, "default")
    total = equal = 0
    for seed in (0, 1, 3):
        x = image(seed)
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
        feed = {graph.input: driver.quantize_input(prog, x)}
        for name, v in outs.items():
            if name in graph.tensors:
                feed[name] = v.transpose(0, 2, 3, 1) if v.ndim == 4 else v.reshape(1, 1, 1, -1)
        for op in graph.ops:
            got = evaluate(op, graph.tensors, feed)
            want = feed[op.out]
            diff = np.abs(got.astype(np.int64) - want.reshape(got.shape))
            assert diff.max() <= 1, f"{op.name}: {diff.max()} LSB from onnxruntime"
            total, equal = total + diff.size, equal + int(np.sum(diff == 0))
            if diff.any():
                real = real_before_rounding(op, graph.tensors, feed)
                assert real is not None, f"{op.name}: an exact operation differs"
                tie = np.abs(np.abs(real - np.floor(real)) - 0.5)
                assert tie[diff != 0].max() < 1e-4, f"{op.name}: differs away from a tie"
                print(f"{arch} image {seed} {op.name}: {int(np.sum(diff != 0))} near-tie "
                      f"element(s) differ, at most {tie[diff != 0].max():.1e} from the tie")
    print(f"{arch}: {equal}/{total} layer outputs equal to onnxruntime ({equal / total:.4%})")
    assert equal / total >= 0.9999


@pytest.mark.parametrize("fmt,activations", [("qop", "int8"), ("qdq", "uint8"),
                                             ("qop", "uint8")])
def test_qoperator_and_uint8_models(fmt, activations):
    prog = program("resnet18", "default", fmt, activations)
    got = npu_int8(prog, image(0))
    spec, ort = reference("resnet18", 0, fmt, activations)
    np.testing.assert_array_equal(got, spec)
    assert got.argmax() == ort.argmax()
    assert np.abs(got - ort).max() <= 3


def test_dedicated_qdq_pairs(tmp_path):
    """quantize_static with ``DedicatedQDQPair`` (one QuantizeLinear/DequantizeLinear pair per
    consumer) quantises exactly as without it: the compiled program gives the same output."""
    from firmware.models import float_resnet, quantize
    path = quantize(float_resnet("resnet18", SIZE, 10), tmp_path / "dedicated.onnx",
                    synthetic_images(8, SIZE, seed=1000),
                    extra_options={"DedicatedQDQPair": True})
    quant = onnx.load(str(path))
    produced = [n.input[0] for n in quant.graph.node if n.op_type == "QuantizeLinear"]
    assert len(produced) > len(set(produced)), "expected tensors quantised more than once"
    ded = compile_model(path, "default")
    for seed in (0, 1):
        np.testing.assert_array_equal(npu_int8(ded, image(seed)),
                                      npu_int8(program("resnet18", "default"), image(seed)))


# -- the program: allocation, table, npubin --------------------------------------------------------


def test_activation_memory_is_reused():
    low = lower(import_onnx(model("resnet50")))
    alloc = allocate(low)
    assert alloc.size < alloc.naive / 3
    # No two tensors live at the same time overlap.
    st = low.storage
    live_from = {st[low.input]: -1}
    live_to = {}
    for i, s in enumerate(low.steps):
        live_from.setdefault(st[s.out.name], i)
        for t in [s.x] + ([s.residual.tensor] if getattr(s, "residual", None) else []):
            live_to[st[t.name]] = i
    live_to[st[low.output]] = len(low.steps)
    roots = list(live_from)
    for i, a in enumerate(roots):
        for b in roots[i + 1:]:
            if live_from[a] <= live_to.get(b, live_from[b]) and \
                    live_from[b] <= live_to.get(a, live_from[a]):
                oa, ob = alloc.offsets[a], alloc.offsets[b]
                sa, sb = low.tensors[a].size, low.tensors[b].size
                assert oa + sa <= ob or ob + sb <= oa, f"{a} and {b} overlap while both live"


def test_layer_table_and_csv():
    prog = program("resnet50", "default")
    rows = prog.manifest["layers"]
    assert sum(r["macs"] for r in rows) == prog.manifest["totals"]["macs"]
    fused = [r for r in rows if r["op"] == "Conv+Add"]
    assert len(fused) == 16                         # every bottleneck's add is fused
    for r in rows:
        assert r["predicted_cycles"] >= r["ideal_cycles"]
    # The stem (7x7, 3 channels) is packed: 7 kernel columns x 3 channels share the lanes.
    steps = lower(import_onnx(model("resnet50")), 16).steps
    assert steps[0].pack == 7 and steps[0].w.shape == (64, 7, 1, 21)
    assert prog.manifest["input"]["pad"] == [3, 3, 3, 3]
    assert rows[0]["predicted_cycles"] < 2 * rows[0]["ideal_cycles"]
    text = layer_table(prog)
    assert "ideal cycles" in text and "layer1.0.conv3+layer1.0.add" in text
    csv = layer_csv(prog).splitlines()
    assert csv[0] == "layer,op,macs,ideal_cycles,predicted_cycles,bytes_moved,commands"
    assert len(csv) == len(rows) + 1


def test_npubin_round_trip(tmp_path):
    prog = program("resnet18", "small")
    path = npubin.save(prog, tmp_path / "r18.npubin")
    back = npubin.load(path, config="small")
    assert back.manifest == prog.manifest
    assert back.data == prog.data and back.commands == prog.commands
    x = image(4)
    np.testing.assert_array_equal(driver.run(back, x), driver.run(prog, x))


def test_npubin_refuses_another_config(tmp_path):
    path = npubin.save(program("resnet18", "small"), tmp_path / "r18.npubin")
    with pytest.raises(npubin.NpubinError, match="compiled for config 'small'.*config 'tiny'"):
        npubin.load(path, config="tiny")
    prog = npubin.load(path)
    with pytest.raises(npubin.NpubinError, match="recompile it with --config default"):
        driver.run(prog, image(0), config="default")


def test_npubin_rejects_damaged_files(tmp_path):
    raw = program("resnet18", "default").to_bytes()
    with pytest.raises(npubin.NpubinError, match="bad magic"):
        npubin.NpuProgram.from_bytes(b"XX" + raw[2:])
    with pytest.raises(npubin.NpubinError, match="truncated"):
        npubin.NpuProgram.from_bytes(raw[:-100])
    bad = bytearray(raw)
    bad[8] = 9                                       # format major version
    with pytest.raises(npubin.NpubinError, match="format 9"):
        npubin.NpuProgram.from_bytes(bytes(bad))


def test_driver_checks_input_shape_and_backend():
    prog = program("resnet18", "default")
    with pytest.raises(driver.DriverError, match="must have shape"):
        driver.run(prog, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(driver.DriverError, match="unknown backend 'fpga'.*golden"):
        driver.run(prog, image(0), backend="fpga")


def test_quantize_input_rounds_half_to_even_and_saturates():
    prog = program("resnet18", "default")
    info = prog.manifest["input"]
    s, zp = np.float32(info["scale"]), info["zero_point"]
    x = np.zeros(info["onnx_shape"], np.float32)
    x[0, 0, 0, :4] = [0.5 * s, 1.5 * s, 1000.0, -1000.0]
    q = driver.quantize_input(prog, x)
    assert list(q[0, 0, :4, 0]) == [zp + 0, zp + 2, 127, -128]


# -- what the compiler refuses ---------------------------------------------------------------------


def qdq_model(mid_nodes, inits=(), c=4, h=6, w=6, out_shape=None, x_zp=0):
    """input -> Q -> DQ ("x") -> ``mid_nodes`` (ending in float "y") -> Q -> DQ -> output."""
    f32 = lambda v: numpy_helper.from_array(np.asarray(v, np.float32))   # noqa: E731
    i8 = lambda v: numpy_helper.from_array(np.asarray(v, np.int8))       # noqa: E731

    def named(t, name):
        t.name = name
        return t

    base = [named(f32(0.05), "s"), named(i8(x_zp), "z"), named(f32(0.1), "ys"),
            named(i8(0), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq_in")]
    nodes += mid_nodes
    nodes += [helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"], name="q_out"),
              helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["output"],
                               name="dq_out")]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        base + list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def conv_nodes(o=4, c=4, k=3, w_zp=0, name="bad", **attrs):
    rng = np.random.default_rng(0)
    wq = numpy_helper.from_array(rng.integers(-127, 128, (o, c // attrs.get("group", 1), k, k),
                                              dtype=np.int8), "wq")
    ws = numpy_helper.from_array(np.full(o, 0.01, np.float32), "ws")
    wz = numpy_helper.from_array(np.full(o, w_zp, np.int8), "wz")
    attrs.setdefault("pads", [k // 2] * 4)
    nodes = [helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], name="dq_w",
                              axis=0),
             helper.make_node("Conv", ["x", "wf"], ["y"], name=name, kernel_shape=[k, k],
                              **attrs)]
    return nodes, [wq, ws, wz]


def refuse(m, pattern, config="default"):
    with pytest.raises(CompileError, match=pattern):
        compile_model(m, config)


def test_supported_single_conv_with_relu_and_clip_matches_onnxruntime():
    """Relu and Clip kept in the graph become the output clamp (numerics.relu/clip_bounds)."""
    for act, inits in [
            ("Relu", []),
            ("Clip", [numpy_helper.from_array(np.float32(0.0), "lo"),
                          numpy_helper.from_array(np.float32(0.6), "hi")])]:
        nodes, w_inits = conv_nodes(name="ok")
        nodes[-1].output[0] = "c"
        ins = ["c", "lo", "hi"] if act == "Clip" else ["c"]
        nodes.append(helper.make_node(act, ins, ["y"], name="act"))
        m = qdq_model(nodes, w_inits + inits, x_zp=-3)
        prog = compile_model(m, "tiny")
        x = np.random.default_rng(1).normal(0, 2, (1, 4, 6, 6)).astype(np.float32)
        sess = ort_session(m)
        want = sess.run(None, {"input": x})[0]
        got = driver.run(prog, x)
        assert np.abs(np.rint((got - want) / 0.1)).max() <= 1
        assert got.min() >= 0 and (act == "Relu" or got.max() <= 0.6 + 1e-6)


@pytest.mark.parametrize("act", ["Relu", "Clip"])
def test_standalone_relu_and_clip_match_onnxruntime(act):
    """DequantizeLinear -> Relu/Clip -> QuantizeLinear with its own output scale."""
    inits = [numpy_helper.from_array(np.float32(-0.3), "lo"),
             numpy_helper.from_array(np.float32(0.9), "hi")] if act == "Clip" else []
    ins = ["x", "lo", "hi"] if act == "Clip" else ["x"]
    m = qdq_model([helper.make_node(act, ins, ["y"], name="act")], inits, x_zp=7)
    prog = compile_model(m, "small")
    x = np.random.default_rng(2).normal(0, 3, (1, 4, 6, 6)).astype(np.float32)
    sess = ort_session(m)
    want = np.rint(sess.run(None, {"input": x})[0] / np.float32(0.1))
    got = np.rint(driver.run(prog, x) / np.float32(0.1))
    assert np.abs(got - want).max() <= 1          # scales 0.05 -> 0.1: exact ties, where
    assert np.mean(got == want) >= 0.95           # float32 may round either way
    assert got.min() >= (0 if act == "Relu" else -3)


def test_add_without_a_convolution_to_fuse_into():
    """Add(x, MaxPool(x)): no convolution input, so an identity 1x1 convolution carries it."""
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="mp", kernel_shape=[3, 3],
                              strides=[1, 1], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"], name="q_p"),
             helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pf"], name="dq_p"),
             helper.make_node("Add", ["x", "pf"], ["a"], name="plus"),
             helper.make_node("Relu", ["a"], ["y"], name="relu")]
    m = qdq_model(nodes, x_zp=-20)
    graph = import_onnx(m)
    steps = lower(graph).steps
    assert [s.op_type for s in steps] == ["MaxPool", "Add"] and steps[1].residual is not None
    x = np.random.default_rng(3).normal(0, 2.5, (1, 4, 6, 6)).astype(np.float32)
    for config in ("tiny", "default"):
        prog = compile_model(m, config)
        x_q = driver.quantize_input(prog, x)
        got = driver.run_int8(prog, x_q)
        np.testing.assert_array_equal(got, interpret(graph, x_q)[graph.output])
    sess = ort_session(m)
    want = np.rint(sess.run(None, {"input": x})[0] / np.float32(0.1))
    assert np.abs(np.rint(driver.run(prog, x) / np.float32(0.1)) - want).max() <= 1


@pytest.mark.parametrize("attrs,pattern", [
    ({"group": 2}, r"node 'bad' \(Conv\): group = 2; supported: group 1"),
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]},
     r"node 'bad' \(Conv\): dilations = \[2, 2\]; supported: dilation 1"),
    ({"auto_pad": "SAME_UPPER", "pads": None},
     r"node 'bad' \(Conv\): auto_pad = b'SAME_UPPER'; supported: explicit pads"),
])
def test_unsupported_conv_attributes_are_named(attrs, pattern):
    if attrs.get("pads", 0) is None:
        attrs = {k: v for k, v in attrs.items() if k != "pads"}
        nodes, inits = conv_nodes(**attrs)
        del nodes[-1].attribute[-1]                # drop the default pads
    else:
        nodes, inits = conv_nodes(**attrs)
    refuse(qdq_model(nodes, inits), pattern)


def test_asymmetric_weights_are_refused():
    nodes, inits = conv_nodes(w_zp=3)
    refuse(qdq_model(nodes, inits), r"node 'bad' \(Conv\): weights are asymmetric \(zero point "
                                    r"3\); supported: symmetric weights")


def test_unsupported_operator_is_named():
    refuse(qdq_model([helper.make_node("Sigmoid", ["x"], ["y"], name="sig")]),
           r"node 'sig' \(Sigmoid\): operator Sigmoid is not supported; supported: Conv, Gemm")


def test_float_model_is_refused():
    nodes, _ = conv_nodes()
    w = numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "wf")
    graph = helper.make_graph(
        [nodes[-1]], "float",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    refuse(m, r"node 'bad' \(Conv\): input 'x' is not a quantised activation")


def test_maxpool_ceil_mode_is_refused():
    refuse(qdq_model([helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[3, 3],
                                       strides=[2, 2], ceil_mode=1)]),
           r"node 'mp' \(MaxPool\): supported: MaxPool with ceil_mode 0")


def test_broadcasting_add_is_refused():
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="mp", kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["pq"], name="q_p"),
             helper.make_node("DequantizeLinear", ["pq", "s", "z"], ["pf"], name="dq_p"),
             helper.make_node("Add", ["x", "pf"], ["y"], name="plus")]
    refuse(qdq_model(nodes), r"node 'plus' \(Add\): inputs of shapes 6x6x4 and 3x3x4; "
                             r"supported: two activations of the same shape")


def test_float_output_is_refused():
    nodes, inits = conv_nodes()
    nodes.append(helper.make_node("Softmax", ["y"], ["sm"], name="soft"))
    m = qdq_model(nodes, inits)
    m.graph.node[-2].input[0] = "sm"
    refuse(m, r"node 'bad' \(Conv\): output feeds Softmax 'soft' before any QuantizeLinear")


def test_program_larger_than_the_window_is_refused():
    with pytest.raises(CompileError, match=r"needs (at least )?\d+ bytes of memory, but "
                                           r"config 'tiny' has a 131072-byte window"):
        compile_model(model("resnet18"), "tiny")


def test_config_object_and_name_compile_the_same():
    a = program("resnet18", "default")
    b = compile_model(model("resnet18"), NpuConfig.load("default"), memory_size=BIG)
    assert a.commands == b.commands and a.data == b.data


# -- the command line ------------------------------------------------------------------------------


def test_cli_compile_run_and_errors(tmp_path, capsys):
    from gen.cli import main
    out = tmp_path / "r18.npubin"
    assert main(["compile", str(model("resnet18")), "--config", "default", "-o", str(out),
                 "--memory-size", str(BIG)]) == 0
    text = capsys.readouterr().out
    assert "predicted cycles" in text and "layer4.1.conv2+layer4.1.add" in text
    assert out.exists() and out.with_suffix(".csv").exists()
    x = tmp_path / "x.npy"
    np.save(x, image(5))
    y = tmp_path / "y.npy"
    assert main(["run", str(out), "--input", str(x), "-o", str(y)]) == 0
    np.testing.assert_array_equal(np.load(y), driver.run(npubin.load(out), image(5)))
    # Errors: one line, exit 2, nothing written.
    bad = tmp_path / "tiny.npubin"
    assert main(["compile", str(model("resnet18")), "--config", "tiny", "-o", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "131072-byte window" in err
    assert not bad.exists() and not bad.with_suffix(".csv").exists()
    assert list(tmp_path.glob(".*")) == []
    assert main(["run", str(out), "--input", str(x), "--config", "tiny", "-o",
                 str(tmp_path / "z.npy")]) == 2
    assert "compiled for config 'default'" in capsys.readouterr().err
    assert not (tmp_path / "z.npy").exists()
    assert main(["compile", str(tmp_path / "missing.onnx"), "-o", str(bad)]) == 2
    assert "missing.onnx: no such model file" in capsys.readouterr().err


def test_cli_quantize(tmp_path, capsys):
    from firmware.models import float_resnet
    from gen.cli import main
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "a.npy", synthetic_images(2, SIZE, seed=7))
    np.save(calib / "b.npy", synthetic_images(1, SIZE, seed=8)[0])
    out = tmp_path / "r18.int8.onnx"
    assert main(["quantize", str(float_resnet("resnet18", SIZE, 10)), "--calib", str(calib),
                 "-o", str(out)]) == 0
    assert "3 calibration samples" in capsys.readouterr().out
    prog = compile_model(out, "large", memory_size=BIG)
    x = image(0)
    got = npu_int8(prog, x)
    assert got.argmax() == ort_int8(out, prog, x).argmax()
    np.save(tmp_path / "bad.npy", np.zeros((5, 5), np.float32))
    assert main(["quantize", str(float_resnet("resnet18", SIZE, 10)), "--calib",
                 str(tmp_path / "bad.npy"), "-o", str(tmp_path / "no.onnx")]) == 2
    assert "does not match the model input" in capsys.readouterr().err
    assert not (tmp_path / "no.onnx").exists()


# -- full size -------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_224_on_golden(arch):
    """224 x 224, 1000 classes. ResNet-18: every logit within 1 LSB of onnxruntime. ResNet-50:
    the same top-1 and at least 99.5% of the logits within 1 LSB (the rest 2 LSB: see
    docs/compiler.md)."""
    path = quantized_resnet(arch, 224, 1000, calib=4)
    prog = compile_model(path, "default")
    for seed in (0, 1):
        x = synthetic_images(1, 224, seed=seed)
        got = npu_int8(prog, x)
        ort = ort_int8(path, prog, x)
        diff = np.abs(got - ort)
        print(f"{arch} 224 image {seed}: {np.mean(diff == 0):.1%} equal, max {diff.max()} LSB, "
              f"{np.mean(diff <= 1):.2%} within 1 LSB")
        assert got.argmax() == ort.argmax()
        if arch == "resnet18":
            assert diff.max() <= 1
        else:
            assert diff.max() <= 2 and np.mean(diff <= 1) >= 0.995
