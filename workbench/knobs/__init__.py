"""The knobs: every setting a trial can change, one module each, in one ordered registry.

A knob module declares its fields and, where it needs them, up to four verbs (torchao's shape: one verb per
concern, dispatched over a registry, no if-chain in the trial):

    FIELDS = (Field("prune_ratio", 0.0, "fraction of UNet structure pruned away", low=0.0, high=0.75), ...)

    def check(cfg, where) -> None              # rules a Field cannot state (fields that need each other, folders)
    def check_device(cfg, device) -> None      # what this device or version cannot run, before anything is built
    def apply(pipe, cfg, device) -> Row | None  # build time: change the freshly loaded pipeline, say what it adds
    def call(pipe, cfg) -> dict                # call time: keyword arguments of the pipeline call

Each raises one `ConfigError` line naming the field and the fix. `TrialConfig` is assembled from the `FIELDS`
of `KNOBS` in this order (then the fields of how a trial is measured, `workbench.config`); `apply` runs in this
order too: compression builds from the fp32 model, precision casts and places the pipeline on the trial's device,
the runtime knobs change the placed modules, and `compile` compiles what they made. A knob returns its `Row`
(metrics, protocols, artifacts) rather than leaving state on the pipeline, and knobs never import each other.
Adding a knob means adding one module and naming it below; its fields, checks, widgets and row follow.
"""
from __future__ import annotations

from workbench.knobs import (attention, backend, channels_last, compile, fuse_qkv, guidance, model, precision, prune,
                             quant, scheduler, steps, torchao)
from workbench.knobs.spec import Field, Row

# Sampling, then compression (built from the fp32 model), precision (casts and places the pipeline on the device),
# then the runtime knobs that act on the placed modules, torch.compile last (it compiles what the others made).
KNOBS = (model, scheduler, steps, guidance, prune, quant, backend, precision, channels_last, fuse_qkv, attention,
         torchao, compile)
VERBS = ("check", "check_device", "apply", "call")


def fields() -> tuple[Field, ...]:
    """Every knob's fields, in registry order, each knowing the module that declared it."""
    out, seen = [], {}
    for knob in KNOBS:
        for f in knob.FIELDS:
            if f.name in seen:
                raise ValueError(f"FIELDS: {f.name!r} is declared by both {seen[f.name]} and {knob.__name__}")
            seen[f.name] = knob.__name__
            out.append(Field(**{**f.__dict__, "source": knob.__name__}))
    return tuple(out)


def check(cfg, where: str = "config") -> None:
    """Each knob's own rules, after every field passed its declared bounds and choices."""
    for knob in KNOBS:
        if hasattr(knob, "check"):
            knob.check(cfg, where)


def check_device(cfg, device) -> None:
    """What the device cannot run (fp16 on a CPU, say), one line, before any model is loaded."""
    for knob in KNOBS:
        if hasattr(knob, "check_device"):
            knob.check_device(cfg, device)


def apply(pipe, cfg, device) -> Row:
    """Every build-time knob on a freshly loaded pipeline, in registry order; their rows merged."""
    row = Row()
    for knob in KNOBS:
        if hasattr(knob, "apply"):
            row.update(knob.apply(pipe, cfg, device))
    return row


def call(pipe, cfg) -> dict:
    """The pipeline call's keyword arguments from every call-time knob (a kept pipeline gets the same call)."""
    kwargs: dict = {}
    for knob in KNOBS:
        if hasattr(knob, "call"):
            kwargs.update(knob.call(pipe, cfg))
    return kwargs


__all__ = ["Field", "KNOBS", "Row", "apply", "call", "check", "check_device", "fields"]
