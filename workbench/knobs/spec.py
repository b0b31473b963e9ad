"""What a knob declares and hands back: its `Field`s (TrialConfig is assembled from them) and its `Row` of results."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KINDS = ("choice", "int", "float", "bool", "str")


@dataclass(frozen=True)
class Field:
    """One TrialConfig field: its default (which fixes its type), the help a user reads, and what is valid.

    `choices` are the offered values (closed unless `open`: e.g. any diffusers scheduler class name is valid too);
    `low` / `high` are inclusive bounds and `step` a multiple that valid values keep. `check_field` enforces them,
    widgets are built from them, so a bound is written once. `call_time`: a new value only changes the pipeline
    call, so a built pipeline is kept (the explorer, and the per-call part of a trial)."""
    name: str
    default: Any
    help: str
    choices: tuple = ()
    open: bool = False
    low: float | None = None
    high: float | None = None
    step: float | None = None
    call_time: bool = False
    source: str = ""             # the module that declared it (set by the registry)

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def kind(self) -> str:
        """choice | int | float | bool | str: the widget a field gets."""
        if self.choices:
            return "choice"
        if isinstance(self.default, bool):
            return "bool"
        return {int: "int", float: "float"}.get(type(self.default), "str")


@dataclass
class Row:
    """What a knob adds to the trial's row: metrics (numbers, with their schema in workbench.metrics), protocols
    (how they were measured or built, under the knob's name) and artifacts (folders of cached models)."""
    metrics: dict = field(default_factory=dict)
    protocols: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)

    def update(self, other: "Row | None") -> "Row":
        if other is not None:
            self.metrics.update(other.metrics)
            self.protocols.update(other.protocols)
            self.artifacts.update(other.artifacts)
        return self
