"""Compile knob: `torch.compile` of the UNet (and optionally the VAE decoder), with its mode and scope.

Modes are torch's: `default` (Inductor kernels), `max-autotune-no-cudagraphs` (autotuned matmul and convolution
choices), `reduce-overhead` (Inductor kernels replayed as CUDA graphs: the launch gaps of a 20-step loop go away).
Scopes: `unet`, `unet+vae` (also the VAE decoder), `all` (also the text encoders, with Inductor kernels but never
CUDA graphs: a prompt's conditional and unconditional encodings are two calls of one graph, and a replay would
overwrite the first's output; graph breaks allowed there), `blocks` (diffusers' regional compilation,
`compile_repeated_blocks`: each transformer block compiled once and reused, much shorter compile).
Shapes are static (`dynamic=False`): the CFG cutoff's half batch gets its own graph. Compiled code is cached on disk
(Inductor's FX-graph and AOTAutograd caches under `results/compile-cache/<torch>-<device>/`), so a second trial
of a configuration, in a fresh kernel, compiles from the cache; the trial reports the compile and first-call
cost as `compile_s`, never as latency.
`compile_tuning: tuned` adds the Inductor settings of diffusers' speed-up guide ("Accelerate inference of text-to-image
diffusion models"): 1x1 convolutions lowered to matmuls, coordinate-descent tuning of every Triton kernel's launch
configuration (checking all directions), no epilogue fusion. They are passed as `torch.compile(options=...)` on top
of the mode's own (`torch._inductor.list_mode_options`), so they hold for this trial's graphs only and are part of
the cache key; they lengthen the first compile.
"""
from __future__ import annotations

import os
import re

from workbench import paths
from workbench.errors import ConfigError
from workbench.knobs.spec import Field, Row

MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead")
SCOPES = ("unet", "unet+vae", "all", "blocks")
TUNINGS = ("none", "tuned")
TUNED = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "coordinate_descent_check_all_directions": True,
         "epilogue_fusion": False}
FIELDS = (
    Field("compile", "none", "none | default | max-autotune-no-cudagraphs | reduce-overhead (CUDA graphs): torch.compile",
          choices=MODES),
    Field("compile_scope", "unet", "unet | unet+vae (the decoder too) | all (the text encoders too) | blocks "
          "(regional: repeated blocks once)", choices=SCOPES),
    Field("compile_tuning", "none", "none | tuned (Inductor: 1x1 convolutions as matmuls, coordinate-descent tuning of "
          "Triton kernels, no epilogue fusion; a longer first compile)", choices=TUNINGS),
)


def check(cfg, where: str = "config") -> None:
    if cfg.compile != "none" and cfg.backend != "torch":
        raise ConfigError(f"{where}.compile: compiles torch modules; backend {cfg.backend} runs ONNX graphs. Set "
                          "compile: none or backend: torch")
    if cfg.compile == "reduce-overhead" and cfg.compile_scope == "blocks":
        raise ConfigError(f"{where}.compile_scope: CUDA graphs (compile: reduce-overhead) capture a whole module; "
                          "regional compilation leaves eager code between blocks. Use compile_scope: unet or "
                          "unet+vae, or compile: default")
    if cfg.compile_tuning != "none" and cfg.compile == "none":
        raise ConfigError(f"{where}.compile_tuning: tunes the kernels torch.compile generates and compile is none; set "
                          "compile: default (or another mode), or compile_tuning: none")


def check_device(cfg, device) -> None:
    if cfg.compile == "reduce-overhead" and device.type != "cuda":
        raise ConfigError(f"compile: reduce-overhead replays CUDA graphs and this trial runs on {device.type}; use "
                          "compile: default or none")


def cache_dir(device) -> str:
    """Inductor's cache for this torch version and device: compiled kernels are specific to both."""
    import torch  # heavy

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    name = re.sub(r"[^A-Za-z0-9.+-]+", "_", f"torch-{torch.__version__}-{where}")
    return str((paths.results() / "compile-cache" / name).resolve())


def apply(pipe, cfg, device) -> Row | None:
    """Compile in place of the modules (their hooks and attributes stay reachable through torch's wrapper)."""
    if cfg.compile == "none":
        return None
    import torch  # heavy

    # Inductor reads the variable whenever it caches, and sets it to its /tmp default on first use: a folder the user
    # chose is kept, torch's default is replaced (torch's private default_cache_dir; public: none, torch 2.11-2.13)
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # heavy

    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == os.path.abspath(default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir(device)
    mode = None if cfg.compile == "default" else cfg.compile
    inductor = {}
    if cfg.compile_tuning == "tuned":  # the mode's settings plus the tuning, as options (torch takes one or the other)
        from torch._inductor import list_mode_options  # heavy

        inductor = {**list_mode_options(cfg.compile), **TUNED}
        options = {"options": inductor, "fullgraph": True, "dynamic": False}
    else:
        options = {"mode": mode, "fullgraph": True, "dynamic": False}
    if cfg.compile_scope == "blocks":
        pipe.unet.compile_repeated_blocks(**options)
    elif getattr(pipe.unet, "compiles_itself", False):  # feature caching: its full and shallow paths, not its step count
        pipe.unet.compile(**options)
    else:
        pipe.unet = torch.compile(pipe.unet, **options)
    if cfg.compile_scope in ("unet+vae", "all"):
        pipe.vae.decoder = torch.compile(pipe.vae.decoder, **options)
    if cfg.compile_scope == "all":
        # graph breaks allowed: transformers installs its hidden-state capture hooks under a lock Dynamo cannot
        # trace (SDXL asks its encoders for hidden states; seen with transformers 5 on an H100)
        kernels = {**options, "fullgraph": False}  # Inductor kernels, never CUDA graphs (module docstring)
        if inductor:
            kernels["options"] = {k: v for k, v in inductor.items() if k != "triton.cudagraphs"}
        elif cfg.compile == "reduce-overhead":
            kernels["mode"] = None
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(pipe, name, None) is not None:
                setattr(pipe, name, torch.compile(getattr(pipe, name), **kernels))
    protocol = {"mode": cfg.compile, "scope": cfg.compile_scope, "tuning": cfg.compile_tuning,
                "inductor_options": inductor, "fullgraph": True, "dynamic": False,
                "text_encoders_graph_breaks": cfg.compile_scope == "all",
                "cache_dir": os.environ["TORCHINDUCTOR_CACHE_DIR"], "torch": torch.__version__,
                "compile_s": "seconds of the warm-up batch (compilation of every shape, first calls) minus the median "
                             "timed batch"}
    return Row(protocols={"compile": protocol})
