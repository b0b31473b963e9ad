"""What each TrialConfig field is, for widgets and ladders: its kind, choices, range, and whether it is call-time.

Derived, never restated: the fields, types, defaults and help text come from `TrialConfig` itself (its typed
defaults and trailing comments); choices and ranges come from declarations that sit beside the validation that
enforces them. A knob module declares its fields in a module-level dict, the one place to add a new knob:

    FIELDS = {"scheduler": {"choices": tuple(ALIASES), "open": True, "call_time": True}}

Keys: `choices` (a tuple), `open` (True when other values are valid too, e.g. any diffusers class name),
`low` / `high` (inclusive bounds that `validate` enforces), `step` (valid values are multiples of it),
`call_time` (True when a new value changes only
the pipeline call, so the explorer keeps the built pipeline). `workbench.config.FIELDS` declares the fields of
no knob module. A field nobody declares still works: it gets a widget from its default's type (str, int,
float, bool) and counts as needing a rebuild, the safe side.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from workbench.config import TrialConfig

KINDS = ("choice", "int", "float", "bool", "str")
KEYS = {"choices", "open", "low", "high", "step", "call_time"}


@dataclass(frozen=True)
class FieldSpec:
    """One TrialConfig field as a widget sees it."""
    name: str
    kind: str                   # choice | int | float | bool | str
    default: Any
    help: str = ""              # TrialConfig's trailing comment
    choices: tuple = ()         # offered values (kind "choice")
    open: bool = False          # other values than `choices` are valid too
    low: float | None = None    # inclusive bounds enforced by validate(); None: unbounded on that side
    high: float | None = None
    step: float | None = None   # valid values are multiples of it
    call_time: bool = False     # a new value changes only the pipeline call: no rebuild
    source: str = ""            # the module that declared it ("" when nobody did: the type fallback)


def comments() -> dict[str, str]:
    """Each TrialConfig field's trailing comment (its help text), read from the class source as _build.py does."""
    found = {}
    for line in inspect.getsource(TrialConfig).splitlines():
        m = re.match(r"\s+(\w+): [\w|\[\], ]+ = .+?\s+# (.+)$", line)
        if m:
            found[m[1]] = m[2]
    return found


def declarations() -> dict[str, tuple[dict, str]]:
    """field -> (declaration, module): workbench.config.FIELDS, then every `FIELDS` of workbench.knobs.*."""
    import workbench.knobs
    from workbench import config

    found: dict[str, tuple[dict, str]] = {k: (v, config.__name__) for k, v in getattr(config, "FIELDS", {}).items()}
    for info in sorted(pkgutil.iter_modules(workbench.knobs.__path__), key=lambda i: i.name):
        try:
            module = importlib.import_module(f"workbench.knobs.{info.name}")
        except ImportError as e:  # an optional backend not installed: its fields fall back to plain widgets
            import warnings
            warnings.warn(f"workbench.knobs.{info.name} not importable ({e}); its fields get plain widgets")
            continue
        for name, decl in getattr(module, "FIELDS", {}).items():
            if name in found and found[name][1] != module.__name__:
                raise ValueError(f"FIELDS: {name!r} is declared by both {found[name][1]} and {module.__name__}")
            found[name] = (decl, module.__name__)
    for name, (decl, module) in found.items():
        unknown = set(decl) - KEYS
        if unknown:
            raise ValueError(f"{module}.FIELDS[{name!r}]: unknown key {sorted(unknown)[0]!r}; use {sorted(KEYS)}")
    return found


@lru_cache(maxsize=1)
def _specs() -> tuple[FieldSpec, ...]:
    help_text, declared = comments(), declarations()
    out = []
    for f in fields(TrialConfig):
        decl, module = declared.get(f.name, ({}, ""))
        default = f.default
        kind = "choice" if decl.get("choices") else _kind(default)
        out.append(FieldSpec(name=f.name, kind=kind, default=default, help=help_text.get(f.name, ""),
                             choices=tuple(decl.get("choices", ())), open=bool(decl.get("open", False)),
                             low=decl.get("low"), high=decl.get("high"), step=decl.get("step"),
                             call_time=bool(decl.get("call_time")),
                             source=module))
    return tuple(out)


def specs() -> dict[str, FieldSpec]:
    """Every TrialConfig field's spec, in TrialConfig's order."""
    return {s.name: s for s in _specs()}


def _kind(default) -> str:
    if isinstance(default, bool):
        return "bool"
    return {int: "int", float: "float"}.get(type(default), "str")


def rebuild_fields() -> tuple[str, ...]:
    """Fields whose change needs a freshly built pipeline: every field not declared call-time."""
    return tuple(s.name for s in _specs() if not s.call_time)


def build_key(cfg: TrialConfig) -> tuple:
    """The part of a configuration that determines the built pipeline (model, precision, prune_*, recovery_*, ...)."""
    values = cfg.to_dict()
    return tuple((name, values[name]) for name in rebuild_fields())
