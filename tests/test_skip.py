"""The skip-work knobs on this CPU with the tiny pipelines: each changes the work done (UNet calls and FLOPs, tokens
attended, decoder parameters, steps run, encoder calls), still generates, composes with the CFG cutoff and the
others, and bad values are refused in one line before anything is written."""
import pytest
import torch

from workbench import knobs
from workbench.config import TrialConfig
from workbench.knobs import guidance
from workbench.prompts import load_prompts, prompts_for
from workbench.skip import prompt_cache
from workbench.skip.deepcache import FullSteps, Paths
from workbench.trial import build_pipeline, generate, run_trial

CPU = torch.device("cpu")
BASE = {"model": "tiny-random", "steps": 6, "seeds": "0-3", "quality": False, "timing_repeats": 1, "batch_size": 2}
PROMPTS = prompts_for(load_prompts("world-v1"), 2)


def _cfg(**kw) -> TrialConfig:
    return TrialConfig.from_dict({**BASE, **kw})


def _unet_calls(pipe, cfg, prompts=PROMPTS, seeds=(0, 1)):
    calls = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a: calls.append(1))
    images = generate(pipe, cfg, prompts, list(seeds), 32, CPU)
    handle.remove()
    return images, len(calls)


@pytest.fixture(scope="module")
def baseline():
    return run_trial(_cfg(), progress=False)


@pytest.mark.parametrize("options, graphed", [
    ({"mode": "reduce-overhead"}, True), ({"mode": None}, False),
    ({"options": {"triton.cudagraphs": True, "conv_1x1_as_mm": True}}, True),  # compile_tuning with CUDA graphs
    ({"options": {"conv_1x1_as_mm": True}}, False),
])
def test_feature_caching_knows_when_its_paths_replay_cuda_graphs(tiny_pipe, options, graphed):
    """Each call then marks a new CUDA-graph step (the other path's outputs may be overwritten): also when the
    compile knob passes reduce-overhead's settings as Inductor options (any compile_tuning)."""
    import copy

    from workbench.skip.deepcache import DeepCacheUNet

    unet = DeepCacheUNet(copy.deepcopy(tiny_pipe.unet), 0, FullSteps(2))
    unet.compile(**options, fullgraph=True, dynamic=False)  # lazy: nothing compiles before a call
    assert unet.cudagraphs is graphed


@pytest.mark.parametrize("depth", [0, 1])
def test_the_shallow_path_around_a_fresh_feature_is_the_full_unet(tiny_pipe, depth):
    unet = tiny_pipe.unet
    x, t = torch.randn(2, 4, 4, 4), torch.tensor(500)
    text = torch.randn(2, tiny_pipe.tokenizer.model_max_length, unet.config.cross_attention_dim)
    with torch.no_grad():
        reference = unet(x, t, text).sample
        paths = Paths(unet, depth)
        full, feature = paths(x, t, text, None, None, None, "full", None)
        shallow, _ = paths(x, t, text, None, None, None, "shallow", feature)
    assert torch.equal(full, reference) and torch.allclose(shallow, reference, atol=1e-6)


def test_full_step_schedules():
    assert [i for i in range(10) if i in FullSteps(3)] == [0, 3, 6, 9]
    quadratic = [i for i in range(20) if i in FullSteps(4, "quadratic", 20)]
    assert quadratic[0] == 0 and len(quadratic) == 5 and quadratic[1] - quadratic[0] < quadratic[-1] - quadratic[-2]
    assert all(i in FullSteps(1) for i in range(5))


@pytest.mark.parametrize("model", ["tiny-random", "tiny-sdxl"])
def test_feature_caching_runs_fewer_full_unets_with_the_cfg_cutoff(model, baseline):
    row = run_trial(_cfg(model=model, cache_interval=3, cfg_cutoff=0.5), progress=False)
    m = row["metrics"]
    assert m["unet_full_fraction"] < 0.5
    if model == "tiny-random":
        assert m["gflops_per_image"] < baseline["metrics"]["gflops_per_image"]
    assert row["protocols"]["feature_cache"]["interval"] == 3


def test_feature_caching_changes_the_images_but_interval_one_does_not(tiny_pipe):
    cfg = _cfg(cache_interval=2)
    pipe, _ = build_pipeline(cfg, CPU)
    cached, calls = _unet_calls(pipe, cfg)
    plain_pipe, _ = build_pipeline(_cfg(), CPU)
    plain, plain_calls = _unet_calls(plain_pipe, _cfg())
    assert calls == plain_calls  # the same number of UNet calls, half of them shallow
    assert pipe.unet.calls["shallow"] > 0 and not torch.equal(cached, plain)


