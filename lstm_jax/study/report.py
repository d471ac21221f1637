"""A finished study's answer: ``<study>/report.md`` and its pictures, from the trials' records.

Greff et al.'s reading of a random search (LSTM: A Search Space Odyssey): per (dataset, variant), the
best 10% of the complete trials on the validation metric; their test metric, variant against the
baseline by Welch's t-test with Holm's correction; the hyperparameters' importance by functional
ANOVA; and the test metric against the two most important hyperparameters. Trials are ranked on
the validation metric only: the test metric is reported, never used to choose.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import stats

from lstm_jax import plots
from lstm_jax.errors import ConfigError, UserError
from lstm_jax.study import optuna_api

DIRECTIONS = ("maximize", "minimize")
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
BEST_SHARE = 0.1  # Greff et al. read each variant off its best 10% of trials
ALPHA = 0.05
MIN_IMPORTANCE_TRIALS = 4
VARIANT_PARAM = "variant"  # the factor importances() adds beside the space's hyperparameters
MARGINAL_BINS = 5
MIN_LINE_TRIALS = 5  # a binned median of fewer points is noise


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial of one (dataset, variant) study; ``value`` is the validation metric (the objective)."""

    dataset: str
    variant: str
    number: int
    state: str
    params: dict
    value: float | None
    test: float | None
    seconds: float | None = None
    note: str = ""


