"""Prompt-embedding cache knob: text-encoder outputs kept per (text encoders, prompt, precision, device) in memory
and under `results/prompt-cache/`, reused across batches, trials (papermill kernels too) and the explorer's
presses. The row gets the hit rate and the encoder seconds the hits saved. Thin: `workbench.skip.prompt_cache`."""
from __future__ import annotations

import weakref

from workbench import paths
from workbench.knobs.spec import Field, Row

FIELDS = (Field("prompt_cache", False, "reuse text-encoder outputs of prompts seen before (memory and disk)"),)
_CACHES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def apply(pipe, cfg, device) -> Row | None:
    """Wrap the pipeline's `encode_prompt` (after precision placed the encoders: their dtype is part of the key)."""
    if not cfg.prompt_cache:
        return None
    from workbench.skip.prompt_cache import PromptCache  # heavy: torch

    cache = _CACHES[pipe] = PromptCache(pipe, paths.results() / "prompt-cache")
    pipe.encode_prompt = cache
    return Row(protocols={"prompt_cache": {"encoders": cache.encoders, "folder": str(cache.folder)}})


def observe(pipe, cfg) -> Row | None:
    cache = _CACHES.get(pipe)
    if not cfg.prompt_cache or cache is None:
        return None
    looked_up = cache.hits + cache.misses
    return Row({"prompt_cache_hit_rate": cache.hits / looked_up if looked_up else None,
                "text_encoder_saved_s": cache.saved_s},
               {"prompt_cache": {"hits": cache.hits, "misses": cache.misses, "bypassed": cache.bypassed,
                                 "encoders": cache.encoders,
                                 "text_encoder_saved_s": "sum over hits of the encoder seconds per prompt measured "
                                                         "when each entry was made (all of the trial's calls)"}})