def test_token_downsampling_attends_to_fewer_tokens_and_generates(baseline):
    row = run_trial(_cfg(token_downsample=2), progress=False)
    assert row["metrics"]["token_layers"] > 0
    assert row["metrics"]["gflops_per_image"] < baseline["metrics"]["gflops_per_image"]
    assert row["status"] == "ok"


def test_early_stop_ends_the_loop_and_batching_never_changes_an_image():
    cfg = _cfg(early_stop_tol=0.9, early_stop_min=0.34, scheduler="ddim")
    pipe, _ = build_pipeline(cfg, CPU)
    both, calls = _unet_calls(pipe, cfg)
    assert calls < cfg.steps
    alone, _ = _unet_calls(pipe, cfg, PROMPTS[1:], (1,))
    # the image stops where it stops alone; pixels within one level: this CPU's float32 kernels round a batch of two
    # differently from a batch of one (UNet 8.6e-7, VAE decoder 3.1e-6 apart, measured), which DDIM's 3 steps can carry
    # across a rounding boundary (0 levels apart with the default sampler)
    assert (both[1].int() - alone[0].int()).abs().max() <= 1
    row = knobs.observe(pipe, cfg)
    assert row.metrics["steps_run"] < cfg.steps and 0 < row.metrics["steps_saved_frac"] < 1


def test_early_stop_read_a_step_late_changes_no_image_and_costs_one_unet_call():
    """On CUDA the loop learns that every image stopped one step late (no per-step wait for the GPU): the same
    images and per-image steps, one more UNet call for the batch. Forced here on the CPU."""
    from workbench.knobs import early_stop as knob
    from workbench.skip.early_stop import EarlyStop

    cfg = _cfg(early_stop_tol=0.9, early_stop_min=0.34, scheduler="ddim")
    pipe, _ = build_pipeline(cfg, CPU)
    at_once, calls = _unet_calls(pipe, cfg)
    steps = knobs.observe(pipe, cfg).metrics["steps_run"]
    knob._WATCHERS[pipe] = EarlyStop(cfg.early_stop_tol, knob.min_steps(cfg), lagged=True)
    late, late_calls = _unet_calls(pipe, cfg)
    assert calls < cfg.steps - 1 and late_calls == calls + 1
    assert torch.equal(at_once, late) and knobs.observe(pipe, cfg).metrics["steps_run"] == steps


@pytest.mark.parametrize("scheduler", ["ddim", "dpm++2m", "unipc", "euler", "pndm", "euler-a", "lms", "heun"])
def test_every_scheduler_gives_early_stop_a_clean_estimate(scheduler):
    cfg = _cfg(early_stop_tol=1.0, early_stop_min=0.5, scheduler=scheduler)
    pipe, _ = build_pipeline(cfg, CPU)
    images = generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)
    assert images.shape == (2, 3, 32, 32) and knobs.observe(pipe, cfg).metrics["steps_run"] <= cfg.steps


def test_cfg_schedules_set_every_step_and_keep_the_cutoff():
    cfg = _cfg(cfg_schedule="staircase", cfg_start=5.0, cfg_scale=9.0, steps=6, cfg_cutoff=5 / 6)
    assert [guidance.scale_at(cfg, i) for i in range(6)] == [5.0, 5.0, 7.0, 7.0, 9.0, 9.0]
    linear = _cfg(cfg_schedule="linear", cfg_start=3.0, cfg_scale=9.0, steps=4)
    assert [guidance.scale_at(linear, i) for i in range(4)] == [3.0, 5.0, 7.0, 9.0]
    pipe, _ = build_pipeline(cfg, CPU)
    seen = []
    kwargs = knobs.call(pipe, cfg)
    inner = kwargs["callback_on_step_end"]

    def watch(p, step, t, kw):
        out = inner(p, step, t, kw)
        seen.append((p._guidance_scale, out["prompt_embeds"].shape[0]))
        return out
    kwargs["callback_on_step_end"] = watch
    pipe(PROMPTS[:1], generator=[torch.Generator().manual_seed(0)], height=32, width=32, output_type="pt", **kwargs)
    assert seen == [(5.0, 2), (7.0, 2), (7.0, 2), (9.0, 2), (0.0, 1), (0.0, 1)]


