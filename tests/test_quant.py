"""ONNX export, the ONNX Runtime backend, layer importance and NNCF PTQ/QAT on the tiny pipeline."""
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.compress import calibration, export, importance, quantize, runtime
from workbench.config import TrialConfig
from workbench.trial import build_pipeline, generate

CPU = torch.device("cpu")
PROMPTS = ["a red bag in the center on a white background", "a blue coat in the top left on a black background"]


@pytest.fixture(autouse=True)
def small_calibration(monkeypatch):
    """16 generations at 2 steps, the first 8 captured: the tiny pipeline needs no more."""
    monkeypatch.setitem(calibration.SETTINGS, "generations", 16)
    monkeypatch.setitem(calibration.SETTINGS, "captured", 8)
    monkeypatch.setitem(calibration.SETTINGS, "steps", 2)
    monkeypatch.setitem(importance.SETTINGS, "actgrad_batches", 2)
    monkeypatch.setitem(importance.SETTINGS, "batch_size", 4)
    monkeypatch.setitem(importance.SETTINGS, "sensitivity_inputs", 2)


def _cfg(**kw):
    return TrialConfig.from_dict({"model": "tiny-random", "steps": 3, "seeds": "0-1", **kw})


@pytest.mark.parametrize("component", export.COMPONENTS)
def test_export_runs_in_onnxruntime_like_torch(tiny_pipe, component):
    art = export.float_onnx(tiny_pipe, component, {"model": "tiny-random"})
    sess = runtime.session(art.folder / "model.onnx")
    for batch in (1, 3):  # dynamic batch axis
        inputs = export.example_inputs(tiny_pipe, component, batch)
        with torch.no_grad():
            want = export.adapter(tiny_pipe, component)(*inputs)
        names = export.io_spec(component)[0]
        got = sess.run(None, {n: x.numpy() for n, x in zip(names, inputs)})[0]
        # stated tolerance: fp32 kernels of two runtimes, 1e-4 of the output's scale
        assert np.abs(got - want.numpy()).max() <= 1e-4 * max(1.0, float(want.abs().max()))
    assert not any(export.quantized_layers(art.folder / "model.onnx", component).values())


def test_onnxruntime_backend_generates_the_torch_images():
    torch_pipe, torch_row = build_pipeline(_cfg(), CPU)
    ort_pipe, ort_row = build_pipeline(_cfg(backend="onnxruntime"), CPU)
    assert "backend" not in torch_row.protocols and ort_row.protocols["backend"]["fp32_components"]
    assert ort_row.metrics["export_s"] >= 0 and set(ort_row.artifacts) == {"onnx_unet", "onnx_text_encoder",
                                                                           "onnx_vae_decoder"}
    assert runtime.is_ort(ort_pipe.unet) and runtime.is_ort(ort_pipe.text_encoder) and runtime.is_ort(ort_pipe.vae.decoder)
    a = generate(torch_pipe, _cfg(), PROMPTS, [0, 1], 32, CPU)
    b = generate(ort_pipe, _cfg(), PROMPTS, [0, 1], 32, CPU)
    assert (a.int() - b.int()).abs().max() <= 1  # uint8 images: at most one level of rounding apart


def test_importance_is_deterministic_and_covers_every_layer(tiny_pipe):
    calib = calibration.calibration(tiny_pipe, PROMPTS, "tiny-prompts")
    for method in importance.METHODS:
        first = importance.compute(tiny_pipe, method, calib, export.COMPONENTS)
        second = importance.compute(tiny_pipe, method, calib, export.COMPONENTS)
        assert first == second, method
        for component in export.COMPONENTS:
            layers = export.weighted_layers(export.module_of(tiny_pipe, component))
            assert list(first[component]) == importance.rankable(component, layers)
            assert len(set(first[component].values())) > 1, (method, component)  # a ranking, not a constant
    assert any("time_emb" in n for n in export.weighted_layers(tiny_pipe.unet))
    assert not any("time_emb" in n for n in first["unet"])  # the timestep path is never ranked: always float


