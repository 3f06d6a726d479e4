"""The real-data model: a small ResNet trained on scikit-learn's digits (firmware/digits.py),
quantised by onnxruntime, compiled and run on the golden model over the whole held-out split."""

import json

import numpy as np
import pytest

from firmware import driver
from firmware.compiler import compile_model
from firmware.digits import FIXTURE, FIXTURE_INFO, load_split, ort_predict

pytest.importorskip("sklearn")


@pytest.mark.parametrize("config", [pytest.param("tiny", marks=pytest.mark.slow), "default"])
def test_digits_on_golden_agree_with_onnxruntime(config):
    info = json.loads(FIXTURE_INFO.read_text())
    _, x_te, _, y_te = load_split()
    assert len(x_te) == info["split"]["test"]
    prog = compile_model(FIXTURE, config)            # fits even tiny's 128 KiB window
    ours = np.array([int(driver.run(prog, x[None]).argmax()) for x in x_te])
    theirs = ort_predict(FIXTURE, x_te)
    same = np.mean(ours == theirs)
    acc, acc_ort = np.mean(ours == y_te), np.mean(theirs == y_te)
    print(f"{config}: {same:.2%} of {len(x_te)} predictions identical to onnxruntime; accuracy "
          f"{acc:.2%} (onnxruntime int8 {acc_ort:.2%}, float {info['float_accuracy']:.2%})")
    assert same >= 0.99
    assert abs(acc - acc_ort) <= 0.005
    assert acc_ort == pytest.approx(info["int8_accuracy_onnxruntime"])
