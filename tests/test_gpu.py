"""The GPU part of a row on a CPU machine: absent with reasons on a CPU trial, the meta-device UNet FLOP count
against the real eager count, the peak table, and NVML's energy counter degrading to a reason."""
import copy
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._pytree import tree_map

from workbench.compress.prune import prune_unet
from workbench.config import TrialConfig
from workbench.measure import cost, energy, gpu, unet_flops
from workbench.measure.peaks import PEAKS, peak_for
from workbench.models import native_resolution
from workbench.trial import generate, run_trial

GPU_ONLY = ("unet_tflops", "unet_roofline_pct", "energy_j_per_image", "peak_reserved_mb")
CUDA = torch.device("cuda", 0)


def test_a_cpu_trial_has_the_gpu_metrics_absent_with_a_reason_naming_the_cpu(tmp_path):
    row = run_trial({"model": "tiny-random", "quality": False, "steps": 2, "seeds": "0-3", "batch_size": 2,
                     "timing_repeats": 1}, artifacts_dir=tmp_path, progress=False)
    for name in GPU_ONLY:
        assert name not in row["metrics"] and row["absent"][name].startswith("device is a CPU ("), name
    for name in ("latency_s", "unet_step_s", "peak_memory_mb", "gflops_per_image"):  # the existing columns stay
        assert row["metrics"][name] > 0, name
    assert row["protocols"]["peak_memory_mb"]["kind"].startswith("cpu_peak_rss")


def _timed_unet_calls(pipe, cfg: TrialConfig, batch: int) -> cost.StageTimer:
    """The StageTimer of one real generation: each UNet call's input signature and its arguments on meta."""
    timer = cost.StageTimer(pipe, torch.device("cpu"))
    timer.enabled = True
    try:
        generate(pipe, cfg, ["a red shirt"] * batch, list(range(batch)), native_resolution(pipe), torch.device("cpu"))
    finally:
        timer.remove()
    return timer


def _eager_flops(unet, example) -> int:
    """FlopCounterMode's count of the real UNet at the example's shapes; SDPA's math path, because the counter
    does not see the CPU SDPA kernel (on CUDA it counts the flash kernels as these two matmuls)."""
    args, kwargs = tree_map(lambda t: torch.ones(t.shape, dtype=t.dtype) if isinstance(t, torch.Tensor) else t,
                            example)
    out: dict = {}
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), cost.count_flops(out):
        unet(*args, **kwargs)
    return out["flops"]


def test_the_meta_count_of_the_calls_made_equals_the_eager_count_for_the_cfg_batch_and_after_the_cutoff(tiny_pipe):
    cfg = TrialConfig(model="tiny-random", steps=4, cfg_cutoff=0.5)
    timer = _timed_unet_calls(tiny_pipe, cfg, batch=2)
    keys = timer.inputs["unet"]
    batches = [timer.examples[k][0][0].shape[0] for k in keys]
    assert batches == [4, 4, 2, 2]  # CFG doubles the batch of 2, the cutoff halves it after step 2
    total, per_call, method = unet_flops.count_calls(tiny_pipe.unet, keys, timer.examples)
    assert method.startswith("from_config") and len(per_call) == 2
    eager = {key: _eager_flops(tiny_pipe.unet, timer.examples[key]) for key in per_call}
    assert per_call == eager
    cfg_batch, after = (per_call[keys[0]], per_call[keys[-1]])
    assert cfg_batch == 2 * after > 0 and total == 2 * cfg_batch + 2 * after
    assert unet_flops.count_calls(torch.compile(tiny_pipe.unet), keys, timer.examples)[0] == total  # not compiled


def test_a_pruned_unet_is_counted_from_its_own_structure(tiny_pipe):
    pruned = copy.deepcopy(tiny_pipe.unet)
    prune_unet(pruned, "channels-magnitude", 0.5)
    cfg = TrialConfig(model="tiny-random", steps=1)
    timer = _timed_unet_calls(tiny_pipe, cfg, batch=1)
    keys = timer.inputs["unet"]
    total, per_call, method = unet_flops.count_calls(pruned, keys, timer.examples)
    assert method.startswith("deep copy")  # its config still describes the unpruned widths
    assert total == _eager_flops(pruned, timer.examples[keys[0]]) < unet_flops.count_calls(
        tiny_pipe.unet, keys, timer.examples)[0]
    assert all(p.device.type == "cpu" for p in pruned.parameters())  # the real module is left as it was
    # a UNet whose calls replay CUDA graphs (compile_scope: blocks-captured) is counted from its eager forward
    from workbench.knobs._captured import capture

    captured = capture(pruned, "unet")
    assert unet_flops.count_calls(pruned, keys, timer.examples)[0] == total and not captured.graphs