def test_ptq_model_runs_in_onnxruntime_with_qdq_for_quantised_layers_only():
    cfg = _cfg(backend="onnxruntime", quant="ptq", quant_keep=0.25, importance="sensitivity",
               quant_components="unet,vae_decoder")
    pipe, row = build_pipeline(cfg, CPU)
    report = row.protocols["quant"]
    assert row.metrics["quantized_layers"] == sum(p["quantized"] for p in report["components"].values())
    for component in ("unet", "vae_decoder"):
        part = report["components"][component]
        flags = export.quantized_layers(Path(part["folder"]) / "model.onnx", component)
        kept = set(part["kept"])
        assert kept and {n for n, q in flags.items() if not q} == kept, component  # kept layers: no QDQ
        assert sum(flags.values()) == part["quantized"] > len(kept)             # all others: integer QDQ
    assert all(not flags for n, flags in export.quantized_layers(
        Path(report["components"]["unet"]["folder"]) / "model.onnx", "unet").items() if "time_emb" in n)
    # the kept layers are the top quarter of the cached sensitivity ranking (plus the always-float timestep path)
    from workbench.prompts import load_prompts, prompt_set_version

    float_pipe, _ = build_pipeline(_cfg(), CPU)
    calib = calibration.calibration(float_pipe, load_prompts(cfg.prompt_set), prompt_set_version(cfg.prompt_set))
    ranking = importance.importance(float_pipe, "sensitivity", calib, ("unet", "vae_decoder"))
    assert ranking["key"] == report["importance"]
    unet_layers = export.weighted_layers(float_pipe.unet)
    assert report["components"]["unet"]["kept"] == quantize.kept_layers("unet", unet_layers,
                                                                          ranking["scores"]["unet"], 0.25)
    assert runtime.is_ort(pipe.unet) and runtime.is_ort(pipe.vae.decoder) and runtime.is_ort(pipe.text_encoder)
    images = generate(pipe, cfg, PROMPTS, [0, 1], 32, CPU)
    assert images.shape == (2, 3, 32, 32) and images.float().std() > 0


def test_qat_distils_the_quantised_unet_and_is_cached():
    cfg = _cfg(backend="onnxruntime", quant="qat", qat_steps=8, quant_keep=0.0)
    _, row = build_pipeline(cfg, CPU)
    part = row.protocols["quant"]["components"]["unet"]
    assert part["built"] and row.metrics["qat_s"] > 0 and part["qat"]["steps"] == 8
    assert part["qat"]["feature_blocks"]  # BK-SDM feature KD reaches the blocks through the quantised adapter
    _, again = build_pipeline(cfg, CPU)
    assert not again.protocols["quant"]["components"]["unet"]["built"]
    ptq = build_pipeline(cfg.replace(quant="ptq"), CPU)[1].protocols["quant"]["components"]["unet"]
    assert ptq["key"] != part["key"]
    # training moved the weights: the exported QAT graph is not the PTQ graph (the loss falls on the reference
    # model: benchmarks/quant_quality.py; this random tiny UNet has nothing to learn beyond rounding noise)
    qat_bytes = (Path(part["folder"]) / "model.onnx").read_bytes()
    assert qat_bytes != (Path(ptq["folder"]) / "model.onnx").read_bytes()


def test_row_holds_the_quant_and_backend_columns():
    from workbench.trial import run_trial

    row = run_trial(_cfg(backend="onnxruntime", quant="ptq", quality=False, timing_repeats=1), progress=False)
    m = row["metrics"]
    assert m["quantized_layers"] > 0 and m["quantize_s"] > 0 and m["export_s"] >= 0
    assert "gflops_per_image" in row["absent"]
    float_row = run_trial(_cfg(quality=False, timing_repeats=1), progress=False)
    assert m["params_m"] == pytest.approx(float_row["metrics"]["params_m"], rel=0.02)
    assert m["model_size_mb"] < float_row["metrics"]["model_size_mb"]  # INT8 weights in the UNet
    assert row["protocols"]["quant"]["components"]["unet"]["key"].startswith("int8-unet-")


@pytest.mark.parametrize("values, field, hint", [
    ({"backend": "onnxruntime", "quant": "ptq", "quant_keep": 1.5}, "quant_keep", "0.0 to 1.0"),
    ({"backend": "onnxruntime", "quant": "ptq", "quant_keep": -0.1}, "quant_keep", "0.0 to 1.0"),
    ({"quant": "qat"}, "backend", "set backend: onnxruntime"),
    ({"backend": "onnxruntime", "quant": "ptq", "quant_components": "unet,vae"}, "quant_components", "'vae'"),
    ({"backend": "onnxruntime", "quant": "int4"}, "quant", "not one of"),
    ({"backend": "onnxruntime", "quant": "ptq", "importance": "hessian"}, "importance", "not one of"),
    ({"backend": "onnxruntime", "quant": "qat", "qat_steps": 0}, "qat_steps", "qat_steps >= 1"),
    ({"backend": "tensorrt"}, "backend", "not one of"),
    ({"backend": "onnxruntime", "precision": "bf16"}, "precision", "fp32"),
])
def test_bad_quant_values_are_one_clear_line(refused_config, values, field, hint):
    refused_config(values, field, hint)


@pytest.mark.parametrize("fixed, hint", [
    ("backend: onnxruntime, quant: ptq, quant_keep: 2.0", "quant_keep"),
    ("quant: qat", "backend"),
    ("backend: onnxruntime, quant: ptq, quant_components: encoder", "quant_components"),
])
def test_bad_quant_experiment_writes_nothing(refused_sweep, fixed, hint):
    refused_sweep(fixed, hint)
