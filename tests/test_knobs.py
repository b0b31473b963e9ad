import pytest
import torch

from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench import knobs
from workbench.knobs import guidance, precision, scheduler
from workbench.trial import generate

ALL = ["ddim", "pndm", "dpm++2m", "dpm++2m-karras", "dpm++sde", "dpm++2s", "unipc", "euler", "euler-a", "heun", "lms",
       "EulerDiscreteScheduler"]


def _cfg(**kw):
    return TrialConfig.from_dict({"model": "tiny-random", "steps": 3, "seeds": "0-1", **kw})


@pytest.mark.parametrize("name", ALL)
def test_every_scheduler_swaps_through_from_config_and_generates(tiny_pipe, name):
    cls, kwargs = scheduler.resolve(name)
    assert scheduler.call(tiny_pipe, _cfg(scheduler=name)) == {}  # call-time: the pipeline's scheduler is swapped
    pipe = tiny_pipe
    assert isinstance(pipe.scheduler, cls) and type(pipe.scheduler).__name__ == cls.__name__  # UniPC: a subclass
    for key, value in kwargs.items():
        assert pipe.scheduler.config[key] == value
    assert pipe.scheduler.config.num_train_timesteps == 1000  # the model's schedule is kept
    images = generate(pipe, _cfg(scheduler=name), ["a red bag in the center on a white background"] * 2, [0, 1], 32,
                      torch.device("cpu"))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8


def test_every_call_gets_a_fresh_sampler_never_one_a_previous_call_used(tiny_pipe):
    """The sampler is built once per configuration and deep-copied per call (host time a GPU image waits for): a
    multistep sampler's history from one image must not reach the next, so the same seed gives the same image."""
    cfg = _cfg(scheduler="dpm++2m", steps=4)
    prompts, seeds, cpu = ["a red bag"] * 2, [0, 1], torch.device("cpu")
    first = generate(tiny_pipe, cfg, prompts, seeds, 32, cpu)
    used = tiny_pipe.scheduler
    assert used.model_outputs[-1] is not None  # a used multistep sampler holds its history...
    second = generate(tiny_pipe, cfg, prompts, seeds, 32, cpu)
    assert tiny_pipe.scheduler is not used and torch.equal(first, second)  # ...and the next call never sees it
    scheduler.call(tiny_pipe, cfg)
    fresh = tiny_pipe.scheduler
    assert fresh.step_index is None and all(m is None for m in fresh.model_outputs)


def test_unipc_steps_without_the_synchronising_solve_and_samples_exactly_as_diffusers(tiny_pipe, monkeypatch):
    """UniPC's corrector solves its coefficients with torch.linalg.solve, which waits for a CUDA device every step; the
    knob's UniPC answers it with solve_ex: the same numbers, and the synchronising call is never made."""
    from diffusers import UniPCMultistepScheduler

    from workbench.models import sync_free_sampler

    config = tiny_pipe.scheduler.config
    stock = UniPCMultistepScheduler.from_config(config)
    free = sync_free_sampler(UniPCMultistepScheduler).from_config(config)
    assert type(free).__name__ == "UniPCMultistepScheduler" and isinstance(free, UniPCMultistepScheduler)
    assert sync_free_sampler(type(free)) is type(free) and sync_free_sampler(type(stock)) is type(free)

    def run(sampler):
        sampler.set_timesteps(8)
        g = torch.Generator().manual_seed(0)
        latents = torch.randn(2, 4, 8, 8, generator=g)
        for t in sampler.timesteps:
            latents = sampler.step(torch.randn(2, 4, 8, 8, generator=g), t, latents).prev_sample
        return latents

    expected = run(stock)
    solve = torch.linalg.solve
    calls = []
    monkeypatch.setattr(torch.linalg, "solve", lambda *a, **k: calls.append(1) or solve(*a, **k))
    assert torch.equal(run(free), expected) and calls == []  # the same trajectory, no synchronising solve
    run(UniPCMultistepScheduler.from_config(config))
    assert calls  # diffusers' own UniPC does call it (the test would pass vacuously otherwise)
    scheduler.call(tiny_pipe, _cfg(scheduler="unipc"))
    assert type(tiny_pipe.scheduler) is type(free)


