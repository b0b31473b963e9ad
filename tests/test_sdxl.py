"""SDXL wherever SD works (a trial, a sweep, the CFG cutoff, folders, hub ids) and the offline architecture presets,
on the tiny SDXL built from configs; the full-size presets are counted on the meta device, never built here."""
import json
import shutil
import textwrap

import pytest
import torch

from workbench.cli import main
from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.knobs import guidance, scheduler
from workbench.measure import cost
from workbench.models import MEANINGLESS, load_pipeline, model_family, native_resolution
from workbench.presets import PRESETS, preset_pipeline
from workbench.study.store import Store
from workbench.trial import generate, run_trial

# parameters of the published architectures (diffusers' config.json of each), counted on the meta device
PUBLISHED = {
    "sd15-random": ("StableDiffusionPipeline", 512, {"unet": 859_520_964, "text_encoder": 123_060_480}),
    "sd21-random": ("StableDiffusionPipeline", 768, {"unet": 865_910_724, "text_encoder": 340_387_840}),
    "sdxl-random": ("StableDiffusionXLPipeline", 1024, {"unet": 2_567_463_684, "text_encoder": 123_060_480,
                                                        "text_encoder_2": 694_659_840}),
}


@pytest.fixture(scope="module")
def tiny_sdxl():
    return load_pipeline("tiny-sdxl")


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_presets_have_the_published_parameter_counts_on_meta(name):
    cls, resolution, counts = PUBLISHED[name]
    pipe = preset_pipeline(name, device="meta")
    assert type(pipe).__name__ == cls and native_resolution(pipe) == resolution
    assert next(pipe.unet.parameters()).device.type == "meta"
    for component, n in counts.items():
        assert sum(p.numel() for p in getattr(pipe, component).parameters()) == n, component
    assert sum(p.numel() for p in pipe.vae.parameters()) == 83_653_863
    assert name in MEANINGLESS and model_family(name) == PRESETS[name].family


