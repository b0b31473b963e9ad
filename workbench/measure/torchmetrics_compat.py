"""The one place that reaches into torchmetrics' private parts, pinned by pyproject (torchmetrics>=1.9,<1.10).

`per_image_clip_scores` calls `torchmetrics.functional.multimodal.clip_score._clip_score_update`, which returns the
per-image scores that the public `CLIPScore` / `clip_score` only hand back as a mean (a spread needs each image's
score). The public API that would replace it: `torchmetrics.functional.multimodal.clip_score(..., reduction=None)`
if torchmetrics adds a reduction argument; until then, per-image calls of the public function (N times slower).
tests/test_compat.py fails loudly if the pinned version moves it.
"""
from __future__ import annotations

from torchmetrics.functional.multimodal.clip_score import _clip_score_update as _update


def per_image_clip_scores(images: list, prompts: list[str], model, processor):
    """(scores [N], n) for images and prompts: torchmetrics' CLIP score before its mean (100 * cos per image)."""
    return _update(images, prompts, model, processor)
