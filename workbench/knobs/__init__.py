"""The knobs: every setting a trial can change, one module each, in one ordered registry.

A knob module declares its fields and, where it needs them, up to four verbs (torchao's shape: one verb per
concern, dispatched over a registry, no if-chain in the trial):

    FIELDS = (Field("prune_ratio", 0.0, "fraction of UNet structure pruned away", low=0.0, high=0.75), ...)

    def check(cfg, where) -> None              # rules a Field cannot state (fields that need each other, folders)
    def check_device(cfg, device) -> None      # what this device or version cannot run, before anything is built
    def apply(pipe, cfg, device) -> Row | None  # build time: change the freshly loaded pipeline, say what it adds
    def call(pipe, cfg) -> dict                # call time: keyword arguments of the pipeline call
    def observe(pipe, cfg) -> Row | None       # after generation: what the knob saw (steps run, cache hits)

Each raises one `ConfigError` line naming the field and the fix. `TrialConfig` is assembled from the `FIELDS`
of `KNOBS` in this order (then the fields of how a trial is measured, `workbench.config`); `apply` runs in this
order too: compression builds from the fp32 model, precision casts and places the pipeline on the trial's device,
the runtime knobs change the placed modules, feature caching wraps the UNet they made, and `compile` compiles
what they made. Step callbacks of several knobs (guidance schedules, early stop) are chained in registry order. A knob returns its `Row`
(metrics, protocols, artifacts) rather than leaving state on the pipeline, and knobs never import each other.
Adding a knob means adding one module and naming it below; its fields, checks, widgets and row follow.
"""
from __future__ import annotations

from workbench.knobs import (attention, backend, channels_last, compile, cudnn, early_stop, feature_cache, fuse_qkv,
                             guidance, model, precision, prompt_cache, prune, quant, scheduler, steps, tokens, torchao, vae,
                             vae_upcast)
from workbench.knobs.spec import Field, Row

# Sampling, then compression (built from the fp32 model: pruning, INT8, the tiny VAE), precision (casts and places
# the pipeline on the device), the VAE's decode precision (on the cast VAE), the runtime knobs that act on the placed
# modules, the prompt cache (keyed by the placed encoders; after torchao, whose static FP8 calibrates with a pipeline
# call that is not the trial's), feature caching (wraps the UNet they made), torch.compile last (it compiles what the
# others made).
KNOBS = (model, scheduler, steps, guidance, early_stop, prune, quant, vae, backend, precision, vae_upcast,
         channels_last, fuse_qkv, tokens, attention, cudnn, torchao, prompt_cache, feature_cache, compile)
VERBS = ("check", "check_device", "apply", "call", "observe")


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
    """The pipeline call's keyword arguments from every call-time knob (a kept pipeline gets the same call); step
    callbacks of several knobs run one after another, each seeing the tensors all of them asked for."""
    kwargs: dict = {}
    callbacks, tensors = [], []
    for knob in KNOBS:
        if hasattr(knob, "call"):
            given = dict(knob.call(pipe, cfg))
            if "callback_on_step_end" in given:
                callbacks.append(given.pop("callback_on_step_end"))
            tensors += [t for t in given.pop("callback_on_step_end_tensor_inputs", ()) if t not in tensors]
            kwargs.update(given)
    if len(callbacks) == 1:
        kwargs["callback_on_step_end"] = callbacks[0]
    elif callbacks:
        def chained(pipe, step, timestep, callback_kwargs):
            for callback in callbacks:
                callback_kwargs = callback(pipe, step, timestep, callback_kwargs)
            return callback_kwargs
        kwargs["callback_on_step_end"] = chained
    if callbacks:
        kwargs["callback_on_step_end_tensor_inputs"] = tensors
    return kwargs


def observe(pipe, cfg) -> Row:
    """What the knobs saw while the trial generated (steps run, cache hits), their rows merged."""
    row = Row()
    for knob in KNOBS:
        if hasattr(knob, "observe"):
            row.update(knob.observe(pipe, cfg))
    return row


__all__ = ["Field", "KNOBS", "Row", "apply", "call", "check", "check_device", "fields", "observe"]
