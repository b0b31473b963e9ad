"""A pipeline call recorded whole after its prompt encoding: every step's UNet call, the sampler's updates, the VAE
decode and the post-processing replayed as one CUDA graph (`compile_scope: loop-captured`).

    record_calls(pipe)                      # the pipeline's class gains a __call__ that routes through the graphs
    pipe(prompts, generator=..., output_type="pt", _workbench_loop=key)   # key: the call-time settings

With the UNet alone in CUDA graphs (reduce-overhead), an SD1.5 image at batch 1 on an H100 still spends ~8 ms of its
~150 in host gaps: around each of the 20 UNet replays, in the sampler's small kernels and its host-to-device copies
(docs/gpu.md, "Where SD1.5's CFG step goes"). Here the host encodes the prompt (the text encoders replay their own
graphs, as under all-captured) and draws the initial noise from the call's generators exactly as diffusers'
`prepare_latents` does; both are copied into the graph's inputs and one replay does the rest. The graph is recorded
with diffusers' own `__call__`, given the embeddings and the noise (so its code is diffusers', not a copy), the
first time a signature is seen: the embeddings' and latents' shapes, the call-time settings the compile knob passes
(scheduler, steps, CFG scale and schedule, cutoff), the sampler's class and config, and the output size.

Recording a graph keeps what it reads from outside its memory pool alive and fixed, so two host-to-device copies
diffusers makes inside the call are made once, before the capture, and their device tensors kept: the sampler's
timesteps (its `set_timesteps` runs once per schedule; later calls restore the state it left) and SDXL's added time
ids (`_get_add_time_ids`). Anything else that reads a tensor back to the host or copies one in (a stochastic sampler's
noise, early stop's check, a sampler that looks its step up on the device) makes the capture fail, and
`CaptureError` names it; the compile knob refuses the known cases in one line before any model is loaded.
"""
from __future__ import annotations

import contextlib
import copy

from workbench.knobs._captured import CapturedForward, running_plain
from workbench.models import _same_name_subclass

KEY = "_workbench_loop"  # the call's keyword argument that asks for a recorded call: its call-time settings
# arguments of diffusers' call the recorder does not make itself: a call that gives any of them runs unrecorded
PLAIN_ONLY = ("prompt_2", "negative_prompt_2", "prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
              "negative_pooled_prompt_embeds", "latents", "num_images_per_prompt", "timesteps", "sigmas",
              "ip_adapter_image", "ip_adapter_image_embeds", "cross_attention_kwargs", "guidance_rescale")
_RECORDING: dict[type, type] = {}  # pipeline class -> its subclass whose calls go through LoopRecorder


