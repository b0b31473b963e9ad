"""A prompt-embedding cache: the text encoders' outputs per (text encoders, prompt, precision, device), reused
across batches, trials and the explorer's presses.

The pipeline's own `encode_prompt` is wrapped on the instance: prompts seen before are served from memory or from
disk (`results/prompt-cache/<encoders>/<prompt key>.pt`, so a fresh papermill kernel hits too), the others are
encoded together in one call and stored. Every output of `encode_prompt` is kept per prompt (SD: conditional and
unconditional embeddings; SDXL: also both pooled embeddings), so what the pipeline receives is exactly what it
would have computed. Calls the cache cannot key (negative prompts, LoRA scales, precomputed embeddings) go to the
encoder untouched. The encoders are identified by their classes, configs, dtypes and a strided sample of every
weight tensor (cheap at SDXL's 0.8 B text-encoder parameters; a changed encoder changes the key).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from pathlib import Path

import torch

ENCODERS = ("text_encoder", "text_encoder_2")
_MEMORY: dict[tuple, tuple] = {}   # (encoders, prompt key) -> (outputs per prompt, seconds it took to encode)


def encoder_fingerprint(pipe, samples: int = 4096) -> str:
    """Hash of the text encoders (class, config, dtype, device type, every weight's shape and a strided sample)."""
    h = hashlib.sha256()
    for name in ENCODERS:
        module = getattr(pipe, name, None)
        if module is None:
            continue
        h.update(f"{name}:{type(module).__name__}:{json.dumps(module.config.to_dict(), sort_keys=True, default=str)}"
                 .encode())
        for key, t in sorted(module.state_dict().items()):
            flat = t.detach().flatten()
            picked = flat[::max(1, flat.numel() // samples)][:samples].to("cpu", torch.float32).contiguous()
            h.update(f"{key}:{tuple(t.shape)}:{t.dtype}:{t.device.type}".encode() + picked.numpy().tobytes())
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is not None:
        h.update(f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.model_max_length}".encode())
    return h.hexdigest()[:16]


class PromptCache:
    """The caching `encode_prompt` of one pipeline, with its hit and miss counts."""

    def __init__(self, pipe, folder: Path | None):
        self.encode = pipe.encode_prompt
        self.signature = inspect.signature(self.encode)
        self.encoders = encoder_fingerprint(pipe)
        self.folder = folder / self.encoders if folder is not None else None
        self.hits = self.misses = self.bypassed = 0
        self.saved_s = 0.0    # encoder seconds the hits did not spend (as measured when each entry was made)

    def __call__(self, *args, **kwargs):
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        prompts = a.get("prompt")
        plain = (isinstance(prompts, (str, list)) and a.get("num_images_per_prompt", 1) == 1
                 and all(a.get(k) is None for k in ("prompt_2", "negative_prompt", "negative_prompt_2",
                                                    "prompt_embeds", "negative_prompt_embeds",
                                                    "pooled_prompt_embeds", "negative_pooled_prompt_embeds",
                                                    "lora_scale")))
        if not plain:
            self.bypassed += 1
            return self.encode(*args, **kwargs)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        options = {"cfg": bool(a.get("do_classifier_free_guidance")), "clip_skip": a.get("clip_skip"),
                   "device": str(torch.device(a.get("device") or "cpu"))}
        keys = [hashlib.sha256(json.dumps([p, options], sort_keys=True).encode()).hexdigest()[:24] for p in prompts]
        rows = {k: self._load(k) for k in dict.fromkeys(keys)}
        missing = [k for k, v in rows.items() if v is None]
        if missing:
            texts = [prompts[keys.index(k)] for k in missing]
            t0 = time.perf_counter()
            outputs = self.encode(**{**a, "prompt": texts})
            seconds = (time.perf_counter() - t0) / len(texts)
            for i, k in enumerate(missing):
                rows[k] = (tuple(None if o is None else o[i:i + 1].detach() for o in outputs), seconds)
                self._store(k, rows[k])
        for k in keys:
            if k not in missing:
                self.hits += 1
                self.saved_s += rows[k][1]
        self.misses += len(missing)
        per_prompt = [rows[k][0] for k in keys]
        return tuple(None if per_prompt[0][j] is None else torch.cat([r[j] for r in per_prompt])
                     for j in range(len(per_prompt[0])))

    def _load(self, key: str):
        if (self.encoders, key) in _MEMORY:
            return _MEMORY[(self.encoders, key)]
        path = self.folder / f"{key}.pt" if self.folder is not None else None
        if path is None or not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged entry is a miss, and is rewritten
            return None
        device = torch.device(entry["device"])
        row = (tuple(None if t is None else t.to(device) for t in entry["outputs"]), entry["seconds"])
        _MEMORY[(self.encoders, key)] = row
        return row

    def _store(self, key: str, row) -> None:
        _MEMORY[(self.encoders, key)] = row
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        outputs = row[0]
        device = next(str(t.device) for t in outputs if t is not None)
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        torch.save({"outputs": [None if t is None else t.cpu() for t in outputs], "seconds": row[1], "device": device},
                   tmp)
        os.replace(tmp, self.folder / f"{key}.pt")  # whole or absent, when workers share the folder
