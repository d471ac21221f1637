"""A study's search space: one short text per hyperparameter, read into Optuna distributions.

    loguniform(1e-4, 1e-1)   a float, uniform in log space (a learning rate)
    uniform(0.0, 0.5)        a float
    int(1, 3)                an integer;  logint(16, 256): an integer, uniform in log space
    choice(16, 32, 64)       one of the values (numbers, strings, booleans)
    ""                       not searched: the base config's value

Texts rather than nested configs, so that one flag changes a range:
``--config.space.learning_rate='loguniform(1e-5, 1e-2)'``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from typing import Any

from lstm_jax.errors import ConfigError
from lstm_jax.study import optuna_api

KINDS = ("loguniform", "uniform", "int", "logint", "choice")
_FORM = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$", re.S)


def parse(name: str, text: str):
    """One hyperparameter's text -> an Optuna distribution (ConfigError naming ``name`` when it is not one)."""
    m = _FORM.match(text)
    if not m or m.group(1) not in KINDS:
        raise ConfigError(f"space.{name}: {text!r} is not one of {', '.join(k + '(...)' for k in KINDS)}")
    kind = m.group(1)
    try:
        values = ast.literal_eval(f"({m.group(2)},)") if m.group(2).strip() else ()
    except (ValueError, SyntaxError):
        raise ConfigError(f"space.{name}: cannot read the values of {text!r}") from None
    if kind == "choice":
        if not values or len(set(values)) != len(values):
            raise ConfigError(f"space.{name}: choice() needs distinct values, got {text!r}")
        return optuna_api.choice(values)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"space.{name}: {kind}() takes two numbers (low, high), got {text!r}")
    low, high = values
    if not low < high:
        raise ConfigError(f"space.{name}: the range of {text!r} is empty (low must be below high)")
    log = kind in ("loguniform", "logint")
    if log and low <= 0:
        raise ConfigError(f"space.{name}: {kind}() needs a positive low end, got {text!r}")
    if kind in ("int", "logint"):
        if int(low) != low or int(high) != high:
            raise ConfigError(f"space.{name}: {kind}() takes whole numbers, got {text!r}")
        return optuna_api.int_range(int(low), int(high), log)
    return optuna_api.float_range(float(low), float(high), log)


def parse_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """{name: text} -> {name: distribution}, leaving out the names whose text is empty."""
    out = {}
    for name, text in space.items():
        if text is None or (isinstance(text, str) and not text.strip()):
            continue
        if not isinstance(text, str):
            raise ConfigError(f"space.{name}: give a text such as 'loguniform(1e-4, 1e-1)', got {text!r}")
        out[name] = parse(name, text)
    return out