class LoopRecorder:
    """One pipeline's recorded calls: a CUDA graph per signature (`graphs`), and what their captures keep fixed."""

    def __init__(self, pipe, original_call, instead: str):
        self.pipe = pipe
        self.original_call = original_call  # diffusers' own __call__ (unbound)
        self.graphs = CapturedForward(self._denoise_and_decode, "the steps, sampler and decode of a pipeline call",
                                      scope="loop-captured", instead=instead)
        self.schedules: dict = {}  # (sampler, config, steps, device, ...) -> the sampler's state after set_timesteps
        self.time_ids: dict = {}   # SDXL: _get_add_time_ids' arguments -> its result, on the device
        self._call: dict = {}      # this call's other arguments, read while a graph is recorded

    def __call__(self, key, prompt=None, *, negative_prompt=None, generator=None, height=None, width=None,
                 output_type="pil", return_dict=True, **kwargs):
        from diffusers.utils.torch_utils import randn_tensor  # heavy

        pipe = self.pipe
        device = pipe._execution_device
        guided = kwargs.get("guidance_scale", 7.5) > 1 and pipe.unet.config.time_cond_proj_dim is None
        encoded = pipe.encode_prompt(prompt=prompt, device=device, num_images_per_prompt=1,
                                     do_classifier_free_guidance=guided, negative_prompt=negative_prompt)
        names = {2: ("prompt_embeds", "negative_prompt_embeds"),
                 4: ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds",
                     "negative_pooled_prompt_embeds")}.get(len(encoded))
        if names is None:
            raise TypeError(f"compile_scope: loop-captured records SD and SDXL pipelines; {type(pipe).__name__}'s "
                            f"encode_prompt returned {len(encoded)} tensors")
        embeds = dict(zip(names, encoded))
        scale = pipe.vae_scale_factor
        height = height or pipe.unet.config.sample_size * scale
        width = width or pipe.unet.config.sample_size * scale
        batch = embeds["prompt_embeds"].shape[0]
        # the initial noise as diffusers' prepare_latents draws it (same generators, shape and dtype: same images)
        noise = randn_tensor((batch, pipe.unet.config.in_channels, int(height) // scale, int(width) // scale),
                             generator=generator, device=device, dtype=embeds["prompt_embeds"].dtype)
        inner = "latent" if output_type == "latent" else "pt"
        signature = (tuple(key), *_sampler_ident(pipe.scheduler), int(height), int(width), inner)
        self._call = {"height": height, "width": width, "output_type": inner, **kwargs}
        try:
            images = self.graphs(signature, embeds, noise)
        finally:
            self._call = {}
        if output_type in ("np", "pil"):
            images = pipe.image_processor.pt_to_numpy(images)
            images = pipe.image_processor.numpy_to_pil(images) if output_type == "pil" else images
        if not return_dict:
            return (images, None) if len(names) == 2 else (images,)
        if len(names) == 2:
            from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput  # heavy

            return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=None)
        from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput  # heavy

        return StableDiffusionXLPipelineOutput(images=images)

    def _denoise_and_decode(self, signature, embeds: dict, latents):
        """diffusers' own call from the given embeddings and noise to the decoded images (or final latents). A
        recording runs it several times in one pipeline call (warm-up, capture): a UNet that counts its steps
        (feature caching's) starts a new loop each time, as each pipeline call starts one."""
        start = getattr(self.pipe.unet, "start", None)
        if callable(start):
            start()
        with self._fixed_schedule(), self._fixed_time_ids():
            out = self.original_call(self.pipe, latents=latents, return_dict=False, **embeds, **self._call)
        return out[0]

    @contextlib.contextmanager
    def _fixed_schedule(self):
        """The sampler's `set_timesteps` run once per schedule; later calls restore the state it left (the same
        device tensors, fresh lists), so no host-to-device copy happens while a graph is recorded."""
        sampler = self.pipe.scheduler
        ident = _sampler_ident(sampler)

        def set_timesteps(num_inference_steps=None, device=None, *args, **kwargs):
            key = (ident, num_inference_steps, str(device), repr(args), repr(sorted(kwargs.items())))
            if key not in self.schedules:
                type(sampler).set_timesteps(sampler, num_inference_steps, device, *args, **kwargs)
                self.schedules[key] = {k: v for k, v in vars(sampler).items() if k != "set_timesteps"}
            state = {k: copy.copy(v) if isinstance(v, (list, dict)) else v for k, v in self.schedules[key].items()}
            vars(sampler).clear()
            vars(sampler).update(state, set_timesteps=set_timesteps)

        sampler.set_timesteps = set_timesteps
        try:
            yield
        finally:
            vars(sampler).pop("set_timesteps", None)

    @contextlib.contextmanager
    def _fixed_time_ids(self):
        """SDXL's added time ids (built on the host, then copied to the device in the call) made once per argument
        set, on the device."""
        pipe = self.pipe
        if not hasattr(type(pipe), "_get_add_time_ids"):
            yield
            return
        made = type(pipe)._get_add_time_ids

        def time_ids(*args, **kwargs):
            key = repr((args, sorted(kwargs.items())))
            if key not in self.time_ids:
                self.time_ids[key] = made(pipe, *args, **kwargs).to(pipe._execution_device)
            return self.time_ids[key]

        pipe._get_add_time_ids = time_ids
        try:
            yield
        finally:
            vars(pipe).pop("_get_add_time_ids", None)


def record_calls(pipe, instead: str = "unet+vae") -> LoopRecorder:
    """Give the pipeline a class whose calls with `_workbench_loop=<key>` go through recorded graphs (others, e.g.
    a calibration call, or one that gives its own embeddings or latents, run diffusers' own call unchanged)."""
    cls = type(pipe)
    if cls not in _RECORDING.values():
        if cls not in _RECORDING:
            def __call__(self, *args, **kwargs):
                import torch  # heavy

                key = kwargs.pop(KEY, None)
                recorder = self.__dict__.get("_workbench_loop_recorder")
                if key is None or recorder is None or running_plain() or _unrecorded(args, kwargs):
                    return super(_RECORDING[cls], self).__call__(*args, **kwargs)
                with torch.no_grad():  # as diffusers' own __call__
                    return recorder(key, *args, **kwargs)

            _RECORDING[cls] = _same_name_subclass(cls, __call__=__call__)
        pipe.__class__ = _RECORDING[cls]
    original = super(type(pipe), pipe).__call__.__func__
    recorder = pipe.__dict__["_workbench_loop_recorder"] = LoopRecorder(pipe, original, instead)
    return recorder


def _sampler_ident(sampler) -> tuple[str, str]:
    """The sampler's class and config: part of a recorded call's signature and of a kept schedule's key."""
    return type(sampler).__qualname__, repr(sorted(dict(sampler.config).items()))


def _unrecorded(args, kwargs) -> bool:
    """Whether a call asks for something the recorder does not make itself: positional arguments past the prompt,
    its own embeddings or latents, several images a prompt, ..."""
    defaults = {"num_images_per_prompt": 1, "guidance_rescale": 0.0}
    if len(args) > 1:
        return True
    for name in PLAIN_ONLY:
        value = kwargs.get(name)
        if value is not None and not (isinstance(value, (int, float)) and value == defaults.get(name)):
            return True
    return False


def recorder_of(pipe) -> LoopRecorder | None:
    return pipe.__dict__.get("_workbench_loop_recorder")
