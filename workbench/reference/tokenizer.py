"""A small CLIP BPE tokenizer for the captioned world, in the exact file format of OpenAI CLIP's.

CLIP's BPE (Radford et al., 2021) starts from the 256 byte symbols (and their end-of-word forms) and
applies ranked merges. Here the merges are written so that every word of the world's vocabulary becomes one
token; any other text still tokenizes, into byte symbols, so the tokenizer never fails on user prompts.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from workbench.world.render import TEMPLATES, VOCAB

MAX_LENGTH = 32  # the longest template caption is 20 tokens with start and end


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def world_words() -> list[str]:
    """Every word the captions use, split the way CLIP's pre-tokenizer splits them."""
    pattern = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")
    text = " ".join(" ".join(v) for v in VOCAB.values()) + " " + " ".join(TEMPLATES)
    text = re.sub(r"\{\w+\}", " ", text)
    return sorted(set(pattern.findall(text.lower())))


def write_tokenizer(folder: str | Path, max_length: int = MAX_LENGTH) -> Path:
    """Write vocab.json, merges.txt and the tokenizer config of a CLIPTokenizer into `folder`.

    `max_length`: the padded prompt length (77 for the published Stable Diffusion architectures)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in world_words():
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        prefix = parts[0]
        for nxt in parts[1:]:
            pair = (prefix, nxt)
            prefix = prefix + nxt
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(prefix, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": max_length, "do_lower_case": True,
              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>", "errors": "replace"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2))
    return folder
