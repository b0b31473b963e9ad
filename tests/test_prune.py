"""The prune knob on the tiny pipeline: real size and FLOP reductions, cached artifacts, recovery, bad values."""
import json
from pathlib import Path

import pytest
import torch

from workbench.compress import build, prune
from workbench.compress.distill import DistillConfig, distill, noised_batches, output_mse, teacher_samples
from workbench.config import TrialConfig
from workbench.trial import build_pipeline, generate

CPU = torch.device("cpu")
PROMPTS = ["a red bag in the center on a white background", "a blue coat in the top left on a black background"]


@pytest.fixture(autouse=True)
def small_teacher_set(monkeypatch):
    """Calibration/recovery data of 8 teacher generations at 2 steps: the tiny pipeline needs no more."""
    monkeypatch.setitem(build.TEACHER, "n", 8)
    monkeypatch.setitem(build.TEACHER, "steps", 2)
    monkeypatch.setitem(build.CALIBRATION, "batch_size", 4)
    monkeypatch.setitem(build.CALIBRATION, "batches", 2)


def _cfg(**kw):
    return TrialConfig.from_dict({"model": "tiny-random", "steps": 3, "seeds": "0-1", "prune_ratio": 0.5, **kw})


@pytest.mark.parametrize("method", prune.METHODS)
def test_every_method_reduces_parameters_and_flops_and_still_generates(method):
    pipe, row = build_pipeline(_cfg(prune_method=method), CPU)
    m = row.metrics
    assert m["unet_params_m"] < m["unet_params_before_m"]
    assert m["unet_gflops"] < m["unet_gflops_before"]
    assert sum(p.numel() for p in pipe.unet.parameters()) == round(m["unet_params_m"] * 1e6)
    assert not hasattr(pipe, "prune_report")  # the knob returns its row; nothing is left on the pipeline
    images = generate(pipe, _cfg(prune_method=method), PROMPTS, [0, 1], 32, CPU)
    assert images.shape == (2, 3, 32, 32) and images.float().std() > 0


def test_a_cached_pruned_model_reloads_and_gives_identical_images():
    cfg = _cfg(prune_method="channels-taylor", prune_ratio=0.45)  # a ratio no other test builds
    first, first_row = build_pipeline(cfg, CPU)
    second, second_row = build_pipeline(cfg, CPU)  # a second trial asking for the same artifact
    built, loaded = first_row.protocols["prune"], second_row.protocols["prune"]
    assert not built["loaded_from_cache"] and loaded["loaded_from_cache"]
    assert built["artifact"] == loaded["artifact"]
    folder = Path(loaded["folder"])
    assert second_row.artifacts["pruned_unet"] == loaded["folder"]
    assert {"unet.safetensors", "pruned.json", "meta.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "meta.json").read_text())["cost_s"]["prune_s"] > 0
    a = generate(first, cfg, PROMPTS, [0, 1], 32, CPU)
    b = generate(second, cfg, PROMPTS, [0, 1], 32, CPU)
    assert torch.equal(a, b)
    _, other = build_pipeline(_cfg(prune_method="channels-taylor", prune_ratio=0.5), CPU)
    assert other.protocols["prune"]["artifact"] != built["artifact"]


def test_parallel_builders_build_once(tmp_path):
    """Two threads asking for one artifact: the file lock lets one build, the other loads."""
    import threading

    from workbench.compress import cache

    calls = []

    def slow_build(folder):
        calls.append(1)
        (folder / "x").write_text("done")
        import time
        time.sleep(0.3)
        return {"cost_s": {}}

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.cached("t", {"a": 1}, slow_build, tmp_path)))
               for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and sorted(r.built for r in results) == [False, True]
    assert not list(tmp_path.glob(".*partial*"))


def test_recovery_lowers_the_distillation_loss():
    from workbench.models import tiny_random_pipeline

    pipe = tiny_random_pipeline()
    samples = teacher_samples(pipe, PROMPTS, n=8, steps=2, progress=False)
    student = __import__("copy").deepcopy(pipe.unet)
    prune.prune_unet(student, "channels-magnitude", 0.5)
    held_out = noised_batches(samples, pipe.scheduler.config, 2, 8, seed=99)
    before = output_mse(student, pipe.unet, held_out)
    # the random teacher predicts no noise: distil on the KD terms alone (the task loss would pull elsewhere)
    report = distill(student, pipe.unet, samples, pipe.scheduler.config,
                     DistillConfig(steps=40, batch_size=8, task_weight=0.0), progress=False, eval_batches=held_out)
    assert report["kd_mse_before"] == pytest.approx(before)
    assert report["kd_mse_after"] < 0.7 * before


def test_recovery_through_the_knob_records_its_cost_and_loss():
    _, row = build_pipeline(_cfg(prune_method="blocks", recovery_steps=10), CPU)
    recovery = row.protocols["prune"]["recovery"]
    assert row.metrics["recovery_s"] > 0 and recovery["steps"] == 10
    assert recovery["feature_blocks"]  # blocks keep every stage's shape: feature KD applies


def test_row_holds_the_prune_columns():
    from workbench.trial import run_trial

    row = run_trial(_cfg(prune_method="heads", quality=False, timing_repeats=1), progress=False)
    m = row["metrics"]
    assert m["unet_params_m"] < m["unet_params_before_m"] and m["unet_gflops"] < m["unet_gflops_before"]
    assert m["prune_s"] > 0 and m["recovery_s"] == 0 and "unet_kd_mse" in m
    assert row["protocols"]["prune"]["artifact"].startswith("pruned-unet-")


@pytest.mark.parametrize("values, field, hint", [
    ({"prune_ratio": 0.8}, "prune_ratio", "0 (off) to 0.75"),
    ({"prune_ratio": -0.1}, "prune_ratio", "0 (off) to 0.75"),
    ({"prune_ratio": 0.3, "prune_method": "random"}, "prune_method", "not one of"),
    ({"recovery_steps": 100}, "recovery_steps", "prune_ratio is 0"),
    ({"prune_ratio": 0.3, "recovery_steps": -1}, "recovery_steps", "0 (no recovery)"),
    ({"prune_ratio": 0.3, "recovery_data": "/no/such/folder"}, "recovery_data", "does not exist"),
])
def test_bad_prune_values_are_one_clear_line(refused_config, values, field, hint):
    refused_config(values, field, hint)


@pytest.mark.parametrize("fixed, hint", [
    ("prune_ratio: 0.9", "prune_ratio"),
    ("prune_ratio: 0.3, prune_method: channels-random", "prune_method"),
    ("recovery_steps: 50", "recovery_steps"),
])
def test_bad_prune_experiment_writes_nothing(refused_sweep, fixed, hint):
    refused_sweep(fixed, hint)
