"""The shipped reference model: loads offline, stays within size limits, and draws what it is asked."""
from pathlib import Path

import torch

from workbench.models import load_pipeline
from workbench.paths import REFERENCE_CLIP, REFERENCE_SD
from workbench.world import render as world
from workbench.world.render import evaluation_prompts


def test_shipped_files_are_within_the_size_limits():
    files = [p for p in REFERENCE_SD.parent.rglob("*") if p.is_file()]
    assert max(p.stat().st_size for p in files) <= 16 * 2**20
    assert sum(p.stat().st_size for p in files) <= 60 * 2**20


def test_pipeline_and_clip_load_offline_with_from_pretrained():
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPProcessor

    pipe = StableDiffusionPipeline.from_pretrained(REFERENCE_SD, local_files_only=True)
    assert pipe.safety_checker is None and pipe.vae.config.scaling_factor != 1.0
    CLIPModel.from_pretrained(REFERENCE_CLIP, local_files_only=True)
    CLIPProcessor.from_pretrained(REFERENCE_CLIP, local_files_only=True)


def test_generations_are_aligned_with_their_prompts():
    from workbench.knobs import scheduler
    from workbench.config import TrialConfig
    from workbench.measure.alignment import ZeroShotWorld
    from workbench.measure.clip_score import load_clip
    from workbench.trial import generate

    cfg = TrialConfig(scheduler="dpm++2m", steps=15, seeds="0-23")
    pipe = load_pipeline("reference")
    scheduler.call(pipe, cfg)
    prompts = [p for p in (Path(__file__).parents[1] / "workbench/assets/prompts/world-v1.txt").read_text().splitlines()][:24]
    images = generate(pipe, cfg, prompts, cfg.seed_list, 64, torch.device("cpu"))
    model, processor = load_clip("reference")
    acc = ZeroShotWorld(model, processor.tokenizer).accuracy(images.float() / 255, prompts)
    assert acc["garment"] >= 0.6 and acc["colour"] >= 0.75 and acc["position"] >= 0.85, acc


def test_reference_clip_recognises_real_world_images():
    from workbench.measure.alignment import ZeroShotWorld
    from workbench.measure.clip_score import load_clip

    scene = world.sample_scenes("test", 200, seed=0)
    model, processor = load_clip("reference")
    acc = ZeroShotWorld(model, processor.tokenizer).accuracy(world.render(scene, "test"), scene.captions())
    assert acc["garment"] >= 0.75 and acc["colour"] >= 0.95 and acc["position"] >= 0.95, acc


def test_world_is_deterministic_and_the_prompt_file_is_its_versioned_output():
    a = world.render(world.sample_scenes("test", 16, seed=3), "test")
    b = world.render(world.sample_scenes("test", 16, seed=3), "test")
    assert torch.equal(a, b) and a.shape == (16, 3, 64, 64)
    shipped = (Path(__file__).parents[1] / "workbench/assets/prompts/world-v1.txt").read_text().splitlines()
    assert shipped == evaluation_prompts(200)
    assert all(world.parse_caption(p) is not None for p in shipped)


def test_tokenizer_keeps_every_world_word_whole():
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(REFERENCE_SD / "tokenizer")
    ids = tok("a small red ankle boot in the top left on a beige background").input_ids
    assert len(ids) == 2 + 13  # start, 13 words, end
