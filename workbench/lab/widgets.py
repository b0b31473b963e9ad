"""A widget for each TrialConfig field, from its declaration (`workbench.knobs.spec.Field`): a new knob's fields
appear in the explorer without a notebook change."""
from __future__ import annotations

from workbench.knobs.spec import Field


def control(spec: Field, value):
    """The widget for one field: sliders for fields bounded on both sides, bounded number boxes otherwise,
    dropdowns for closed choices, a combobox for open ones, a checkbox for booleans, a text box for the rest."""
    import ipywidgets as w  # optional: the lab extra

    common = {"description": spec.name, "tooltip": spec.help, "style": {"description_width": "110px"},
              "layout": w.Layout(width="330px")}
    big = 1e9
    if spec.kind == "choice":
        options = list(spec.choices) + ([value] if value not in spec.choices else [])
        if spec.open:
            return w.Combobox(value=str(value), options=[str(o) for o in options], ensure_option=False, **common)
        return w.Dropdown(value=value, options=options, **common)
    if spec.kind == "bool":
        return w.Checkbox(value=value, indent=True, **common)
    if spec.kind == "int":
        low = int(spec.low) if spec.low is not None else -int(big)
        high = int(spec.high) if spec.high is not None else int(big)
        step = int(spec.step or 1)
        if spec.low is not None and spec.high is not None:
            return w.IntSlider(value=value, min=low, max=high, step=step, **common)
        return w.BoundedIntText(value=value, min=low, max=high, step=step, **common)
    if spec.kind == "float":
        low = spec.low if spec.low is not None else -big
        high = spec.high if spec.high is not None else big
        if spec.low is not None and spec.high is not None:
            return w.FloatSlider(value=value, min=low, max=high, step=spec.step or (high - low) / 100, **common)
        return w.BoundedFloatText(value=value, min=low, max=high, step=spec.step or 0.5, **common)
    return w.Text(value=str(value), **common)


def value_of(spec: Field, widget):
    """The widget's value in the field's type (open choices are typed as text)."""
    value = widget.value
    if spec.kind == "choice" and spec.open and not isinstance(spec.default, str):
        return type(spec.default)(value)
    return value
