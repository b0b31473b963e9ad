"""Model sources: the bundled reference model, a tiny random pipeline, an architecture preset with random weights
(`workbench.presets`), a local diffusers folder or a hub id; Stable Diffusion (1.x, 2.x) and SDXL alike.

    pipe = load_pipeline("reference")     # a fresh fp32 pipeline on the CPU; every trial builds its own

Checking a source, and telling SD from SDXL (`model_family`), imports nothing heavy (the knobs validate with them);
loading imports diffusers.
"""
from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

from workbench import paths
from workbench.errors import ConfigError
from workbench import quiet
from workbench.presets import PRESETS, preset_pipeline

# random weights: latency is real, quality numbers measure nothing
MEANINGLESS = ("tiny-random", *PRESETS)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
FOLDER = "a diffusers StableDiffusionPipeline or StableDiffusionXLPipeline folder (save_pretrained output)"


def check_model_source(model: str, field: str = "model") -> str:
    """Classify a model source ('reference' | 'tiny-random' | a preset's name | 'folder' | 'hub') or raise one line."""
    if model == "reference" or model in MEANINGLESS:
        return model
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ConfigError(f"{field}: folder {model!r} has no model_index.json; point it at {FOLDER}")
        check_pipeline_folder(path, field)
        return "folder"
    if HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        check_hub_id(model, field)
        return "hub"
    raise ConfigError(f"{field}: folder {model!r} does not exist; use 'reference', a preset "
                      f"({', '.join(MEANINGLESS)}), a diffusers pipeline folder or a hub id (org/name)")


SD_COMPONENTS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                 "tokenizer": None, "scheduler": "scheduler_config.json"}
SDXL_COMPONENTS = {**SD_COMPONENTS, "text_encoder_2": "config.json", "tokenizer_2": None}
LAYOUTS = {"sd": ("Stable Diffusion", SD_COMPONENTS), "sdxl": ("Stable Diffusion XL", SDXL_COMPONENTS)}


def index_family(index: dict) -> str:
    """'sdxl' for a StableDiffusionXL* pipeline's model_index.json (or one naming text_encoder_2), else 'sd'."""
    return "sdxl" if str(index.get("_class_name", "")).startswith("StableDiffusionXL") or "text_encoder_2" in index \
        else "sd"


