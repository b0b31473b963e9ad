"""What a compressed artifact is asked for: the methods, modes and components there are, and the specs that key a build.

Plain data without torch: the knobs import it to validate and offer the same values the builders accept.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

PRUNE_METHODS = ("channels-magnitude", "channels-taylor", "heads", "blocks")
MAX_PRUNE_RATIO = 0.75
COMPONENTS = ("unet", "text_encoder", "vae_decoder")           # what can be exported, ranked and quantised
IMPORTANCE_METHODS = ("actgrad", "sensitivity", "random")
QUANT_MODES = ("ptq", "qat")
QUANT_PRESETS = ("mixed", "performance")   # NNCF: asymmetric | symmetric activations (weights symmetric in both)


def named_components(text: str) -> list[str]:
    """The names in a comma-separated component list ('unet, vae_decoder'), as written (blanks kept for checks)."""
    return [c.strip() for c in text.split(",")]


@dataclass(frozen=True)
class PruneSpec:
    method: str
    ratio: float
    recovery_steps: int = 0
    recovery_data: str = "teacher"   # "teacher" (data-free) or a folder of images + captions

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuantSpec:
    mode: str                 # ptq | qat
    keep: float               # fraction of the component's rankable layers kept in float, most important first
    importance: str           # the ranking method (IMPORTANCE_METHODS)
    preset: str = "mixed"
    qat_steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
