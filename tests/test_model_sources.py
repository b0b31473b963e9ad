"""Model sources a new user gets wrong: a hub id while offline, a folder that is not a loadable pipeline.
Each is one line from the command line, before any work, and nothing is written."""
import json
import shutil
import subprocess
import sys

import pytest

from workbench.cli import main
from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.models import load_pipeline
from workbench.paths import REFERENCE_SD


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_hub_id_while_offline_is_one_line(capsys, tmp_path):
    err = _one_line_error(capsys, ["trial", "--set", "model=some-org/some-model", "--out", str(tmp_path / "t")])
    assert "some-org/some-model" in err and "local Hugging Face cache" in err and "local diffusers folder" in err
    assert not (tmp_path / "t").exists()


def test_hub_id_with_the_network_unreachable_is_one_line(monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    from workbench.models import check_hub_id
    check_hub_id.cache_clear()

    def unreachable(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(ConfigError) as err:
        TrialConfig.from_dict({"model": "some-org/other-model"})
    assert "cannot be reached" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("damage, hint", [
    (lambda d: (d / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}'), "names no 'unet'"),
    (lambda d: (d / "model_index.json").write_text("{not json"), "not valid JSON"),
    (lambda d: shutil.rmtree(d / "vae"), "vae/config.json is missing"),
])
def test_folder_that_is_not_a_pipeline_is_one_line(capsys, tmp_path, damage, hint):
    folder = tmp_path / "sd"
    shutil.copytree(REFERENCE_SD, folder)
    damage(folder)
    err = _one_line_error(capsys, ["trial", "--set", f"model={folder}", "--out", str(tmp_path / "t")])
    assert hint in err and not (tmp_path / "t").exists()


def test_folder_whose_weights_do_not_load_is_one_line(tmp_path):
    folder = tmp_path / "sd"
    shutil.copytree(REFERENCE_SD, folder)
    index = json.loads((folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    (folder / "unet" / sorted(set(index["weight_map"].values()))[-1]).unlink()
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(folder))
    assert "does not load as a Stable Diffusion pipeline" in str(err.value) and "\n" not in str(err.value)


def test_a_trial_prints_only_the_workbench_lines(tmp_path):
    """No library progress bars or torchvision fallback warnings; the metrics table and the grid path remain."""
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "trial", "--set", "model=tiny-random",
                           "--set", "steps=1", "--set", "seeds=0-3", "--set", "batch_size=4",
                           "--out", str(tmp_path / "t")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    noise = ("Loading pipeline components", "Loading checkpoint shards", "Loading weights", "torchvision",
             "UserWarning", "will save all extracted features")
    for text in noise:
        assert text not in proc.stdout + proc.stderr, text
    assert "kid" in proc.stdout and "images:" in proc.stdout