def read_index(path: Path, field: str = "model") -> dict:
    """A folder's model_index.json as a mapping, or one line saying how to mend it."""
    try:
        index = json.loads((path / "model_index.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{field}: {path}/model_index.json is not valid JSON ({e}); re-save the pipeline with "
                          "save_pretrained") from None
    if not isinstance(index, dict):
        raise ConfigError(f"{field}: {path}/model_index.json is not a mapping; re-save the pipeline with "
                          "save_pretrained")
    return index


def check_pipeline_folder(path: Path, field: str = "model") -> None:
    """A diffusers SD folder names and holds unet, vae, text_encoder, tokenizer and scheduler; an SDXL folder (its
    model_index.json says StableDiffusionXLPipeline) text_encoder_2 and tokenizer_2 too."""
    index = read_index(path, field)
    label, components = LAYOUTS[index_family(index)]
    for component, config in components.items():
        if component not in index:
            raise ConfigError(f"{field}: folder {str(path)!r} is not a {label} pipeline: model_index.json names no "
                              f"{component!r}; give {FOLDER}")
        folder = path / component
        if not folder.is_dir() or (config and not (folder / config).is_file()):
            what = f"{component}/{config}" if config else f"{component}/"
            raise ConfigError(f"{field}: folder {str(path)!r} is not a loadable {label} pipeline: "
                              f"{what} is missing; copy the whole save_pretrained output")


def model_family(model: str, field: str = "model") -> str:
    """'sd' or 'sdxl': from the preset, the folder's model_index.json or a hub id's (cached, else that one small
    file fetched); imports no torch, so a knob's check can refuse what it cannot handle before any work."""
    if model in ("reference", "tiny-random"):
        return "sd"
    if model in PRESETS:
        return PRESETS[model].family
    path = Path(model).expanduser()
    return index_family(read_index(path if path.is_dir() else _hub_folder(model, field), field))


@lru_cache(maxsize=32)
def _hub_folder(model: str, field: str) -> Path:
    """The folder holding a hub id's model_index.json (the local cache; fetched into it when online)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(model, "model_index.json")
    if not isinstance(cached, str):
        try:
            cached = hf_hub_download(model, "model_index.json")
        except Exception as e:  # noqa: BLE001 - offline, no such repo, gated: the same for the user
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ConfigError(f"{field}: cannot read {model!r}'s model_index.json ({reason}); download the model "
                              "while online or pass a local diffusers folder") from None
    return Path(cached).parent


@lru_cache(maxsize=32)
def check_hub_id(model: str, field: str = "model") -> None:
    """A hub id must be in the local cache or the hub reachable now; otherwise say so before any work starts."""
    from huggingface_hub import HfApi, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "model_index.json"), str):
        return
    offline = f"{field}: {model!r} is a hub id that is not in the local Hugging Face cache and "
    fix = "; download it while online (huggingface-cli download) or pass a local diffusers folder"
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(offline + "HF_HUB_OFFLINE=1" + fix)
    try:
        HfApi().model_info(model, timeout=10)
    except Exception as e:  # noqa: BLE001 - any failure (no network, no such repo, gated) is the same for the user
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ConfigError(offline + f"the hub cannot be reached or has no such model ({reason})" + fix) from None


def quality_is_meaningful(model: str) -> bool:
    """Random weights give numbers that measure nothing about image quality."""
    return model not in MEANINGLESS


def load_pipeline(model: str, device=None):
    """A fresh fp32 StableDiffusionPipeline or StableDiffusionXLPipeline for the source; every trial builds its own.

    Pipelines load on the CPU; `device` (a torch.device or name, optional) is where an architecture preset is built
    directly, so a multi-billion-parameter random model never passes through the CPU (other sources ignore it: the
    trial moves the pipeline after the knobs). The model's own scheduler config is kept as
    `pipe.model_scheduler_config`: the scheduler knob builds every sampler from it, never from a swapped one.
    A pipeline `prepare_pipeline` loaded ahead for this source is taken instead of loading again (once: it is
    removed here, and one prepared for another source is dropped), marked `pipe.prepared = True`."""
    pipe = _PREPARED.pop(model, None)
    _PREPARED.clear()
    if pipe is None:
        pipe = _load(model, device)
    else:
        pipe.prepared = True
    pipe.model_scheduler_config = pipe.scheduler.config
    return pipe


def _same_name_subclass(cls: type, **members) -> type:
    """A subclass of `cls` that overrides `members` and otherwise passes for it (name, module, docstring), so
    diffusers' class-name checks, configs and reprs see the class they expect."""
    return type(cls.__name__, (cls,), {**members, "__module__": cls.__module__, "__doc__": cls.__doc__})


_PINNED: dict[type, type] = {}  # pipeline class -> its subclass that answers the execution device it was given


def pin_execution_device(pipe, device) -> None:
    """Make the pipeline answer `_execution_device` with `device` instead of searching for it on every call.

    diffusers (0.42) walks every submodule of every component on each pipeline call, looking for group-offloading
    and accelerate hooks: ~2,000 `hasattr`s for SD1.5, ~3 ms of host time before the first GPU kernel of every image
    (benchmarks.gpu_profile on an H100), more for SDXL. A trial's pipeline never offloads (the precision knob places
    every component on the trial's device), so its class becomes a subclass of the same name whose property returns
    that device; a component that carries offloading hooks at its top level (accelerate's `_hf_hook`, diffusers'
    `_diffusers_hook`) sends the question back to diffusers."""
    import torch  # heavy

    cls = type(pipe)
    if cls not in _PINNED.values():
        if cls not in _PINNED:
            search = cls._execution_device.fget

            def execution_device(self):
                pinned = self.__dict__.get("_workbench_device")
                offloaded = any(hasattr(m, "_hf_hook") or hasattr(m, "_diffusers_hook")  # `components` would
                                for m in vars(self).values() if isinstance(m, torch.nn.Module))  # inspect __init__
                return search(self) if pinned is None or offloaded else pinned

            _PINNED[cls] = _same_name_subclass(cls, _execution_device=property(execution_device))
        pipe.__class__ = _PINNED[cls]
    pipe.__dict__["_workbench_device"] = torch.device(device)


_SYNC_FREE: dict[type, type] = {}  # scheduler class -> its subclass whose steps never wait for the GPU


def sync_free_sampler(cls: type) -> type:
    """`cls`, or a subclass of the same name whose steps never make the host wait for the GPU.

    A step that synchronises the host with the device stops the host from queueing the next step while the GPU runs
    this one, so a CUDA-graphed loop pays the step's host time on top of its GPU time. diffusers' (0.42) samplers do
    it in three places (peers: huggingface/diffusers#9485, sgl-project/sglang#27440):
    - UniPC solves a small system for its corrector's coefficients (and its predictor's at order 3 and above) with
      `torch.linalg.solve`, whose CUDA implementation synchronises (torch's documentation) once a step. In the GPU
      sweeps UniPC trials spent a median 2.4-3.5 ms a step outside their timed stages, DDIM, Euler and DPM++ 2M
      0.4-1.0 ms on SD1.5 (`benchmarks/outside_stages.py`, docs/gpu-data/outside-stages.json). The subclass runs
      diffusers' own update methods with that call answered by `torch.linalg.solve_ex` (`solve` is `solve_ex` plus
      the error check that needs the sync, so the numbers are identical; the system is a Vandermonde matrix of
      distinct log-SNR ratios, never singular).
    - UniPC keeps its sigmas on the host and copies the ones a step needs to the device (`.to(device)`, 2-3 in each
      of its predictor and corrector), and a blocking host-to-device copy synchronises too (torch's `copy_`). The
      subclass keeps them on the device (copied once, asynchronously, when it sets the timesteps), so those copies
      are no-ops.
    - DPM-Solver++ and UniPC find the first step's index by looking its timestep up among the timesteps on the device
      (`nonzero`): one wait an image, 4.6-5.1 ms in `benchmarks.gpu_profile`'s SD1.5 traces. The subclass computes
      the same index on the host when it sets the timesteps (diffusers' `index_for_timestep` on the host copy, then
      `set_begin_index`; a pipeline that sets its own begin index, img2img, still overrides it), and copies them to
      the device asynchronously.
    Other samplers come back unchanged."""
    import types

    import diffusers  # heavy
    import torch

    multistep = (diffusers.UniPCMultistepScheduler, diffusers.DPMSolverMultistepScheduler)
    if not issubclass(cls, multistep) or cls in _SYNC_FREE.values():
        return cls
    if cls not in _SYNC_FREE:
        unipc = issubclass(cls, diffusers.UniPCMultistepScheduler)

        def set_timesteps(self, num_inference_steps=None, device=None, *args, **kwargs):
            if getattr(self, "solver_p", None) is not None:  # UniPC's optional predictor: diffusers' own path
                return cls.set_timesteps(self, num_inference_steps, device, *args, **kwargs)
            cls.set_timesteps(self, num_inference_steps, None, *args, **kwargs)  # on the host first
            if self.begin_index is None and len(self.timesteps):
                self.set_begin_index(int(self.index_for_timestep(self.timesteps[0])))
            if device is not None:
                self.timesteps = to_device(self.timesteps, device)
                if unipc:  # its updates copy sigmas to the device every step (`.to(device)`: a wait each): once here
                    self.sigmas = to_device(self.sigmas, device)

        methods = {"set_timesteps": set_timesteps}
        if unipc:
            stand_in = _Proxy(torch, linalg=_Proxy(torch.linalg, solve=_solve_unchecked))  # `torch`, as they see it
            for name in ("multistep_uni_p_bh_update", "multistep_uni_c_bh_update"):
                fn = getattr(cls, name)
                rebound = types.FunctionType(fn.__code__, {**fn.__globals__, "torch": stand_in}, fn.__name__,
                                             fn.__defaults__, fn.__closure__)  # diffusers' code, seeing our `torch`
                rebound.__kwdefaults__, rebound.__qualname__ = fn.__kwdefaults__, fn.__qualname__
                rebound.__doc__ = fn.__doc__
                methods[name] = rebound
        _SYNC_FREE[cls] = _same_name_subclass(cls, **methods)
    return _SYNC_FREE[cls]


class _Proxy:
    """A module's stand-in: its own names (each looked up once, then an attribute here) but the ones given."""

    def __init__(self, module, **overrides):
        self._module = module
        self.__dict__.update(overrides)

    def __getattr__(self, name):
        value = getattr(self._module, name)
        setattr(self, name, value)
        return value


def _solve_unchecked(a, b, *, left=True, out=None):
    """`torch.linalg.solve` without the error check whose CUDA implementation synchronises (`solve_ex`, same numbers)."""
    import torch  # heavy

    if out is not None:
        return torch.linalg.solve(a, b, left=left, out=out)
    return torch.linalg.solve_ex(a, b, left=left)[0]


def to_device(tensor, device):
    """`tensor` on `device`; onto a GPU without waiting for it (a blocking host-to-device copy synchronises the
    stream: torch's `copy_` calls `memcpy_and_sync`): through pinned memory, asynchronously."""
    import torch  # heavy

    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


_PREPARED: dict[str, object] = {}  # at most one pipeline, loaded ahead of its trial, taken by the next load


def prepare_pipeline(model: str) -> bool:
    """Load a model read from disk (the bundled one, a folder, a cached hub id) on the CPU ahead of its trial, for
    the next `load_pipeline` of that source to take; False for sources not prepared: architecture presets are built
    on the trial's device and tiny-random seeds torch's global generator, so they load in the trial as always."""
    kind = check_model_source(model)
    if kind not in ("reference", "folder", "hub"):
        return False
    _PREPARED.clear()
    _PREPARED[model] = _load(model)
    return True


def _load(model: str, device=None):
    quiet.install()  # before diffusers imports transformers' image processors
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # heavy: torch

    kind = check_model_source(model)
    if kind == "tiny-random":
        return tiny_random_pipeline()
    if kind in PRESETS:
        return preset_pipeline(kind, device)
    source = str(paths.REFERENCE_SD) if kind == "reference" else model
    if model_family(model) == "sdxl":
        cls, label, kwargs = StableDiffusionXLPipeline, "Stable Diffusion XL", {"add_watermarker": False}
    else:
        cls, label, kwargs = StableDiffusionPipeline, "Stable Diffusion", {"safety_checker": None,
                                                                           "requires_safety_checker": False}
    if kind != "hub":
        kwargs["local_files_only"] = True
    try:
        pipe = cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConfigError(f"model: {model!r} does not load as a {label} pipeline ({type(e).__name__}: "
                          f"{reason}); give {FOLDER} or hub id") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_random_pipeline(seed: int = 0):
    """A Stable Diffusion pipeline built from configs with random weights: 32x32 images, for tests."""
    import torch  # heavy
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from workbench.reference.architecture import NOISE_SCHEDULE  # heavy: diffusers
    from workbench.reference.tokenizer import write_tokenizer  # heavy: with the architecture above

    torch.manual_seed(seed)
    folder = paths.cache() / "tiny-tokenizer"
    tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(folder))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length, bos_token_id=len(tokenizer) - 2,
        eos_token_id=len(tokenizer) - 1, pad_token_id=len(tokenizer) - 1))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=2, norm_num_groups=16)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
                        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, norm_num_groups=16, sample_size=32)
    scheduler = PNDMScheduler(skip_prk_steps=True, **{k: v for k, v in NOISE_SCHEDULE.items()
                                                      if k not in ("prediction_type", "clip_sample")})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def native_resolution(pipe) -> int:
    """The image size a pipeline was trained at: UNet sample_size x the VAE's scale factor (SDXL 128 x 8 = 1024)."""
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def resolve_device(device: str):
    """'auto' -> CUDA when visible, else the CPU; any other name as a torch.device."""
    import torch  # heavy

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
