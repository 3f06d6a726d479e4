"""The real-data model: a small ResNet trained on scikit-learn's digits (firmware/digits.py),
quantised by onnxruntime, compiled and run on the golden model over the whole held-out split."""

import json

import numpy as np
import pytest

from firmware import driver
from firmware.compiler import compile_model
from firmware.digits import FIXTURE, FIXTURE_INFO, load_split
from firmware.reference import ort_session

pytest.importorskip("sklearn")


@pytest.mark.parametrize("config", [pytest.param("tiny", marks=pytest.mark.slow), "default"])
def test_digits_on_golden_agree_with_onnxruntime(config):
    info = json.loads(FIXTURE_INFO.read_text())
    _, x_te, _, y_te = load_split()
    assert len(x_te) == info["split"]["test"]
    prog = compile_model(FIXTURE, config)            # fits even tiny's 128 KiB window
    sess = ort_session(FIXTURE)
    out = prog.manifest["output"]
    ours, theirs = [], []
    for x in x_te:
        ours.append(driver.run_int8(prog, driver.quantize_input(prog, x[None])).reshape(-1))
        y = sess.run(None, {"input": x[None]})[0].reshape(-1)
        theirs.append(np.rint(y / np.float32(out["scale"])) + out["zero_point"])
    ours, theirs = np.array(ours, np.int64), np.array(theirs, np.int64)
    diff = np.abs(ours - theirs)
    same = np.mean(ours.argmax(1) == theirs.argmax(1))
    acc, acc_ort = np.mean(ours.argmax(1) == y_te), np.mean(theirs.argmax(1) == y_te)
    print(f"{config}: logits {np.mean(diff == 0):.2%} equal to onnxruntime, max {diff.max()} "
          f"LSB; {same:.2%} of {len(x_te)} predictions identical; accuracy {acc:.2%} "
          f"(onnxruntime int8 {acc_ort:.2%}, float {info['float_accuracy']:.2%})")
    assert diff.max() <= 1
    assert same >= 0.99
    assert abs(acc - acc_ort) <= 0.005
    assert acc_ort == pytest.approx(info["int8_accuracy_onnxruntime"])