@dataclasses.dataclass(frozen=True)
class StudyInfo:
    """What the report says about the study as a whole; ``space`` maps names to Optuna distributions."""

    title: str
    metric: str
    test_metric: str
    direction: str
    baseline: str
    space: dict
    command: str = ""
    best_files: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One variant's values against the baseline's; ``p_raw``/``p_holm`` are None when untested (``reason``)."""

    variant: str
    n: int
    mean: float | None
    std: float | None
    baseline_mean: float | None
    difference: float | None
    t: float | None
    p_raw: float | None
    p_holm: float | None
    reason: str = ""


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")


def _complete(trials: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [t for t in trials if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value)]


def ranked(trials: Sequence[TrialRecord], direction: str) -> list[TrialRecord]:
    """The complete trials with a finite validation value, best first (ties: the lower trial number)."""
    _check_direction(direction)
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted(_complete(trials), key=lambda t: (sign * t.value, t.number))


def best_fraction(trials: list[TrialRecord], direction: str, space_empty: bool) -> list[TrialRecord]:
    """The best 10% (ceil, at least 1) of one (dataset, variant)'s complete trials on validation, best first.

    All complete trials when ``space_empty``: with fixed hyperparameters the trials differ only by
    seed, so none is better chosen than another. Empty when no trial completed.
    """
    order = ranked(trials, direction)
    if space_empty:
        return order
    return order[:math.ceil(BEST_SHARE * len(order))]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values, in their given order: the k-th smallest is
    multiplied by m - k + 1 (k from 1), made non-decreasing along the sorted order, capped at 1."""
    p = np.asarray(p_values, float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    v = np.asarray(values, float)
    mean = float(v.mean()) if len(v) else None
    std = float(v.std(ddof=1)) if len(v) > 1 else None
    return mean, std


def compare(groups: dict[str, list[float]], baseline: str, test: str = "welch") -> list[Comparison]:
    """Each group other than ``baseline`` against it, in ``groups``' order, p-values Holm-corrected
    over the variants tested. ``test``: ``welch``, Welch's two-sided t-test (scipy.stats.ttest_ind,
    equal_var=False; ``difference`` of means); or ``mannwhitney``, the two-sided Mann-Whitney U test
    (``difference`` of medians, ``t`` None), for a whole search's skewed values.

    A group (or a baseline) with fewer than 2 values, or two groups without any variance, is not
    tested: its p-values are None and ``reason`` says why. A missing baseline counts as no values.
    """
    if test not in ("welch", "mannwhitney"):
        raise ConfigError(f"test must be welch or mannwhitney, got {test!r}")
    center = (lambda v: float(np.median(v)) if len(v) else None) if test == "mannwhitney" else (
        lambda v: _mean_std(v)[0])
    base = list(groups.get(baseline, []))
    base_mean = center(base)
    rows: list[dict] = []
    for variant, values in groups.items():
        if variant == baseline:
            continue
        values = list(values)
        mean, std = _mean_std(values)
        row = dict(variant=variant, n=len(values), mean=mean, std=std, baseline_mean=base_mean,
                   difference=None if center(values) is None or base_mean is None else center(values) - base_mean,
                   t=None, p_raw=None, p_holm=None, reason="")
        if len(base) < 2:
            row["reason"] = f"baseline {baseline} has {len(base)} value(s), the test needs 2"
        elif len(values) < 2:
            row["reason"] = f"{len(values)} value(s), the test needs 2"
        elif np.ptp(values) == 0 and np.ptp(base) == 0:
            row["reason"] = "no variance in either group"
        else:
            with warnings.catch_warnings():
                # scipy's "precision loss" warning for nearly equal values: the p-value is still the answer.
                warnings.simplefilter("ignore", RuntimeWarning)
                if test == "welch":
                    result = stats.ttest_ind(values, base, equal_var=False)
                    row.update(t=float(result.statistic), p_raw=float(result.pvalue))
                else:
                    row["p_raw"] = float(stats.mannwhitneyu(values, base, alternative="two-sided").pvalue)
        rows.append(row)
    tested = [r for r in rows if r["p_raw"] is not None]
    for r, p in zip(tested, holm([r["p_raw"] for r in tested])):
        r["p_holm"] = p
    return [Comparison(**r) for r in rows]


def verdict(c: Comparison, direction: str, alpha: float = ALPHA) -> str:
    """The table's word for ``c``: better, worse or no significant difference at ``alpha`` after Holm
    (lower is better when minimising), or why it was not tested."""
    _check_direction(direction)
    if c.p_holm is None:
        return f"not tested: {c.reason}"
    if c.p_holm >= alpha or not c.difference:
        return "no significant difference"
    higher = c.difference > 0
    return "better" if higher == (direction == "maximize") else "worse"


def importances(trials: list[TrialRecord], space: dict, direction: str) -> dict[str, float] | str:
    """fANOVA importance of each hyperparameter (and of the variant) for the validation metric, over one
    dataset's complete trials pooled across variants: {name: importance}, summing to 1, largest first.

    Optuna's FanovaImportanceEvaluator (seed 0) on an in-memory study of these trials. Returns a
    one-line reason instead when it cannot be computed: too few trials, nothing varies, no scikit-learn.
    """
    _check_direction(direction)
    done = _complete(trials)
    variants = sorted({t.variant for t in done})
    distributions = dict(space)
    if len(variants) > 1:
        if VARIANT_PARAM in distributions:
            return f"the space has its own {VARIANT_PARAM!r} hyperparameter, which hides the variant factor"
        distributions[VARIANT_PARAM] = optuna_api.choice(variants)
    if len(distributions) < 2:
        # fANOVA shares the variance out among the factors: one factor gets all of it by construction
        return f"only {' and '.join(distributions) or 'nothing'} varies, so there is nothing to rank"
    usable = _frozen(done, distributions)
    if len(usable) < MIN_IMPORTANCE_TRIALS:
        return f"{len(usable)} complete trial(s) with every hyperparameter, fANOVA needs {MIN_IMPORTANCE_TRIALS}"
    if np.ptp([t.value for t in usable]) == 0:
        return "the validation values do not vary, so there is no variance to share out"
    found = optuna_api.fanova(usable, direction)
    if isinstance(found, str):
        return found
    return {name: float(v) for name, v in sorted(found.items(), key=lambda kv: -kv[1])}


def _frozen(trials: list[TrialRecord], distributions: dict) -> list:
    """The trials as Optuna's, leaving out those missing a hyperparameter or holding a value outside its
    distribution (a space changed between runs); the variant factor's value is the trial's variant."""
    out = []
    for t in trials:
        if any(name not in t.params for name in distributions if name != VARIANT_PARAM):
            continue
        params = {name: t.variant if name == VARIANT_PARAM else t.params[name] for name in distributions}
        try:
            out.append(optuna_api.complete_trial(params, distributions, float(t.value)))
        except (ValueError, TypeError):  # create_trial checks every value against its distribution
            continue
    return out


def binned_median(x: Sequence[float], y: Sequence[float], bins: int = MARGINAL_BINS) -> tuple[list, list]:
    """The median of ``y`` in about ``bins`` bins of ``x`` holding equal counts (quantile bins), at the
    bins' median ``x``: (x_B, y_B). A parameter with at most ``bins`` distinct values gets one bin each."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    distinct = np.unique(x)
    if len(distinct) <= bins:
        chunks = [np.flatnonzero(x == v) for v in distinct]
    else:
        chunks = np.array_split(np.argsort(x, kind="stable"), bins)
    chunks = [c for c in chunks if len(c)]
    return [float(np.median(x[c])) for c in chunks], [float(np.median(y[c])) for c in chunks]


def safe_name(name: str) -> str:
    """``name`` with every character other than [A-Za-z0-9._-] replaced by '-', for a file name."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _num(v: float | None, spec: str = ".4g") -> str:
    return "—" if v is None else format(v, spec)


def _mean_pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.4g}"


