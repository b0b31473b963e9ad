"""The knob contract: TrialConfig is assembled from the knobs' declared fields; every declared bound and choice is
what validation enforces and what the explorer's widgets offer; a new knob is one module in the registry."""
import dataclasses
import importlib
import sys
import types

import pytest

import workbench.config
import workbench.knobs
from workbench.config import SPECS, TrialConfig, build_key, rebuild_fields
from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row

FIELDS = list(SPECS.values())


def test_trial_config_is_the_knobs_fields_then_the_measurement_fields_in_order():
    assert [f.name for f in dataclasses.fields(TrialConfig)] == [s.name for s in FIELDS]
    knob_names = [f.name for knob in workbench.knobs.KNOBS for f in knob.FIELDS]
    assert [s.name for s in FIELDS][:len(knob_names)] == knob_names
    assert all(s.help for s in FIELDS), [s.name for s in FIELDS if not s.help]  # the tooltip a user reads
    assert all(s.source for s in FIELDS)
    assert SPECS["prune_ratio"].source == "workbench.knobs.prune" and SPECS["seeds"].source == "workbench.config"
    assert TrialConfig.spec("steps").help == "denoising steps"


@pytest.mark.parametrize("spec", [s for s in FIELDS if s.low is not None or s.high is not None], ids=lambda s: s.name)
def test_declared_bounds_are_the_ones_validate_enforces(spec):
    eps = 1 if spec.kind == "int" else 1e-6
    for edge, outside in ((spec.low, None if spec.low is None else spec.low - eps),
                          (spec.high, None if spec.high is None else spec.high + eps)):
        if edge is None:
            continue
        TrialConfig().replace(**_with_dependencies(spec.name, edge))
        with pytest.raises(ConfigError, match=spec.name) as err:
            TrialConfig().replace(**_with_dependencies(spec.name, outside))
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", [s for s in FIELDS if s.choices], ids=lambda s: s.name)
def test_declared_choices_are_valid_and_closed_ones_are_all(spec, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SKIP_DEVICE_CHECK", "1")  # "cuda" is a valid choice on a machine without one
    for choice in spec.choices:
        TrialConfig().replace(**_with_dependencies(spec.name, choice))
    if not spec.open:
        with pytest.raises(ConfigError, match=spec.name):
            TrialConfig().replace(**{spec.name: "no-such-" + spec.name})


def _with_dependencies(name, value):
    """recovery_steps > 0 is valid only with pruning on, NNCF INT8 only on the onnxruntime backend, torchao FP8 only on
    bf16 weights, compile tuning and precompile only with a compile, graphed text
    encoders only with CUDA graphs (validate says so): give a value what it needs."""
    needs = {}
    if name == "recovery_steps" and value > 0:
        needs["prune_ratio"] = 0.25
    if name == "quant" and value != "none":
        needs["backend"] = "onnxruntime"
    if name == "torchao" and value.startswith("fp8"):
        needs["precision"] = "bf16"
    if name == "vae_upcast" and value != "auto":
        needs.update(precision="fp16", model="tiny-sdxl")
    if name in ("compile_tuning", "compile_cache") and value not in ("none", "inductor"):
        needs["compile"] = "default"
    if name == "compile_scope" and value == "all-graphed":
        needs["compile"] = "reduce-overhead"
    return {name: value, **needs}


def test_call_time_and_rebuild_fields():
    rebuild = set(rebuild_fields())
    assert {"steps", "cfg_scale", "cfg_cutoff", "scheduler", "seeds"}.isdisjoint(rebuild)
    assert {"model", "precision", "prune_ratio", "prune_method", "recovery_steps", "recovery_data"} <= rebuild
    a, b = TrialConfig(), TrialConfig(steps=4, scheduler="ddim", cfg_scale=3.0, cfg_cutoff=0.5, seeds="3-4")
    assert build_key(a) == build_key(b)
    assert build_key(a) != build_key(TrialConfig(precision="bf16"))


def test_a_new_knob_is_one_module_its_field_check_widget_and_row_follow(monkeypatch, tiny_pipe):
    """What a contributor adding a knob does: write one module, name it in KNOBS. The field appears in TrialConfig
    (typed, validated by its bounds and by the module's own check), in the explorer's widgets, in the row."""
    import ipywidgets as w
    import torch

    from workbench.lab.widgets import control, value_of

    knob = types.ModuleType("workbench.knobs.example_stride")
    knob.FIELDS = (Field("example_stride", 0, "an example knob's stride", low=0, high=10),)

    def check(cfg, where="config"):
        if cfg.example_stride == 7:
            raise ConfigError(f"{where}.example_stride: 7 is unlucky; use another")

    def apply(pipe, cfg, device):
        return Row({"example_hits": float(cfg.example_stride)}, {"example": {"interval": cfg.example_stride}})

    knob.check, knob.apply = check, apply
    monkeypatch.setattr(workbench.knobs, "KNOBS", workbench.knobs.KNOBS + (knob,))
    monkeypatch.setitem(sys.modules, "workbench.knobs.example_stride", knob)
    original = dict(vars(workbench.config))  # reload re-executes in the same namespace: put it back afterwards
    fresh = importlib.reload(workbench.config)
    try:
        cfg = fresh.TrialConfig.from_dict({"example_stride": 3})
        assert cfg.example_stride == 3 and fresh.SPECS["example_stride"].source == "workbench.knobs.example_stride"
        assert "example_stride" in fresh.rebuild_fields()
        with pytest.raises(ConfigError, match=r"example_stride: must be 0 to 10"):
            fresh.TrialConfig.from_dict({"example_stride": 11})
        with pytest.raises(ConfigError, match=r"example_stride: 7 is unlucky"):
            fresh.TrialConfig.from_dict({"example_stride": 7})
        with pytest.raises(ConfigError, match=r"expected int"):
            fresh.TrialConfig.from_dict({"example_stride": "three"})
        widget = control(fresh.SPECS["example_stride"], 3)
        assert isinstance(widget, w.IntSlider) and (widget.min, widget.max) == (0, 10)
        widget.value = 5
        assert value_of(fresh.SPECS["example_stride"], widget) == 5
        row = workbench.knobs.apply(tiny_pipe, cfg, torch.device("cpu"))
        assert row.metrics["example_hits"] == 3.0 and row.protocols["example"] == {"interval": 3}
    finally:
        vars(workbench.config).update(original)


def test_two_knobs_declaring_one_field_is_one_clear_line(monkeypatch):
    twin = types.ModuleType("workbench.knobs.twin")
    twin.FIELDS = (Field("steps", 10, "steps again"),)
    monkeypatch.setattr(workbench.knobs, "KNOBS", workbench.knobs.KNOBS + (twin,))
    with pytest.raises(ValueError, match=r"'steps' is declared by both workbench.knobs.steps and workbench.knobs.twin"):
        workbench.knobs.fields()


def test_knob_modules_keep_to_the_contract():
    """Only the contract's names are public verbs, knobs never import each other, and none stashes state on the
    pipeline for the trial to read back (they return a Row)."""
    import ast
    import inspect

    names = {k.__name__ for k in workbench.knobs.KNOBS}
    for knob in workbench.knobs.KNOBS:
        source = inspect.getsource(knob)
        imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.module}
        assert not (imported & names), f"{knob.__name__} imports another knob: {imported & names}"
        assert "_report" not in source, f"{knob.__name__} leaves a report on the pipeline"
        assert isinstance(knob.FIELDS, tuple) and all(isinstance(f, Field) for f in knob.FIELDS)