def test_preset_details_that_change_what_is_measured():
    sd21, sdxl = preset_pipeline("sd21-random", device="meta"), preset_pipeline("sdxl-random", device="meta")
    assert sd21.scheduler.config.prediction_type == "v_prediction" and sd21.unet.config.use_linear_projection
    assert sd21.tokenizer.model_max_length == 77 and sd21.text_encoder.config.vocab_size == 49408
    assert sdxl.unet.config.addition_embed_type == "text_time" and sdxl.vae.config.scaling_factor == 0.13025
    assert type(sdxl.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert sdxl.text_encoder_2.config.projection_dim == 1280 and sdxl.unet.config.cross_attention_dim == 768 + 1280


def test_tiny_sdxl_trial_row_with_a_user_fid_reference(tmp_path):
    from workbench.images import save_images
    from workbench.world.render import reference_images

    (tmp_path / "real").mkdir()
    save_images(torch.cat(list(reference_images(4))), list(range(4)), tmp_path / "real")
    row = run_trial(TrialConfig(model="tiny-sdxl", steps=2, seeds="0-3", batch_size=2, timing_repeats=1,
                                fid_reference=str(tmp_path / "real")), artifacts_dir=tmp_path / "t", progress=False)
    m = row["metrics"]
    for key in ("latency_s", "text_encoder_s", "unet_step_s", "vae_decode_s", "gflops_per_image", "fid", "clip_score",
                "align_mean"):
        assert key in m and m[key] >= 0, key
    assert m["text_encoder_s"] > 0 and row["quality_meaningful"] is False
    assert row["protocols"]["fid"]["n_generated"] == 4
    pipe = load_pipeline("tiny-sdxl")
    assert round(m["params_m"] * 1e6) == sum(p.numel() for name in ("text_encoder", "text_encoder_2", "unet", "vae")
                                             for p in getattr(pipe, name).parameters())
    from PIL import Image
    images = sorted((tmp_path / "t" / "images").glob("seed*.png"))
    assert len(images) == 4 and all(Image.open(f).size == (32, 32) for f in images)


def test_both_sdxl_text_encoders_are_timed_as_the_text_encoder_stage(tiny_sdxl, tiny_pipe):
    cfg = TrialConfig.from_dict({"model": "tiny-sdxl", "steps": 1, "seeds": "0", "cfg_scale": 1.0})  # no negative
    for pipe, encoders in ((tiny_sdxl, 2), (tiny_pipe, 1)):
        timer = cost.StageTimer(pipe, torch.device("cpu"))
        timer.enabled = True
        try:
            generate(pipe, cfg, ["a red bag"], [0], 32, torch.device("cpu"))
        finally:
            timer.remove()
        assert len(timer.calls["text_encoder"]) == encoders and len(timer.calls["unet"]) == 1


def test_tiny_sdxl_sweep_in_process(tmp_path):
    db = tmp_path / "wb.db"
    (tmp_path / "xl.yaml").write_text(textwrap.dedent(f"""
        name: xl
        model: tiny-sdxl
        fixed: {{seeds: "0-1", batch_size: 2, timing_repeats: 1, quality: false, cfg_cutoff: 0.5}}
        baseline: {{steps: 2}}
        search_space:
          steps: {{type: int, low: 1, high: 3}}
        objectives: {{latency_s: minimize}}
        sampler: {{name: RandomSampler, seed: 0}}
        n_trials: 2
        storage: sqlite:///{db}
        executor: inprocess
    """))
    assert main(["sweep", str(tmp_path / "xl.yaml")]) == 0
    rows = Store(f"sqlite:///{db}").rows("xl")
    assert [r["status"] for r in rows] == ["ok", "ok"], [r["reason"] for r in rows]
    assert all(r["config"]["model"] == "tiny-sdxl" and r["metrics"]["text_encoder_s"] > 0 for r in rows)


def test_unet_batch_and_added_conditions_halve_after_the_cfg_cutoff_on_sdxl(tiny_sdxl):
    seen = []

    def record(module, args, kwargs):
        added = kwargs["added_cond_kwargs"]
        seen.append((args[0].shape[0], kwargs["encoder_hidden_states"].shape[0], added["text_embeds"].shape[0],
                     added["time_ids"].shape[0]))
    handle = tiny_sdxl.unet.register_forward_pre_hook(record, with_kwargs=True)
    cfg = TrialConfig.from_dict({"model": "tiny-sdxl", "steps": 6, "seeds": "0-1", "cfg_scale": 5.0,
                                 "cfg_cutoff": 0.5, "scheduler": "ddim"})
    scheduler.call(tiny_sdxl, cfg)
    try:
        cut = generate(tiny_sdxl, cfg, ["a red bag"] * 2, [0, 1], 32, torch.device("cpu"))
    finally:
        handle.remove()
    assert [s[0] for s in seen] == [4, 4, 4, 2, 2, 2] and all(len(set(s)) == 1 for s in seen)
    assert guidance.call(tiny_sdxl, cfg)["callback_on_step_end_tensor_inputs"] == list(guidance.CONDITIONING)
    full = generate(tiny_sdxl, cfg.replace(cfg_cutoff=1.0), ["a red bag"] * 2, [0, 1], 32, torch.device("cpu"))
    assert cut.shape == (2, 3, 32, 32) and not torch.equal(cut, full)


@pytest.mark.parametrize("fixed, hint", [
    ("prune_ratio: 0.25", "prune_ratio"),
    ("quant: ptq, backend: onnxruntime", "quant:"),
    ("backend: onnxruntime", "backend:"),
])
def test_knobs_that_cannot_handle_sdxl_refuse_it_before_any_work(refused_sweep, refused_config, fixed, hint):
    refused_sweep(fixed, "is SDXL", model="tiny-sdxl")
    values = dict(item.split(": ") for item in fixed.split(", "))
    values = {k: float(v) if k == "prune_ratio" else v for k, v in values.items()}
    refused_config({"model": "sdxl-random", **values}, hint.rstrip(":"), "pick an SD model")
    TrialConfig.from_dict({"model": "sd15-random", **values})  # the same knobs on an SD preset are fine


@pytest.fixture(scope="module")
def sdxl_folder(tiny_sdxl, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl") / "tiny-sdxl"
    tiny_sdxl.save_pretrained(folder)
    return folder


def test_an_sdxl_folder_loads_as_sdxl_and_generates(sdxl_folder):
    assert json.loads((sdxl_folder / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert model_family(str(sdxl_folder)) == "sdxl"
    pipe = load_pipeline(str(sdxl_folder))
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and native_resolution(pipe) == 32
    cfg = TrialConfig.from_dict({"model": str(sdxl_folder), "steps": 2, "seeds": "0"})
    assert generate(pipe, cfg, ["a red bag"], [0], 32, torch.device("cpu")).shape == (1, 3, 32, 32)
    with pytest.raises(ConfigError, match="prune_ratio: .* is SDXL"):
        cfg.replace(prune_ratio=0.25)


@pytest.mark.parametrize("damage, hint", [
    (lambda d: shutil.rmtree(d / "text_encoder_2"), "not a loadable Stable Diffusion XL pipeline: "
                                                    "text_encoder_2/config.json is missing"),
    (lambda d: shutil.rmtree(d / "tokenizer_2"), "tokenizer_2/ is missing"),
    (lambda d: (d / "model_index.json").write_text(json.dumps(
        {k: v for k, v in json.loads((d / "model_index.json").read_text()).items() if k != "text_encoder_2"})),
     "names no 'text_encoder_2'"),
])
def test_a_broken_sdxl_folder_is_one_line(capsys, tmp_path, sdxl_folder, damage, hint):
    folder = tmp_path / "xl"
    shutil.copytree(sdxl_folder, folder)
    damage(folder)
    assert main(["trial", "--set", f"model={folder}", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and hint in err and "\n" not in err and not (tmp_path / "t").exists()


def test_a_cached_sdxl_hub_id_is_classified_from_its_cached_model_index(tmp_path, monkeypatch):
    import huggingface_hub.constants

    snapshot = tmp_path / "models--some-org--cached-xl" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    (tmp_path / "models--some-org--cached-xl" / "refs").mkdir()
    (tmp_path / "models--some-org--cached-xl" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert model_family("some-org/cached-xl") == "sdxl"
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"model": "some-org/cached-xl", "backend": "onnxruntime"})
    assert "backend" in str(err.value) and "is SDXL" in str(err.value)
    with pytest.raises(ConfigError, match="some-org/not-cached"):  # offline and not cached: one line, no download
        model_family("some-org/not-cached")


def test_without_a_reference_set_fidelity_needs_no_fid_weights_and_with_one_they_are_asked_for_first(tmp_path,
                                                                                                    monkeypatch):
    """A random-weight or user model without a reference folder measures fidelity to its baseline without loading
    the FID network (the GPU experiments' case); a model with a reference set is refused in one line, before any
    image is made, where the FID weights are missing."""
    monkeypatch.setenv("WORKBENCH_FID_WEIGHTS", str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match=r"^config\.quality: fid: Inception weights .*missing\.pt are missing"):
        TrialConfig.from_dict({"model": "tiny-random"})
    assert TrialConfig.from_dict({"model": "tiny-random", "quality": False})  # nothing to measure FID for
    common = {"model": "tiny-sdxl", "seeds": "0-1", "batch_size": 2, "timing_repeats": 1, "scheduler": "ddim"}
    run_trial({**common, "steps": 2}, artifacts_dir=tmp_path / "base", progress=False)
    row = run_trial({**common, "steps": 1}, baseline_dir=tmp_path / "base" / "images", artifacts_dir=tmp_path / "one",
                    progress=False)
    assert row["metrics"]["psnr"] > 0 and "clip_score" in row["metrics"]
    assert "fid" not in row["metrics"] and "fid" in row["absent"]


def _fp16_sdxl(mode: str):
    """The tiny SDXL cast to fp16 as an H100 trial casts it (fp16 runs on this CPU, slowly: trials refuse it here)."""
    from workbench.knobs import vae_upcast

    pipe = load_pipeline("tiny-sdxl")
    pipe.to(torch.float16)
    cfg = TrialConfig.from_dict({"model": "tiny-sdxl", "precision": "fp16", "vae_upcast": mode, "steps": 2})
    row = vae_upcast.apply(pipe, cfg, torch.device("cpu"))
    casts = []
    cast = pipe.vae.to
    pipe.vae.to = lambda *a, **k: casts.append(k.get("dtype", a)) or cast(*a, **k)
    return pipe, cfg, row, casts


def test_vae_upcast_stops_the_per_image_recast_of_an_fp16_sdxl_vae():
    """diffusers' SDXL pipeline casts an fp16 VAE to fp32 and back around every decode (what recompiles a compiled
    decoder); `fp32` keeps it in fp32 once, `off` decodes in fp16; images stay those of `auto`."""
    images, casts = {}, {}
    for mode in ("auto", "fp32", "off"):
        pipe, cfg, row, casts[mode] = _fp16_sdxl(mode)
        images[mode] = generate(pipe, cfg, ["a red shirt", "blue trousers"], [0, 1], 32, torch.device("cpu"))
        decoder = next(pipe.vae.decoder.parameters()).dtype
        assert decoder == {"auto": torch.float16, "fp32": torch.float32, "off": torch.float16}[mode]
        assert row is None if mode == "auto" else row.protocols["vae_upcast"]["decoder_dtype"] == str(decoder)[6:]
    assert casts == {"auto": [torch.float32, torch.float16], "fp32": [], "off": []}
    for mode in ("fp32", "off"):  # fp32: the latents' scaling is rounded in fp16 first; off: an fp16 decode
        assert (images[mode].int() - images["auto"].int()).abs().max() <= 2, mode


def test_an_overflowing_fp16_decode_fails_the_trial_instead_of_saving_black_pixels():
    pipe, cfg, _, _ = _fp16_sdxl("off")
    with torch.no_grad():
        pipe.vae.decoder.conv_in.weight.mul_(1e4)  # activations past fp16's 65504, as SDXL's own VAE overflows
    with pytest.raises(FloatingPointError, match="NaN or inf.*vae_upcast: auto"):
        generate(pipe, cfg, ["a red shirt"], [0], 32, torch.device("cpu"))


@pytest.mark.parametrize("values, hint", [
    ({"model": "tiny-sdxl", "precision": "bf16", "vae_upcast": "fp32"}, "precision: fp16"),
    ({"model": "tiny-sdxl", "precision": "fp16", "vae_upcast": "off", "vae": "tiny"}, "vae: full"),
    ({"model": "tiny-sdxl", "vae_upcast": "sometimes"}, "auto"),
])
def test_vae_upcast_where_it_means_nothing_is_one_line(values, hint):
    with pytest.raises(ConfigError, match="vae_upcast") as err:
        TrialConfig.from_dict(values)
    assert hint in str(err.value) and "\n" not in str(err.value)


def test_vae_upcast_on_a_pipeline_that_never_upcasts_is_refused_before_loading_it():
    with pytest.raises(ConfigError, match=r"StableDiffusionPipeline never upcasts its VAE\); set vae_upcast: auto"):
        TrialConfig.from_dict({"model": "tiny-random", "precision": "fp16", "vae_upcast": "fp32"})
