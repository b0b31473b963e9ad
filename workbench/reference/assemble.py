"""Assemble trained weight shards into the standard folders the workbench ships.

Output: `<dest>/sd` (a diffusers StableDiffusionPipeline: tokenizer, CLIP text encoder, UNet, KL autoencoder,
PNDM scheduler, no safety checker) and `<dest>/clip` (a transformers CLIPModel with its CLIPProcessor). Both load
with `from_pretrained(path)` and no network.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTextModel, CLIPTokenizer

from workbench.measure.alignment import CLIP_MEAN, CLIP_STD
from workbench.reference import architecture as arch
from workbench.reference.tokenizer import write_tokenizer
from workbench.world.render import IMAGE_SIZE

SHARD = "15MB"  # every shipped file stays under the 16 MiB limit on repository files


def _load_shards(folder: Path, prefix: str) -> dict:
    state = {}
    for shard in sorted(folder.glob(f"{prefix}-*.safetensors")):
        state.update(load_file(shard))
    if not state:
        raise FileNotFoundError(f"no {prefix}-*.safetensors shards in {folder}")
    return state


def assemble(shards: Path, dest: Path) -> None:
    """Build `dest/sd` and `dest/clip` from the exported shards of workbench.reference.train."""
    training = json.loads((shards / "training.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(dest / "_tokenizer"))
    shutil.rmtree(dest / "_tokenizer")

    clip = arch.build_clip(len(tokenizer))
    clip.load_state_dict(_load_shards(shards, "clip"))
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size=IMAGE_SIZE,
                                           image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD)),
        tokenizer=tokenizer)
    clip.save_pretrained(dest / "clip", max_shard_size=SHARD)
    processor.save_pretrained(dest / "clip")

    text_encoder = CLIPTextModel(clip.config.text_config)
    text_encoder.load_state_dict(clip.text_model.state_dict())
    vae = arch.build_vae()
    vae.load_state_dict(_load_shards(shards, "vae"))
    vae.register_to_config(scaling_factor=training["unet_meta.json"]["scaling_factor"])
    unet = arch.build_unet()
    unet.load_state_dict(_load_shards(shards, "unet"))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=arch.inference_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(dest / "sd", max_shard_size=SHARD)
    # As in SD1.x's folders: schedulers swapped in with from_config (DDIM, ...) must not clip x0 to [-1, 1].
    sched = dest / "sd" / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "clip_sample": False}, indent=2))
    (dest / "training.json").write_text(json.dumps(training, indent=1))


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("shards", type=Path, help="folder of exported shards and training.json")
    p.add_argument("dest", type=Path, help="where the sd/ and clip/ folders go")
    args = p.parse_args()
    assemble(args.shards, args.dest)
