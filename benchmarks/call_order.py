"""Why benchmarks.benchmark times each implementation's second call in a row.

    python benchmarks/call_order.py --shapes=128x100x32x256 [--impls=...] [--reps=12]

In every round each implementation runs twice in a row: the first call is timed right after the
previous implementation's call, the second right after its own. XLA:CPU frees a call's
temporaries on another thread after the call returns, so the first time includes the predecessor's
cleanup and the second only the implementation's own (as in a training loop). Prints both medians.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from absl import app, flags

from benchmarks import benchmark as bm

bm.define_flags()  # its --shapes and --impls
flags.DEFINE_integer("reps", 12, "Rounds.")


def main(argv):
    del argv
    shape = bm.Shape.parse(bm.FLAGS.shapes[-1])
    calls = {}
    for name in bm.FLAGS.impls:
        try:
            calls[name] = bm.BUILDERS[name](shape, ("train",)).call["train"]
        except bm.Skip:
            pass
    for fn in calls.values():
        fn(), fn()
    after_previous = {n: [] for n in calls}
    call_order = {n: [] for n in calls}
    for _ in range(flags.FLAGS.reps):
        for name, fn in calls.items():
            for times in (after_previous, call_order):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(f"`python benchmarks/call_order.py {' '.join(sys.argv[1:])}`, {shape}, train step, "
          f"median of {flags.FLAGS.reps} rounds, ms\n")
    print("| implementation | right after the previous one | right after itself |\n|---|---|---|")
    for name in calls:
        print(f"| {name} | {1e3 * np.median(after_previous[name]):.1f} | {1e3 * np.median(call_order[name]):.1f} |")


if __name__ == "__main__":
    app.run(main)
