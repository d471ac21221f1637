"""The README's Python API block, run as written: afterwards ``model`` holds the trained weights."""

from __future__ import annotations

import pathlib
import re

import jax.numpy as jnp
import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def test_python_api_block_runs_and_leaves_the_trained_model(capsys):
    block = next(b for b in python_blocks() if "from lstm_jax.train.loop import fit" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    summary, model, data = scope["summary"], scope["model"], scope["data"]
    logits = np.asarray(model(jnp.asarray(data.test.x)))
    accuracy = float(np.mean((logits > 0) == (data.test.y > 0.5)))
    assert accuracy == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert summary["test_accuracy"] > 0.6  # 5 epochs learn the order task well past chance
    out = capsys.readouterr().out
    assert "(4, 20, 16) (4, 16)" in out
    printed = re.findall(r"test accuracy ([0-9.]+)\nagain: ([0-9.]+)", out)
    assert printed and printed[0][0] == printed[0][1], out
