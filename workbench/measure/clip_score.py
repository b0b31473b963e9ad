"""CLIP score (Hessel et al., 2021) through torchmetrics' CLIPScore, with a local CLIP model.

torchmetrics reports 100 * max(cos, 0) between image and caption embeddings; the CLIP used is recorded with
every value (the bundled reference CLIP by default, as SD1.x pairs its text encoder with CLIP ViT-L/14).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from workbench.measure.alignment import as_features
from workbench.models import REFERENCE_CLIP


def clip_folder(name: str) -> Path:
    return REFERENCE_CLIP if name == "reference" else Path(name)


class _TensorFeatures(torch.nn.Module):
    """transformers 5 returns model outputs from get_*_features; torchmetrics 1.9 expects tensors."""

    def __init__(self, clip):
        super().__init__()
        self.clip, self.config = clip, clip.config

    def get_image_features(self, *args, **kwargs):
        return as_features(self.clip.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return as_features(self.clip.get_text_features(*args, **kwargs))


@lru_cache(maxsize=2)
def load_clip(name: str):
    """(CLIPModel, CLIPProcessor) from a local folder, offline."""
    from transformers import CLIPModel, CLIPProcessor

    folder = clip_folder(name)
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    return model, CLIPProcessor.from_pretrained(folder, local_files_only=True)


def clip_score(images: torch.Tensor, prompts: list[str], clip_name: str, batch: int = 64) -> float:
    """Mean torchmetrics CLIPScore of uint8 images [N, 3, H, W] against their prompts."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = load_clip(clip_name)
    metric = CLIPScore(model_name_or_path=lambda: (_TensorFeatures(model), processor))
    for i in range(0, len(images), batch):
        metric.update(images[i:i + batch], prompts[i:i + batch])
    return float(metric.compute())
