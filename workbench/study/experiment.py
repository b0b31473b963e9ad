"""An experiment: a YAML file naming a model, fixed settings, a search space, objectives and how to run them.

Everything is validated here, before any trial runs; each problem is one line naming the field and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

import optuna

from workbench.config import TrialConfig
from workbench.errors import ConfigError, did_you_mean
from workbench.metrics import check_metric
from workbench.paths import DEFAULT_STORAGE
from workbench.study.confirm import Settings, parse_settings
from workbench.study.executors import EXECUTORS

TOP_LEVEL = ("name", "description", "model", "fixed", "baseline", "search_space", "objectives", "constraints",
             "sampler", "n_trials", "storage", "executor", "timeout_s", "heartbeat_s", "grace_s", "report", "confirm")
PARAM_TYPES = ("categorical", "int", "float")


@dataclass(frozen=True)
class Param:
    """One search dimension, in Optuna's vocabulary (categorical / int / float, optionally log-scaled)."""
    name: str
    type: str
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    def distribution(self):
        import optuna.distributions as d

        if self.type == "categorical":
            return d.CategoricalDistribution(list(self.choices))
        if self.type == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)


@dataclass(frozen=True)
class Experiment:
    name: str
    fixed: dict
    baseline: dict
    space: tuple[Param, ...]
    objectives: dict[str, str]
    constraints: dict[str, dict]
    sampler: dict
    n_trials: int
    storage: str
    executor: str
    timeout_s: int
    heartbeat_s: int = 10           # a running trial's worker records a heartbeat this often (RDB storages)
    grace_s: int = 60               # a trial without heartbeat (or process) this long is lost: failed, retried once
    report_pairs: tuple[tuple[str, str], ...] = field(default=())
    description: str = ""
    path: str | None = None
    confirm: Settings = field(default_factory=Settings)  # how `workbench confirm` measures and judges its front

    def trial_config(self, params: dict) -> TrialConfig:
        return TrialConfig.from_dict({**self.fixed, **params}, where="search_space")

    @property
    def baseline_config(self) -> TrialConfig:
        return TrialConfig.from_dict({**self.fixed, **self.baseline}, where="baseline")

    @property
    def baseline_params(self) -> dict:
        """The baseline's value of each search dimension (for Optuna's enqueue_trial)."""
        base = self.baseline_config.to_dict()
        return {p.name: base[p.name] for p in self.space}

    def distributions(self) -> dict:
        return {p.name: p.distribution() for p in self.space}


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of name: value, got {type(value).__name__}")
    return value


def _param(name: str, spec, fixed: dict) -> Param:
    where = f"search_space.{name}"
    knobs = [f.name for f in fields(TrialConfig)]
    if name not in knobs:
        raise ConfigError(f"{where}: {name!r} is not a knob" + did_you_mean(name, knobs))
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    spec = _mapping(spec, where)
    unknown = set(spec) - {"type", "choices", "low", "high", "log", "step"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"{where}.{key}: unknown key" + did_you_mean(key, ["type", "choices", "low", "high", "log", "step"]))
    kind = spec.get("type", "categorical" if "choices" in spec else None)
    if kind not in PARAM_TYPES:
        raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(PARAM_TYPES)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}.choices: give a non-empty list of values")
        for choice in choices:
            TrialConfig.from_dict({**fixed, name: choice}, where=where.rsplit(".", 1)[0])
        return Param(name, kind, choices=tuple(choices))
    low, high, log = spec.get("low"), spec.get("high"), bool(spec.get("log", False))
    number = int if kind == "int" else (int, float)
    for key, value in (("low", low), ("high", high)):
        if not isinstance(value, number) or isinstance(value, bool):
            raise ConfigError(f"{where}.{key}: give a {'whole ' if kind == 'int' else ''}number, got {value!r}")
    if low >= high:
        raise ConfigError(f"{where}: inverted or empty range low={low} >= high={high}; swap them or widen the range")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got low={low}")
    for value in (low, high):  # the range's ends must be valid knob values (steps >= 1, cutoff <= 1, ...)
        TrialConfig.from_dict({**fixed, name: value}, where=where.rsplit(".", 1)[0])
    return Param(name, kind, low=low, high=high, log=log, step=spec.get("step"))


def _context(fixed: dict, space_spec: dict) -> dict:
    """`fixed` plus each search dimension's first value that is valid on its own: the other knobs' values against
    which a dimension's values are checked, so rules across knobs (recovery_steps needs prune_ratio > 0) hold."""
    context = dict(fixed)
    for name, spec in space_spec.items():
        first = spec[0] if isinstance(spec, list) and spec else (
            (spec.get("choices") or [spec.get("low")])[0] if isinstance(spec, dict) else None)
        try:
            TrialConfig.from_dict({**fixed, name: first})
        except (ConfigError, TypeError):
            continue
        context[name] = first
    return context


