import socket

import torch

from workbench.config import TrialConfig
from workbench.measure import fid
from workbench.measure.fidelity import fidelity
from workbench.metrics import SPREADS
from workbench.trial import run_trial
from workbench.world.render import reference_images, render, sample_scenes


def test_fid_is_fully_offline_and_zero_for_identical_sets(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("FID path touched the network")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    device = torch.device("cpu")
    real = fid.reference_features("world-test", 32, lambda: reference_images(32), tmp_path, device)
    same = torch.cat(list(reference_images(32)))
    assert abs(fid.fid(fid.features(same, device), real)) < 1e-2
    noise = torch.randint(0, 255, same.shape, dtype=torch.uint8)
    assert fid.fid(fid.features(noise, device), real) > 100


def test_fid_reference_features_are_cached_by_set_count_and_extractor(tmp_path):
    device = torch.device("cpu")
    calls = []

    def images():
        calls.append(1)
        return reference_images(8)
    first = fid.reference_features("world-test", 8, images, tmp_path, device)
    again = fid.reference_features("world-test", 8, images, tmp_path, device)
    assert len(calls) == 1 and len(list(tmp_path.glob("world-test-8-inception-*.pt"))) == 1
    assert first.shape == (8, 2048) and torch.equal(first, again)


def test_inception_features_are_the_2048d_pool_features():
    net = fid.FIDInceptionV3()
    feats = net(torch.cat(list(reference_images(4))))
    assert feats.shape == (4, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()


def test_fidelity_is_perfect_against_itself_and_lower_against_other_images():
    a = torch.cat(list(reference_images(8)))
    b = (render(sample_scenes("test", 8, seed=5), "test") * 255).round().to(torch.uint8)
    same, other = fidelity(a, a), fidelity(a, b)
    assert same["ssim"] > 0.999 and same["psnr"] >= 99
    assert other["ssim"] < 0.9 and other["psnr"] < 30


def test_a_trial_row_has_cost_quality_protocols_and_absences(tmp_path):
    row = run_trial(TrialConfig(model="tiny-random", steps=2, seeds="0-3", batch_size=2, timing_repeats=2),
                    artifacts_dir=tmp_path, progress=False)
    m = row["metrics"]
    for key in ("latency_s", "unet_step_s", "text_encoder_s", "vae_decode_s", "warmup_s", "peak_memory_mb",
                "params_m", "gflops_per_image", "fid", "kid_sd", "cmmd_sd", "clip_score", "align_mean"):
        assert key in m and m[key] >= 0, key
    for name, spec in SPREADS.items():  # every quality value measured carries its spread
        if name in m:
            assert all(c in m for c in spec[1:]), name
            if spec[0] == "interval":
                assert m[spec[1]] <= m[spec[2]], name
    assert row["protocols"]["kid"]["subset_size"] == 2 and "Gaussian RBF sigma 10" in row["protocols"]["cmmd"]["implementation"]
    assert m["unet_s"] <= m["latency_s"]
    assert row["protocols"]["fid"]["n_generated"] == 4 and "inception" in row["protocols"]["fid"]["feature_extractor"]
    assert row["protocols"]["fid"]["warning"] == "random weights: quality is meaningless"
    assert row["quality_meaningful"] is False
    assert "psnr" in row["absent"] and "baseline" in row["absent"]["psnr"]
    assert len(list((tmp_path / "images").glob("seed*.png"))) == 4 and (tmp_path / "grid.png").is_file()
    assert row["provenance"]["threads"] == torch.get_num_threads()
    # fidelity against this very trial's images: same seeds -> perfect
    again = run_trial(TrialConfig(model="tiny-random", steps=2, seeds="0-3", batch_size=4, timing_repeats=1),
                      artifacts_dir=tmp_path / "again", baseline_dir=tmp_path / "images", progress=False)
    assert again["metrics"]["ssim"] > 0.999


def test_alignment_is_absent_with_reason_for_prompts_outside_the_world(tmp_path):
    prompts = tmp_path / "free.txt"
    prompts.write_text("an astronaut riding a horse\n")
    row = run_trial(TrialConfig(model="tiny-random", steps=1, seeds="0-1", batch_size=2, timing_repeats=1,
                                prompt_set=str(prompts)), artifacts_dir=tmp_path / "a", progress=False)
    assert "align_mean" not in row["metrics"] and "captioned world" in row["absent"]["align_mean"]
