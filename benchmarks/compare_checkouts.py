"""Two checkouts of lstm_jax side by side: the benchmark run in alternating processes, A B A B ...

    python benchmarks/compare_checkouts.py --a=/tmp/base:experiments.benchmark --b=.:benchmarks.benchmark \\
        --pairs=4 -- --shapes=64x100x8x128 --modes=train --rounds=10 --impls=lstm_jax:auto,lstm_jax:stacked

Each process imports its own checkout (it runs with that folder as its working directory, first on
``sys.path``) and writes its report; a pair is one A process then one B process, so a slow spell of a
shared machine hits both. Prints, per implementation and shape, each side's median over its processes
and the ratio B / A: its median over pairs and its range. The python that runs this script runs both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ALIASES = {"lstm_jax:fast": "lstm_jax:xla", "lstm_jax:fast_bf16": "lstm_jax:xla_bf16"}  # names before the rename


def run(side: str, args: list[str], out: str) -> dict:
    folder, module = side.split(":")
    subprocess.run([sys.executable, "-m", module, *args, f"--out={out}"], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    with open(out + ".json") as f:
        return {(ALIASES.get(r["impl"], r["impl"]), r["mode"], json.dumps(r["shape"], sort_keys=True)): r["median_ms"]
                for r in json.load(f)["results"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="FOLDER:MODULE of the base checkout")
    parser.add_argument("--b", required=True, help="FOLDER:MODULE of the changed checkout")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("benchmark_args", nargs="*", help="flags for the benchmark, after --")
    args = parser.parse_args()
    runs = {"a": [], "b": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.pairs):
            for side in ("a", "b"):
                runs[side].append(run(getattr(args, side), args.benchmark_args, os.path.join(tmp, f"{side}{k}")))
                print(f"pair {k + 1}/{args.pairs}: {side} done", file=sys.stderr, flush=True)
    print(f"A = {args.a}, B = {args.b}, {args.pairs} pairs; benchmark flags: {' '.join(args.benchmark_args)}\n")
    print("| implementation | mode | shape | A ms | B ms | B / A (median over pairs) | range |")
    print("|---|---|---|---|---|---|---|")
    for key in runs["a"][0]:
        if not all(key in r for r in runs["a"] + runs["b"]):
            continue
        a = np.array([r[key] for r in runs["a"]])
        b = np.array([r[key] for r in runs["b"]])
        ratio = b / a
        shape = " ".join(f"{k}={v}" for k, v in json.loads(key[2]).items())
        print(f"| {key[0]} | {key[1]} | {shape} | {np.median(a):.1f} | {np.median(b):.1f} | {np.median(ratio):.3f} "
              f"| {ratio.min():.3f}-{ratio.max():.3f} |")


if __name__ == "__main__":
    main()