def test_a_torchao_quantised_unet_with_fused_projections_is_counted_as_its_float_matmuls(tiny_pipe):
    """torchao's quantised weights are tensor subclasses with no meta version (`empty_like` is not among their ops),
    and fused QKV projections make the UNet's structure differ from its config, so the count takes the deep-copy
    path: each weight becomes a plain meta tensor of its logical shape and dtype, the same matmul's FLOPs."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    cfg = TrialConfig(model="tiny-random", steps=1)
    timer = _timed_unet_calls(tiny_pipe, cfg, batch=1)
    keys = timer.inputs["unet"]
    fused = copy.deepcopy(tiny_pipe.unet)
    fused.fuse_qkv_projections()
    float_total = unet_flops.count_calls(fused, keys, timer.examples)[0]
    quantize_(fused, Int8WeightOnlyConfig(), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Linear)
              and min(m.in_features, m.out_features) >= 16)
    assert any(type(m.weight).__name__ != "Parameter" for m in fused.modules() if isinstance(m, torch.nn.Linear))
    total, _, method = unet_flops.count_calls(fused, keys, timer.examples)
    assert method.startswith("deep copy") and total == float_total > 0


@pytest.mark.parametrize("name, part", [("NVIDIA H100 80GB HBM3", "H100 SXM5"), ("NVIDIA H100 PCIe", "H100 PCIe"),
                                        ("NVIDIA H200", "H200 SXM"), ("NVIDIA A100-SXM4-80GB", "A100 SXM4 80GB"),
                                        ("NVIDIA A100-SXM4-40GB", "A100 SXM4 40GB")])
def test_the_peak_table_maps_real_device_names(name, part):
    peak = peak_for(name)
    assert peak.part == part and "datasheet" in peak.source
    assert peak.for_compute("fp16")[0] == peak.for_compute("bf16")[0] and peak.for_compute("fp32")[1] == "tf32"


def test_the_peak_table_holds_the_datasheet_figures_and_refuses_unknown_or_other_variants():
    sxm, pcie, h200, a100 = (peak_for(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200",
                                                    "NVIDIA A100-SXM4-80GB"))
    assert (sxm.tflops["bf16"], sxm.tflops["fp8"], sxm.tflops["int8"], sxm.memory_tb_s) == (989, 1979, 1979, 3.35)
    assert (pcie.tflops["bf16"], pcie.tflops["fp8"], pcie.memory_tb_s) == (756, 1513, 2.0)
    assert h200.tflops == sxm.tflops and h200.memory_tb_s == 4.8
    assert (a100.for_compute("fp16")[0], a100.tflops["int8"]) == (312, 624)
    with pytest.raises(LookupError, match="no fp8 peak known for A100"):
        a100.for_compute("fp8")
    for unknown in ("NVIDIA GeForce GTX 1080", "NVIDIA H100 NVL", "NVIDIA H200 NVL"):  # not the SXM or PCIe part
        with pytest.raises(LookupError, match=f"^no peak known for {unknown}$"):
            peak_for(unknown)
    assert len({p.part for p in PEAKS}) == len(PEAKS)


def _fake_pynvml(**overrides) -> types.ModuleType:
    """A stand-in for nvidia-ml-py on a machine without a GPU: its error classes, and functions that raise as
    NVML raises unless overridden."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        def __str__(self):
            return "Not Supported"

    class NVMLError_LibraryNotFound(NVMLError):
        def __str__(self):
            return "NVML Shared Library Not Found"

    def library_not_found(*args):
        raise NVMLError_LibraryNotFound()

    nvml.NVMLError, nvml.NVMLError_NotSupported = NVMLError, NVMLError_NotSupported
    for name in ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID",
                 "nvmlDeviceGetHandleByPciBusId", "nvmlDeviceGetTotalEnergyConsumption"):
        setattr(nvml, name, library_not_found)
    for name, fn in overrides.items():
        setattr(nvml, name, fn(nvml) if name == "nvmlDeviceGetTotalEnergyConsumption" else fn)
    return nvml


def test_energy_is_absent_with_a_reason_on_a_cpu_and_without_pynvml(monkeypatch):
    assert _energy_reason(torch.device("cpu")).startswith("device is a CPU (")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    assert "nvidia-ml-py is not installed" in _energy_reason(CUDA)