@pytest.mark.parametrize("name", ["dpm++2m", "unipc"])
def test_multistep_samplers_find_their_first_step_on_the_host_and_generate_as_diffusers_own(tiny_pipe, monkeypatch,
                                                                                          name):
    """DPM-Solver++ and UniPC look their first step's index up among the timesteps on the device (a wait for the GPU);
    the knob's samplers know it from setting the timesteps on the host: same images as diffusers' own samplers."""
    cfg = _cfg(scheduler=name, steps=5)
    prompts, seeds, cpu = ["a red bag"] * 2, [0, 1], torch.device("cpu")
    ours = generate(tiny_pipe, cfg, prompts, seeds, 32, cpu)
    sampler = tiny_pipe.scheduler
    assert sampler.begin_index == 0 and sampler.timesteps.device == cpu  # set with the timesteps, where they live
    probe = type(sampler).from_config(sampler.config)
    probe.set_timesteps(5, device="meta")  # placed on the device the pipeline names, the index found on the host
    assert probe.begin_index == 0 and probe.timesteps.device.type == "meta"
    assert probe.sigmas.device.type == ("meta" if name == "unipc" else "cpu")  # UniPC's sigmas where its steps run
    tiny_pipe.__dict__.pop("_workbench_samplers")  # diffusers' own class from here
    monkeypatch.setattr(scheduler, "sync_free_sampler", lambda cls: cls)
    theirs = generate(tiny_pipe, cfg, prompts, seeds, 32, cpu)
    tiny_pipe.__dict__.pop("_workbench_samplers")  # later tests sharing the pipeline get the knob's samplers again
    assert tiny_pipe.scheduler.begin_index is None and type(tiny_pipe.scheduler) is not type(sampler)
    assert torch.equal(ours, theirs)


def test_karras_alias_changes_the_sigmas(tiny_pipe):
    scheduler.call(tiny_pipe, _cfg(scheduler="dpm++2m"))
    plain = tiny_pipe.scheduler
    scheduler.call(tiny_pipe, _cfg(scheduler="dpm++2m-karras"))
    karras = tiny_pipe.scheduler
    plain.set_timesteps(10)
    karras.set_timesteps(10)
    assert not torch.allclose(plain.sigmas, karras.sigmas)


def test_unet_batch_halves_after_the_cfg_cutoff(tiny_pipe):
    sizes = []
    handle = tiny_pipe.unet.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    cfg = _cfg(steps=6, cfg_scale=5.0, cfg_cutoff=0.5, scheduler="ddim")
    scheduler.call(tiny_pipe, cfg)
    try:
        generate(tiny_pipe, cfg, ["a red bag"] * 2, [0, 1], 32, torch.device("cpu"))
    finally:
        handle.remove()
    assert sizes == [4, 4, 4, 2, 2, 2]
    assert guidance.cutoff_step(cfg) == 3


def test_cfg_cutoff_zero_means_no_guidance_and_changes_images(tiny_pipe):
    prompts, seeds = ["a red bag"] * 2, [0, 1]
    full = generate(tiny_pipe, _cfg(cfg_scale=7.5), prompts, seeds, 32, torch.device("cpu"))
    none = generate(tiny_pipe, _cfg(cfg_scale=7.5, cfg_cutoff=0.0), prompts, seeds, 32, torch.device("cpu"))
    unguided = generate(tiny_pipe, _cfg(cfg_scale=1.0), prompts, seeds, 32, torch.device("cpu"))
    assert torch.equal(none, unguided) and not torch.equal(full, none)


def test_batch_size_never_changes_the_images(tiny_pipe):
    cfg = _cfg(scheduler="euler-a")  # ancestral: noise drawn every step, still per-image generators
    scheduler.call(tiny_pipe, cfg)
    prompts = ["a red bag", "a blue coat", "a green dress"]
    together = generate(tiny_pipe, cfg, prompts, [0, 1, 2], 32, torch.device("cpu"))
    alone = torch.cat([generate(tiny_pipe, cfg, [p], [s], 32, torch.device("cpu")) for p, s in zip(prompts, [0, 1, 2])])
    assert torch.equal(together, alone)


def test_precision_bf16_on_cpu_and_fp16_refused():
    from workbench.models import tiny_random_pipeline

    pipe = tiny_random_pipeline()
    assert precision.apply(pipe, _cfg(precision="bf16"), torch.device("cpu")) is None  # nothing for the row
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    generate(pipe, _cfg(precision="bf16"), ["a red bag"], [0], 32, torch.device("cpu"))
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        knobs.check_device(_cfg(precision="fp16", device="cpu"), torch.device("cpu"))