def test_prompt_cache_hits_a_repeated_prompt_and_misses_a_changed_encoder(tiny_pipe):
    cfg = _cfg(prompt_cache=True)
    pipe, _ = build_pipeline(cfg, CPU)
    encoded = []
    pipe.text_encoder.register_forward_pre_hook(lambda m, a: encoded.append(1))
    first = generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)
    n = len(encoded)
    again = generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)
    assert len(encoded) == n and torch.equal(first, again)  # served from the cache, the same images
    row = knobs.observe(pipe, cfg)
    assert row.metrics["prompt_cache_hit_rate"] == 0.5 and row.metrics["text_encoder_saved_s"] > 0

    prompt_cache._MEMORY.clear()  # a fresh kernel: the entries come from disk
    fresh, _ = build_pipeline(cfg, CPU)
    generate(fresh, cfg, PROMPTS, [0, 1], 32, CPU)
    assert knobs.observe(fresh, cfg).metrics["prompt_cache_hit_rate"] == 1.0

    changed, _ = build_pipeline(_cfg(), CPU)  # the same model, its encoder then fine-tuned
    with torch.no_grad():
        list(changed.text_encoder.parameters())[-1].add_(0.1)  # a fine-tuned encoder
    assert prompt_cache.encoder_fingerprint(changed) != prompt_cache.encoder_fingerprint(fresh)
    cache = prompt_cache.PromptCache(changed, None)
    changed.encode_prompt = cache
    generate(changed, cfg, PROMPTS, [0, 1], 32, CPU)
    assert cache.hits == 0 and cache.misses == 2


def test_tiny_vae_is_distilled_cached_and_decodes(monkeypatch):
    from workbench.compress import tiny_vae

    monkeypatch.setattr(tiny_vae, "TRAIN", {**tiny_vae.TRAIN, "steps": 60})
    monkeypatch.setattr("workbench.compress.build.TEACHER", {**tiny_vae.build.TEACHER, "n": 16, "steps": 3})
    row = run_trial(_cfg(vae="tiny"), progress=False)
    m = row["metrics"]
    assert m["vae_decoder_params_m"] < 0.5 * row["protocols"]["vae"]["full_decoder_params_m"]
    assert m["tiny_vae_psnr"] > 5 and m["tiny_vae_s"] > 0 and not row["protocols"]["vae"]["loaded_from_cache"]
    again = run_trial(_cfg(vae="tiny"), progress=False)
    assert again["protocols"]["vae"]["loaded_from_cache"] and again["metrics"]["tiny_vae_psnr"] == m["tiny_vae_psnr"]
    # with fused projections (the GPU experiments fix them on): the UNet is fused, the tiny decoder has nothing to fuse
    fused = run_trial(_cfg(vae="tiny", fuse_qkv=True), progress=False)  # diffusers refused any VAE but AutoencoderKL
    assert fused["status"] == "ok" and fused["metrics"]["vae_decoder_params_m"] == m["vae_decoder_params_m"]
    narrow = run_trial(_cfg(vae="tiny-narrow"), progress=False)  # its own artifact: one block a stage, narrower
    assert not narrow["protocols"]["vae"]["loaded_from_cache"]
    assert narrow["metrics"]["vae_decoder_params_m"] < m["vae_decoder_params_m"]
    # with ONNX Runtime and INT8: the UNet an INT8 session, the tiny decoder kept in torch (it is not the exported graph)
    composed = run_trial(_cfg(vae="tiny", backend="onnxruntime", quant="ptq"), progress=False)
    assert composed["metrics"]["tiny_vae_psnr"] > 5  # distilled on the INT8 pipeline's latents: its own artifact
    assert composed["protocols"]["backend"]["torch_components"] == ["vae_decoder: the tiny decoder (vae knob), in torch"]
    assert set(composed["protocols"]["backend"]["fp32_components"]) == {"text_encoder"}
    assert composed["metrics"]["vae_decoder_params_m"] == m["vae_decoder_params_m"]


@pytest.mark.parametrize("fixed, hint", [
    ("cache_interval: 0", "cache_interval"),
    ("cache_schedule: cubic", "cache_schedule"),
    ("token_downsample: 9", "token_downsample"),
    ("cfg_schedule: linear, cfg_start: 1.0", "cfg_start"),
    ("early_stop_tol: 0.1, scheduler: dpm++sde", "early_stop_tol"),
    ("vae: /nonexistent/taesd", "vae"),
    ("vae: tiny, backend: onnxruntime, quant: ptq, quant_components: 'unet,vae_decoder'", "quant_components"),
    ("cache_interval: 3, backend: onnxruntime", "cache_interval"),
])
def test_bad_skip_values_are_refused_before_anything_is_written(refused_sweep, fixed, hint):
    refused_sweep(fixed, hint)