def test_energy_degrades_to_nvml_s_own_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    assert _energy_reason(CUDA) == "NVML is not available: NVML Shared Library Not Found"

    def unsupported(nvml):
        def read(handle):
            raise nvml.NVMLError_NotSupported()
        return read

    ok = dict(nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(**ok, nvmlDeviceGetTotalEnergyConsumption=unsupported))
    assert _energy_reason(CUDA).startswith("NVML's energy counter is not supported on cuda:0 (Not Supported")


def test_energy_sums_the_counter_over_regions_in_joules(monkeypatch):
    readings = iter([1_000, 1_000, 3_500, 10_000, 10_250])  # mJ: the opening probe, then two regions

    def counter(nvml):
        return lambda handle: next(readings)

    ok = dict(nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(**ok, nvmlDeviceGetTotalEnergyConsumption=counter))
    with energy.EnergyMeter(CUDA) as meter:  # no CUDA here: found through CUDA_VISIBLE_DEVICES' index
        assert meter.reason is None and meter.found_by.startswith("NVML index 0")
        for _ in range(2):
            with meter.region():
                pass
    assert meter.joules == pytest.approx(2.75) and meter.regions == 2
    metrics, protocols, absent = gpu.energy_per_image(meter, 5)
    assert metrics == {"energy_j_per_image": pytest.approx(0.55)} and protocols["energy_j_per_image"]["batches"] == 2


def test_energy_is_absent_not_zero_when_the_counter_did_not_step(monkeypatch):
    ok = dict(nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: f"gpu{i}")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(**ok, nvmlDeviceGetTotalEnergyConsumption=lambda nvml:
                                                            lambda handle: 7_000))
    with energy.EnergyMeter(CUDA) as meter:
        with meter.region():
            pass
    metrics, _, absent = gpu.energy_per_image(meter, 2)
    assert metrics == {} and "did not advance over 1 timed batches" in absent["energy_j_per_image"]


def _energy_reason(device: torch.device) -> str:
    with energy.EnergyMeter(device) as meter:
        return meter.reason


def test_a_trial_pipeline_answers_its_device_without_searching_every_submodule(monkeypatch):
    """diffusers asks `_execution_device` on every pipeline call and walks every submodule of every component for
    offloading hooks to answer it (~3 ms of host time before an SD1.5 image's first GPU kernel): a trial's pipeline
    answers the device it was placed on, and still defers to diffusers when a component carries offloading hooks."""
    import diffusers.hooks.group_offloading as offloading

    from workbench.trial import build_pipeline

    cfg = TrialConfig.from_dict({"model": "tiny-random", "steps": 2, "seeds": "0", "quality": False})
    pipe, _ = build_pipeline(cfg, torch.device("cpu"))
    searched = []
    real = offloading._get_top_level_group_offload_hook
    monkeypatch.setattr(offloading, "_get_top_level_group_offload_hook", lambda m: searched.append(m) or real(m))
    images = generate(pipe, cfg, ["a red bag"], [0], 32, torch.device("cpu"))
    assert searched == [] and pipe._execution_device == torch.device("cpu") and images.shape == (1, 3, 32, 32)
    assert isinstance(pipe, __import__("diffusers").StableDiffusionPipeline)
    assert type(pipe).__name__ == "StableDiffusionPipeline"  # what the row and the explorer show
    pipe.unet._diffusers_hook = object()  # as offloading would leave it: diffusers answers again
    try:
        pipe._execution_device
    except AttributeError:  # our stand-in hook has no registry; the search reached it
        pass
    assert searched


