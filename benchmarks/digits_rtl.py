"""The digits model on the RTL: simulated cycles and the performance counters per image.

Usage: ``.venv/bin/python benchmarks/digits_rtl.py [--config tiny] [--images 1]``.

The committed digits ResNet (``tests/fixtures``) is compiled for ``--config`` and run on the
Verilator build of that configuration for the first ``--images`` held-out images; the logits are
checked against the golden model, and CYCLES, MAC_ACTIVE, STORE_BUSY and FETCH_STALL of each run
(those the configuration has, ``perf.counters``) are printed with the compiler's predicted
cycles. Deterministic: the same configuration gives the same cycles on any machine.
"""

import argparse

import numpy as np

from firmware import driver
from firmware.compiler import compile_model
from firmware.digits import FIXTURE, load_split
from sim.rtl import RtlBackend

COUNTERS = ("CYCLES", "MAC_ACTIVE", "STORE_BUSY", "FETCH_STALL")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--images", type=int, default=1)
    args = ap.parse_args()
    _, x_te, _, _ = load_split()
    xs = [x[None] for x in x_te[:args.images]]
    prog = compile_model(FIXTURE, args.config)
    backend = RtlBackend(progress=False)
    got = driver.run_batch(prog, xs, backend)
    gold = driver.run_batch(prog, xs, "golden")
    predicted = sum(layer["predicted_cycles"] for layer in prog.manifest["layers"])
    same = "equal to" if np.array_equal(got, gold) else "DIFFER from"
    print(f"digits on {args.config}: logits {same} the golden model; predicted {predicted:,} "
          f"cycles an image")
    for i, run in enumerate(backend.last):
        print(f"  image {i}: " + ", ".join(f"{k} {run.perf[k]:,}" for k in COUNTERS
                                             if k in run.perf))   # (those the config has)


if __name__ == "__main__":
    main()