def _ordered(names: Sequence[str], first: str | None = None) -> list[str]:
    seen = list(dict.fromkeys(names))
    return ([first] if first in seen else []) + [n for n in seen if n != first]


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


class _Names:
    """Unique file names under report/ (two datasets could make the same safe name)."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, *parts: str) -> str:
        stem = "-".join(safe_name(p) for p in parts)
        name, k = stem, 2
        while name in self.used:
            name, k = f"{stem}-{k}", k + 1
        self.used.add(name)
        return f"{name}.png"


def write_report(folder: str, trials: list[TrialRecord], info: StudyInfo) -> str:
    """Writes ``<folder>/report.md`` and its pictures (``<folder>/report/*.png``); returns the report's path."""
    _check_direction(info.direction)
    pictures = os.path.join(folder, "report")
    for where in (folder, pictures):
        if os.path.exists(where) and not os.path.isdir(where):
            raise UserError(f"cannot write the report: {where} is a file, not a folder")
    try:
        os.makedirs(pictures, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot write the report into {folder}: {e.strerror}") from None
    names = _Names()
    states = Counter(t.state for t in trials)
    counts = ", ".join(f"{states[s]} {STATES.get(s, s)}" for s in (*STATES, *sorted(set(states) - set(STATES)))
                       if states[s] or s in ("COMPLETE", "PRUNED", "FAIL"))
    space_empty = not info.space
    lines = [f"# Study {info.title}", ""]
    if info.command:
        lines += ["```", info.command, "```", ""]
    better = "higher" if info.direction == "maximize" else "lower"
    lines += [f"Objective: `{info.metric}` ({info.direction}; {better} is better). Reported: `{info.test_metric}`.",
              "",
              f"The test split never takes part in any choice: trials are ranked on {info.metric}; "
              f"{info.test_metric} is only reported.",
              "",
              f"Trials: {len(trials)} in all ({counts}).",
              "",
              ("Best set of each (dataset, variant): all its complete trials, since the space is empty "
               "(fixed hyperparameters: the trials differ only by seed)." if space_empty else
               f"Best set of each (dataset, variant): the best {BEST_SHARE:.0%} of its complete trials on "
               f"{info.metric} (at least one), as in Greff et al."),
              ""]
    if not trials:
        lines += ["No trials yet.", ""]
    for dataset in _ordered([t.dataset for t in trials]):
        here = [t for t in trials if t.dataset == dataset]
        lines += _dataset_section(folder, dataset, here, info, names)
    path = os.path.join(folder, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path


def _dataset_section(folder: str, dataset: str, trials: list[TrialRecord], info: StudyInfo, names: _Names
                     ) -> list[str]:
    variants = _ordered([t.variant for t in trials], first=info.baseline)
    by_variant = {v: [t for t in trials if t.variant == v] for v in variants}
    best_sets = {v: best_fraction(ts, info.direction, not info.space) for v, ts in by_variant.items()}
    tests = {v: [t.test for t in best if t.test is not None and math.isfinite(t.test)]
             for v, best in best_sets.items()}
    lines = [f"## Dataset `{dataset}`", "", "### Variants", ""]
    rows = []
    for v, ts in by_variant.items():
        states = Counter(t.state for t in ts)
        order = ranked(ts, info.direction)
        top = order[0] if order else None
        rows.append([v + (" (baseline)" if v == info.baseline else ""), states["COMPLETE"], states["PRUNED"],
                     states["FAIL"], "—" if top is None else f"#{top.number}",
                     _num(None if top is None else top.value), _num(None if top is None else top.test),
                     f"{_mean_pm(*_mean_std(tests[v]))} (n={len(tests[v])})"])
    lines += _table(["variant", "complete", "pruned", "failed", "best trial", f"its {info.metric}",
                     f"its {info.test_metric}", f"{info.test_metric} over the best set (mean ± std, n)"], rows)
    failures = Counter((t.variant, t.note or "no note") for v in variants for t in by_variant[v] if t.state == "FAIL")
    if failures:
        lines += ["", "Failures: " + "; ".join(f"{v}: {note} (×{k})" for (v, note), k in failures.items()) + "."]

    box = names(dataset, "best-set")
    plots.box_by_group(tests, os.path.join(folder, "report", box), ylabel=info.test_metric,
                       title=f"{dataset}: {info.test_metric} of the best set")
    lines += ["", f"![{info.test_metric} of each variant's best set](report/{box})", ""]

    lines += _comparison_section(tests, info)
    if info.space:  # with fixed hyperparameters the best set is already every trial
        searched = {v: [t.test for t in _complete(ts) if t.test is not None and math.isfinite(t.test)]
                    for v, ts in by_variant.items()}
        lines += _search_section(searched, info)
    found = importances(trials, info.space, info.direction)
    lines += _importance_section(found, info)
    lines += _marginal_section(folder, dataset, trials, info, variants, found, names)

    links = [(v, info.best_files[(dataset, v)]) for v in variants if (dataset, v) in info.best_files]
    if links:
        lines += ["### Best configs", ""]
        lines += [f"- {v}: [{p}]({urllib.parse.quote(str(p))})" for v, p in links]
        lines += [""]
    return lines


def _comparison_section(tests: dict[str, list[float]], info: StudyInfo) -> list[str]:
    lines = ["### Against the baseline", ""]
    if info.baseline not in tests:
        return lines + [f"No tests: the baseline {info.baseline!r} is not among this dataset's variants.", ""]
    comparisons = compare(tests, info.baseline)
    if not comparisons:
        return lines + ["No tests: the baseline is the only variant.", ""]
    better = "higher" if info.direction == "maximize" else "lower"
    tested = sum(c.p_raw is not None for c in comparisons)
    lines += [f"Each variant's {info.test_metric} over its best set against {info.baseline}'s by Welch's two-sided "
              f"t-test (unequal variances); p-values Holm-corrected over the {tested} variant(s) tested here; "
              f"verdict at alpha {ALPHA} after Holm, {better} being better.", ""]
    rows = [[f"{info.baseline} (baseline)", len(tests[info.baseline]), _mean_pm(*_mean_std(tests[info.baseline])),
             "—", "—", "—", "—", "—"]]
    rows += [[c.variant, c.n, _mean_pm(c.mean, c.std), _num(c.difference, "+.4g"), _num(c.t, ".3g"),
              _num(c.p_raw, ".3g"), _num(c.p_holm, ".3g"), verdict(c, info.direction)] for c in comparisons]
    return lines + _table(["variant", "n", "mean ± std", "difference", "Welch t", "p (raw)", "p (Holm)", "verdict"],
                          rows) + [""]


def _search_section(values: dict[str, list[float]], info: StudyInfo) -> list[str]:
    """Every complete trial, not only the best set: how a variant fares over the whole search space."""
    lines = ["### Over the whole search", ""]
    if info.baseline not in values:
        return []
    comparisons = compare(values, info.baseline, test="mannwhitney")
    if not comparisons:
        return []
    tested = sum(c.p_raw is not None for c in comparisons)
    lines += [f"{info.test_metric} of every complete trial: how sensitive each variant is across the space (Greff et "
              f"al.'s density plots), not how good it is when tuned. Two-sided Mann-Whitney U test against "
              f"{info.baseline}, p-values Holm-corrected over the {tested} variant(s); difference of medians.", ""]
    base = values[info.baseline]
    rows = [[f"{info.baseline} (baseline)", len(base), _num(float(np.median(base)) if base else None),
             _mean_pm(*_mean_std(base)), "—", "—", "—", "—"]]
    rows += [[c.variant, c.n, _num(float(np.median(values[c.variant])) if values[c.variant] else None),
              _mean_pm(c.mean, c.std), _num(c.difference, "+.4g"), _num(c.p_raw, ".3g"), _num(c.p_holm, ".3g"),
              verdict(c, info.direction)] for c in comparisons]
    return lines + _table(["variant", "n", "median", "mean ± std", "difference", "p (raw)", "p (Holm)", "verdict"],
                          rows) + [""]


def _importance_section(found: dict[str, float] | str, info: StudyInfo) -> list[str]:
    lines = ["### Hyperparameter importance (fANOVA)", ""]
    if isinstance(found, str):
        return lines + [f"Not computed: {found}.", ""]
    factor = f" (the variant a categorical factor, `{VARIANT_PARAM}`)" if VARIANT_PARAM in found else ""
    lines += [f"Functional ANOVA of {info.metric} over this dataset's complete trials pooled across variants{factor}, "
              f"leaving out any trial without a value inside every hyperparameter's range; importances sum to 1.", ""]
    return lines + _table(["hyperparameter", "importance"], [[k, f"{v:.3f}"] for k, v in found.items()]) + [""]


def _marginal_section(folder: str, dataset: str, trials: list[TrialRecord], info: StudyInfo, variants: list[str],
                      found: dict[str, float] | str, names: _Names) -> list[str]:
    ranked_params = [k for k in found if k in info.space] if isinstance(found, dict) else []
    chosen = (ranked_params or list(info.space))[:2]
    if not chosen:
        return []
    lines = ["### Marginals", "",
             f"{info.test_metric} of every complete trial against a hyperparameter; lines: the median in "
             f"{MARGINAL_BINS} quantile bins (variants with at least {MIN_LINE_TRIALS} trials).", ""]
    done = [t for t in _complete(trials) if t.test is not None and math.isfinite(t.test)]
    for param in chosen:
        dist = info.space[param]
        categorical = optuna_api.is_categorical(dist)
        points, curves = {}, {}
        for v in variants:
            ts = [t for t in done if t.variant == v and param in t.params
                  and (not categorical or t.params[param] in dist.choices)]
            # every variant keeps its slot (and so its colour) even without points
            xs, ys = [t.params[param] for t in ts], [t.test for t in ts]
            points[v] = (xs, ys)
            if not categorical and len(ts) >= MIN_LINE_TRIALS:
                curves[v] = binned_median(xs, ys)
        picture = names(dataset, param)
        plots.marginal(points, os.path.join(folder, "report", picture), xlabel=param, ylabel=info.test_metric,
                       log_x=optuna_api.is_log(dist), title=f"{dataset}: {info.test_metric} against {param}",
                       lines=curves, categories=list(dist.choices) if categorical else None)
        lines += [f"![{info.test_metric} against {param}](report/{picture})", ""]
    return lines