def test_the_profile_charges_each_idle_gap_to_the_host_phase_that_launched_the_next_work():
    """benchmarks.gpu_profile on a hand-made trace (µs): busy time is the union of kernels, gaps under 5 µs are
    spacing, longer ones waiting charged to the phase around the launch of the kernel that ends them."""
    from benchmarks.gpu_profile import analyse

    def x(cat, name, ts, dur, corr=None):
        return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, **({"args": {"correlation": corr}} if corr
                                                                                 else {})}
    trace = {"traceEvents": [
        x("user_annotation", "image", 0, 1000),
        x("user_annotation", "encode_prompt", 10, 200), x("user_annotation", "unet", 300, 500),
        x("cuda_runtime", "cudaLaunchKernel", 150, 5, 1),    # launched inside encode_prompt
        x("cuda_runtime", "cudaGraphLaunch", 310, 5, 2),     # inside the UNet
        x("cuda_runtime", "cudaLaunchKernel", 320, 5, 3),
        x("kernel", "triton_per_fused_native_layer_norm_0", 160, 40, 1),  # 160 µs waited before it: encode_prompt's
        x("kernel", "cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16", 320, 100, 2),  # 120 µs: the UNet's
        x("kernel", "sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc", 422, 100, 3),  # 2 µs: spacing
        x("cuda_runtime", "cudaStreamSynchronize", 330, 90),  # the UNet's host waits for the device
        x("cuda_runtime", "cudaMemcpyAsync", 900, 10),        # not a wait
    ]}
    out = analyse(trace)
    assert out["wall_ms"] == 1.0 and abs(out["gpu_busy_ms"] - 0.24) < 1e-9
    assert abs(out["gpu_spacing_ms"] - 0.002) < 1e-9
    phases = out["phases"]
    assert abs(phases["encode_prompt"]["idle_ms"] - 0.16) < 1e-9 and phases["encode_prompt"]["gaps"] == 1
    assert abs(phases["unet"]["idle_ms"] - 0.122) < 1e-9 and abs(phases["unet"]["spacing_ms"] - 0.002) < 1e-9
    assert phases["unet"]["kernels"] == 2 and phases["unet"]["gaps"] == 1
    assert abs(phases["after the last kernel"]["idle_ms"] - 0.478) < 1e-9
    assert out["largest_gaps"][0]["before"] == "after the last kernel" and out["largest_gaps"][1]["before"] == "encode_prompt"
    assert phases["unet"]["syncs"] == 1 and abs(phases["unet"]["sync_ms"] - 0.09) < 1e-9
    assert sum(v["syncs"] for v in phases.values()) == 1  # an asynchronous copy is not a wait
    # kernel time by kind: cuDNN's fused attention is attention although its name says fprop, as convolutions' do
    assert {k: v["kernels"] for k, v in out["kinds"]["unet"].items()} == {"attention": 1, "convolution": 1}
    assert out["kinds"]["encode_prompt"] == {"triton": {"gpu_ms": 0.04, "kernels": 1}}
    assert abs(sum(v["gpu_ms"] for v in out["kinds"]["all"].values()) - 0.24) < 1e-9
    # the kernels that took the most time, largest first, each with its calls and where it was launched
    assert [(k["kind"], k["phase"], k["calls"]) for k in out["top_kernels"]] == [
        ("attention", "unet", 1), ("convolution", "unet", 1), ("triton", "encode_prompt", 1)]
    assert out["top_kernels"][0]["total_ms"] == 0.1 and out["top_kernels"][2]["median_us"] == 40


def test_outside_stages_reads_the_committed_sweep_and_separates_unipc():
    """benchmarks.outside_stages on the committed GPU skip sweep: per-call time outside the timed stages, grouped by
    sampler; the UniPC trials (the per-step synchronising solve) sit well above DPM++ 2M's."""
    import statistics

    from benchmarks.outside_stages import groups, outside_per_call
    from workbench.study.store import trials

    assert outside_per_call({"latency_s": 0.1, "unet_s": 0.06, "unet_calls": 20, "text_encoder_s": 0.01,
                             "vae_decode_s": 0.01}) == pytest.approx(1.0)
    assert outside_per_call({"latency_s": 0.1, "unet_s": None, "unet_calls": 20}) is None
    store = Path(__file__).resolve().parent.parent / "docs/gpu-data/gpu-sd15-skip-2026-11-26.db"
    found = groups(trials(storage=f"sqlite:///{store}"))
    unipc, dpm = found[("gpu-sd15-skip", "unipc", "graphs")], found[("gpu-sd15-skip", "dpm++2m", "graphs")]
    assert len(unipc) == 3 and len(dpm) == 5
    assert statistics.median(unipc) > 2.5 > 1.5 > statistics.median(dpm)


