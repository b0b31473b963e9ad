"""The explorer's widgets come from TrialConfig: every declared bound and choice is what validate() enforces, and a
field nobody declared still gets a widget and counts as needing a rebuild."""
import dataclasses

import pytest

from workbench import fields
from workbench.config import TrialConfig
from workbench.errors import ConfigError

SPECS = list(fields.specs().values())


def test_every_trial_config_field_has_a_spec_in_order():
    assert [s.name for s in SPECS] == [f.name for f in dataclasses.fields(TrialConfig)]
    assert all(s.help for s in SPECS), [s.name for s in SPECS if not s.help]  # the tooltip a user reads


@pytest.mark.parametrize("spec", [s for s in SPECS if s.low is not None or s.high is not None], ids=lambda s: s.name)
def test_declared_bounds_are_the_ones_validate_enforces(spec, monkeypatch):
    eps = 1 if spec.kind == "int" else 1e-6
    for edge, outside in ((spec.low, None if spec.low is None else spec.low - eps),
                          (spec.high, None if spec.high is None else spec.high + eps)):
        if edge is None:
            continue
        TrialConfig().replace(**_with_dependencies(spec.name, edge))
        with pytest.raises(ConfigError, match=spec.name):
            TrialConfig().replace(**_with_dependencies(spec.name, outside))


@pytest.mark.parametrize("spec", [s for s in SPECS if s.choices], ids=lambda s: s.name)
def test_declared_choices_are_valid_and_closed_ones_are_all(spec, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SKIP_DEVICE_CHECK", "1")  # "cuda" is a valid choice on a machine without one
    for choice in spec.choices:
        TrialConfig().replace(**_with_dependencies(spec.name, choice))
    if not spec.open:
        with pytest.raises(ConfigError, match=spec.name):
            TrialConfig().replace(**{spec.name: "no-such-" + spec.name})


def _with_dependencies(name, value):
    """recovery_steps > 0 is valid only with pruning on, INT8 only on the onnxruntime backend (validate says so):
    give a value what it needs."""
    needs = {}
    if name == "recovery_steps" and value > 0:
        needs["prune_ratio"] = 0.25
    if name == "quant" and value != "none":
        needs["backend"] = "onnxruntime"
    return {name: value, **needs}


def test_call_time_and_rebuild_fields():
    rebuild = set(fields.rebuild_fields())
    assert {"steps", "cfg_scale", "cfg_cutoff", "scheduler", "seeds"}.isdisjoint(rebuild)
    assert {"model", "precision", "prune_ratio", "prune_method", "recovery_steps", "recovery_data"} <= rebuild
    a, b = TrialConfig(), TrialConfig(steps=4, scheduler="ddim", cfg_scale=3.0, cfg_cutoff=0.5, seeds="3-4")
    assert fields.build_key(a) == fields.build_key(b)
    assert fields.build_key(a) != fields.build_key(TrialConfig(precision="bf16"))


@dataclasses.dataclass(frozen=True)
class _WithNewFields(TrialConfig):
    attention_backend: str = "sdpa" # a field another engineer adds without declaring it
    cache_interval: int = 0         # DeepCache-style feature caching interval
    tome_ratio: float = 0.1         # fraction of tokens merged
    fuse_qkv: bool = False          # fuse the attention projections first


def test_undeclared_fields_get_fallback_widgets_and_need_a_rebuild(monkeypatch):
    import ipywidgets as w

    from workbench.explore import control, value_of

    monkeypatch.setattr(fields, "TrialConfig", _WithNewFields)
    fields._specs.cache_clear()
    try:
        specs = fields.specs()
        kinds = {n: specs[n].kind for n in ("attention_backend", "cache_interval", "tome_ratio", "fuse_qkv")}
        assert kinds == {"attention_backend": "str", "cache_interval": "int", "tome_ratio": "float", "fuse_qkv": "bool"}
        assert specs["cache_interval"].help == "DeepCache-style feature caching interval"
        assert {"attention_backend", "cache_interval", "tome_ratio", "fuse_qkv"} <= set(fields.rebuild_fields())
        widgets = {n: control(specs[n], specs[n].default) for n in kinds}
        assert isinstance(widgets["attention_backend"], w.Text) and isinstance(widgets["fuse_qkv"], w.Checkbox)
        assert isinstance(widgets["cache_interval"], w.BoundedIntText)
        assert isinstance(widgets["tome_ratio"], w.BoundedFloatText)
        widgets["cache_interval"].value = 7
        assert value_of(specs["cache_interval"], widgets["cache_interval"]) == 7
    finally:
        fields._specs.cache_clear()


def test_a_knob_module_declaration_with_a_typo_is_one_clear_line(monkeypatch):
    from workbench.knobs import cfg_cutoff

    monkeypatch.setattr(cfg_cutoff, "FIELDS", {"cfg_cutoff": {"hgih": 1.0}})
    with pytest.raises(ValueError, match=r"cfg_cutoff.*'hgih'"):
        fields.declarations()
