"""Model knob: which pipeline a trial loads (the bundled reference model, a tiny random one, an architecture preset
with random weights, an SD or SDXL diffusers folder or a hub id). Loading itself is the trial's first step
(`workbench.models.load_pipeline`)."""
from __future__ import annotations

from workbench.knobs.spec import Field
from workbench.models import MEANINGLESS, check_model_source

FIELDS = (Field("model", "reference", "reference (bundled), a random-weight preset (cost real, quality meaningless), "
                "an SD or SDXL diffusers folder, or a hub id (online only)",
                choices=("reference", *MEANINGLESS), open=True),)


def check(cfg, where: str = "config") -> None:
    """A folder that is not a loadable pipeline, or a hub id neither cached nor reachable: one line, before any work."""
    check_model_source(cfg.model, f"{where}.model")