def test_attention_shapes_records_every_attention_call_of_a_unet_call(tiny_pipe, tmp_path):
    """benchmarks.attention_shapes on the tiny SD UNet (CPU): one UNet call's SDPA calls by (batch, heads, query
    tokens, key tokens, head dim), self- and cross-attention apart, with their FLOPs; the command times each shape
    per backend and records the backends that refuse it."""
    from benchmarks.attention_shapes import flops, main, unet_attention_shapes

    unet = tiny_pipe.unet
    shapes = unet_attention_shapes(unet, torch.device("cpu"), torch.float32)
    blocks = sum(1 for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock")
    assert sum(shapes.values()) == 2 * blocks  # one self- and one cross-attention a transformer block
    assert {k for (_, _, _, k, _) in shapes} >= {77}  # cross-attention keys: the 77 text tokens
    assert all(b == 2 and q > 0 and d > 0 for (b, _, q, _, d) in shapes)
    assert flops((2, 8, 4096, 4096, 40)) == 2 * 2 * 2 * 8 * 4096 * 4096 * 40
    out = main(["--model", "tiny-random", "--device", "cpu", "--precision", "fp32", "--repeats", "2",
                "--out", str(tmp_path / "attention.json")])
    assert len(out["rows"]) == len(shapes) and sum(r["per_call"] for r in out["rows"]) == sum(shapes.values())
    assert all(r["default_ms"] > 0 for r in out["rows"]) and out["totals_ms"]["default"] > 0
    assert all(r["cudnn_ms"] is None and r["cudnn_error"] for r in out["rows"])  # no cuDNN attention on a CPU
    assert json.loads((tmp_path / "attention.json").read_text())["rows"] == out["rows"]


def test_attention_shapes_calls_an_sdxl_unet_with_its_added_conditions():
    """SDXL's UNet needs the pooled text embedding and the six time ids: the recording call builds them from the
    UNet's own config (tiny SDXL, CPU)."""
    from benchmarks.attention_shapes import unet_attention_shapes
    from workbench.trial import build_pipeline

    cpu = torch.device("cpu")
    pipe, _ = build_pipeline(TrialConfig(model="tiny-sdxl", device="cpu", quality=False, seeds="0", steps=2), cpu)
    shapes = unet_attention_shapes(pipe.unet, cpu, torch.float32)
    blocks = sum(1 for m in pipe.unet.modules() if type(m).__name__ == "BasicTransformerBlock")
    assert sum(shapes.values()) == 2 * blocks and {k for (_, _, _, k, _) in shapes} >= {77}


def test_the_ladder_runs_any_rung_in_a_second_process_and_refuses_an_unknown_rung_before_the_first(
        monkeypatch, tmp_path, capsys):
    """benchmarks.gpu_ladder: "<rung> (2nd process)" is that rung's knobs again (for any rung); a misspelt name in
    --rungs stops the command with one line naming it before any rung's process starts."""
    from benchmarks import gpu_ladder

    assert gpu_ladder.rung_config("graphs captext +cudnn (2nd process)") is gpu_ladder.RUNGS["graphs captext +cudnn"]
    assert gpu_ladder.rung_config("eager") == {}
    started = []
    monkeypatch.setattr(gpu_ladder.subprocess, "run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(sys, "argv", ["gpu_ladder", "--out", str(tmp_path / "l.json"),
                                      "--rungs", "eager,graphs captext +cudnn (2nd process),graphs captxt +cudnn"])
    with pytest.raises(SystemExit) as stop:
        gpu_ladder.main()
    assert stop.value.code == 2 and not started and not (tmp_path / "l.json").exists()
    err = capsys.readouterr().err
    assert "no rung named 'graphs captxt +cudnn'" in err and "(2nd process)" in err
    # a reference folder without the images every rung's PSNR will read: refused before the first rung, not after it
    (tmp_path / "eager").mkdir()
    monkeypatch.setattr(sys, "argv", ["gpu_ladder", "--out", str(tmp_path / "l.json"), "--images", "2",
                                      "--reference", str(tmp_path / "eager"), "--rungs", "eager"])
    with pytest.raises(SystemExit) as stop:
        gpu_ladder.main()
    assert stop.value.code == 2 and not started and not (tmp_path / "l.json").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--reference:" in err and "seed000000.png" in err and "images folder of an earlier rung" in err
    # a rung whose images cannot be compared keeps its timings in the file, with the reason
    row = {"metrics": {"latency_s": 0.14, "unet_step_s": 0.0064}, "protocols": {}, "compile_phases_s": {},
           "process_s": 20.0, "images": str(tmp_path / "gone")}
    monkeypatch.setattr(gpu_ladder.subprocess, "run", lambda *a, **k: types.SimpleNamespace(
        returncode=0, stdout="ROW " + json.dumps(row) + "\n", stderr=""))
    monkeypatch.setattr(sys, "argv", ["gpu_ladder", "--out", str(tmp_path / "l.json"), "--rungs", "eager"])
    gpu_ladder.main()
    kept = json.loads((tmp_path / "l.json").read_text())["rows"]
    assert kept[0]["metrics"]["latency_s"] == 0.14 and "FileNotFoundError" in kept[0]["psnr_error"]
