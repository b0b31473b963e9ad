"""CLIP score (Hessel et al., 2021) through torchmetrics' CLIPScore, with a local CLIP model.

torchmetrics reports 100 * max(cos, 0) between image and caption embeddings; the CLIP used is recorded with
every value (the bundled reference CLIP by default, as SD1.x pairs its text encoder with CLIP ViT-L/14).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from workbench import quiet
from workbench.measure.alignment import as_features
from workbench.paths import REFERENCE_CLIP
from workbench.measure.torchmetrics_compat import per_image_clip_scores


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
    from transformers import CLIPModel, CLIPProcessor  # heavy

    quiet.install()
    folder = clip_folder(name)
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    return model, CLIPProcessor.from_pretrained(folder, local_files_only=True)


def clip_scores(images: torch.Tensor, prompts: list[str], clip_name: str) -> torch.Tensor:
    """Per-image torchmetrics CLIP score (100 * cos, before torchmetrics' clamp of the mean at 0), float64 [N]."""
    model, processor = load_clip(clip_name)
    with torch.no_grad():
        score, _ = per_image_clip_scores(list(images), prompts, _TensorFeatures(model), processor)
    return score.detach().double().cpu()


def clip_score(images: torch.Tensor, prompts: list[str], clip_name: str, batch: int = 64) -> float:
    """Mean torchmetrics CLIPScore of uint8 images [N, 3, H, W] against their prompts."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    model, processor = load_clip(clip_name)
    metric = CLIPScore(model_name_or_path=lambda: (_TensorFeatures(model), processor))
    for i in range(0, len(images), batch):
        metric.update(images[i:i + batch], prompts[i:i + batch])
    return float(metric.compute())


@torch.no_grad()
def image_embeddings(images: torch.Tensor, clip_name: str, device: torch.device | str | None = None,
                     batch: int = 64) -> torch.Tensor:
    """CLIP image embeddings (the projection output, float32, CPU) of uint8 images, preprocessed by the CLIP's
    own processor as torchmetrics' CLIPScore does, `batch` images at a time; CMMD's input."""
    model, processor = load_clip(clip_name)
    device = torch.device(device or images.device)
    model.to(device)
    out = []
    for i in range(0, len(images), batch):
        chunk = [img.cpu() for img in images[i:i + batch]]
        pixels = processor(images=chunk, return_tensors="pt")["pixel_values"].to(device)
        out.append(as_features(model.get_image_features(pixel_values=pixels)).float().cpu())
    return torch.cat(out)


def identity(clip_name: str) -> str:
    """A cache key for a CLIP: its folder, config and weight file sizes (a retrained CLIP gets a new key)."""
    folder = clip_folder(clip_name).resolve()
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return f"{folder}|" + "|".join(f"{p.name}:{p.stat().st_size}" for p in files)