def parse(data, path: str | None = None) -> Experiment:
    """Validate an experiment mapping (as loaded from YAML)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'experiment'}: the YAML must be a mapping with name, search_space, objectives")
    for key in data:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{key}: unknown experiment field" + did_you_mean(key, TOP_LEVEL))
    name = data.get("name") or (Path(path).stem if path else None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("name: give the study a name (a string)")
    fixed = dict(_mapping(data.get("fixed"), "fixed"))
    if "model" in data:
        fixed["model"] = data["model"]
    TrialConfig.from_dict(fixed, where="fixed")
    space_spec = _mapping(data.get("search_space"), "search_space")
    if not space_spec:
        raise ConfigError("search_space: give at least one knob to search, e.g. steps: {type: int, low: 4, high: 50}")
    context = _context(fixed, space_spec)
    space = tuple(_param(k, v, {c: x for c, x in context.items() if c != k}) for k, v in space_spec.items())
    for p in space:
        if p.name in fixed:
            raise ConfigError(f"fixed.{p.name}: also in search_space; keep it in one of the two")
    baseline = dict(_mapping(data.get("baseline"), "baseline"))
    base = TrialConfig.from_dict({**fixed, **baseline}, where="baseline").to_dict()
    for p in space:  # the baseline runs as the study's first trial: Optuna refuses a category outside the choices
        if p.type == "categorical" and base[p.name] not in p.choices:
            raise ConfigError(f"baseline.{p.name}: {base[p.name]!r} is not among search_space.{p.name}'s choices "
                              f"{list(p.choices)}; add it to them (the baseline is the study's first trial)")
    objectives = _mapping(data.get("objectives"), "objectives")
    if not objectives:
        raise ConfigError("objectives: give at least one metric with a direction, e.g. fid: minimize")
    for metric, direction in objectives.items():
        check_metric(metric, f"objectives.{metric}")
        if direction not in ("minimize", "maximize"):
            raise ConfigError(f"objectives.{metric}: direction {direction!r} must be minimize or maximize")
    constraints = _mapping(data.get("constraints"), "constraints")
    for metric, bound in constraints.items():
        check_metric(metric, f"constraints.{metric}")
        bound = _mapping(bound, f"constraints.{metric}")
        if not bound or set(bound) - {"min", "max"} or not all(isinstance(v, (int, float)) for v in bound.values()):
            raise ConfigError(f"constraints.{metric}: write {{min: number}} and/or {{max: number}}")
    sampler = dict(_mapping(data.get("sampler"), "sampler")) or {"name": "TPESampler", "seed": 0}
    _check_sampler(sampler)
    n_trials = data.get("n_trials", 10)
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"n_trials: the study's total number of trials must be a positive integer, got {n_trials!r}")
    storage = data.get("storage", DEFAULT_STORAGE)
    if not isinstance(storage, str):
        raise ConfigError("storage: give a storage URL string, e.g. sqlite:///results/workbench.db, "
                          "journal:///results/<name>.journal, postgresql://user@host/db or ${WORKBENCH_STORAGE}")
    executor = data.get("executor", "papermill")
    if executor not in EXECUTORS:
        raise ConfigError(f"executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    timeout_s = data.get("timeout_s", 1800)
    if not isinstance(timeout_s, int) or timeout_s <= 0:
        raise ConfigError(f"timeout_s: the per-trial time limit must be a positive integer of seconds, got {timeout_s!r}")
    heartbeat_s, grace_s = data.get("heartbeat_s", 10), data.get("grace_s", 60)
    for key, value in (("heartbeat_s", heartbeat_s), ("grace_s", grace_s)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{key}: give a positive whole number of seconds, got {value!r}")
    if grace_s <= heartbeat_s:
        raise ConfigError(f"grace_s: {grace_s} s must exceed heartbeat_s={heartbeat_s} s (a few heartbeats, "
                          "e.g. grace_s: 60 with heartbeat_s: 10), or live workers are declared lost")
    pairs = []
    for pair in (_mapping(data.get("report"), "report").get("pairs") or []):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ConfigError("report.pairs: give a list of [metric, metric] pairs")
        for metric in pair:
            check_metric(metric, "report.pairs")
        pairs.append(tuple(pair))
    confirm = parse_settings(data.get("confirm"), list(objectives))
    return Experiment(name=name, fixed=fixed, baseline=baseline, space=space, objectives=dict(objectives),
                      constraints={k: dict(v) for k, v in constraints.items()}, sampler=sampler, n_trials=n_trials,
                      storage=storage, executor=executor, timeout_s=timeout_s, heartbeat_s=heartbeat_s,
                      grace_s=grace_s, report_pairs=tuple(pairs), confirm=confirm,
                      description=str(data.get("description", "")), path=path)


def _check_sampler(sampler: dict) -> None:
    name = sampler.get("name", "TPESampler")
    if not isinstance(name, str) or not name.endswith("Sampler") or not hasattr(optuna.samplers, name):
        options = [n for n in dir(optuna.samplers) if n.endswith("Sampler") and not n.startswith("_")]
        raise ConfigError(f"sampler.name: {name!r} is not an Optuna sampler" + did_you_mean(str(name), options))
    if "seed" not in sampler:
        raise ConfigError("sampler.seed: give the sampler's seed explicitly (defaults change between Optuna versions)")


def load(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment: file {str(path)!r} does not exist; give the path of a YAML file under experiments/")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    return parse(data, str(path))
