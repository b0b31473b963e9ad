"""The explorer: call-time knobs keep the pipeline and still give a fresh build's images; build knobs rebuild; the
baseline sits beside at the same seeds; Save writes sweep-shaped rows; the study browser shows a clicked trial."""
import numpy as np
import pytest
import torch

from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.lab.explore import Explorer, Session
from workbench.models import resolve_device
from workbench.prompts import load_prompts, prompts_for
from workbench.study.store import Store
from workbench.trial import build_pipeline, generate

TINY = {"model": "tiny-random", "seeds": "0-1", "batch_size": 2, "steps": 2, "quality": False, "timing_repeats": 1}


def _fresh(cfg: TrialConfig) -> torch.Tensor:
    """What a sweep trial would generate for this configuration: a freshly built pipeline."""
    device = resolve_device(cfg.device)
    prompts = prompts_for(load_prompts(cfg.prompt_set), len(cfg.seed_list))
    return generate(build_pipeline(cfg, device)[0], cfg, prompts, cfg.seed_list, 32, device)


def test_call_time_knobs_keep_the_pipeline_and_match_a_fresh_build(tmp_path):
    session = Session(baseline={"scheduler": "ddim", "steps": 2}, results=tmp_path)
    first = session.shoot(TrialConfig(**TINY, scheduler="dpm++2m-karras"))
    assert first.rebuilt and session.builds == 1
    changed = TrialConfig(**{**TINY, "steps": 3, "seeds": "1-2"}, scheduler="heun", cfg_scale=3.0, cfg_cutoff=0.5)
    shot = session.shoot(changed)
    assert not shot.rebuilt and session.builds == 1 and shot.timings["build_s"] == 0.0
    # heun after a karras sampler: the swap starts from the model's scheduler, so no option leaks across
    assert torch.equal(shot.images, _fresh(changed))
    assert torch.equal(shot.baseline, _fresh(shot.baseline_config))
    assert shot.baseline_config.seeds == "1-2" and shot.baseline_config.scheduler == "ddim"
    rebuilt = session.shoot(changed.replace(precision="bf16"))
    assert rebuilt.rebuilt and session.builds == 2 and rebuilt.timings["build_s"] > 0


def test_explorer_generate_shows_images_timings_metrics_and_errors_name_the_field(tmp_path):
    explorer = Explorer(baseline={"steps": 1}, **{**TINY, "seeds": "0-3", "quality": True})
    explorer.session.results = tmp_path
    explorer.controls["steps"].value = 3
    explorer.controls["scheduler"].value = "unipc"
    shot = explorer.generate_button.click() or explorer.shot
    assert shot is not None and shot.config.scheduler == "unipc" and shot.config.steps == 3
    for image in (explorer.image, explorer.baseline_image, explorer.diff_image):
        assert bytes(image.value).startswith(b"\x89PNG")
    assert "generate" in explorer.timing.value and "quality" in explorer.timing.value
    assert "PSNR vs baseline" in explorer.metrics.value and "±" in explorer.metrics.value  # psnr ± its s.e.
    assert "FID" in explorer.metrics.value and "[" in explorer.metrics.value                # fid [lo, hi]
    explorer.controls["cfg_scale"].value = 2.0
    explorer.generate()
    assert "pipeline kept" in explorer.timing.value and "baseline cached" in explorer.timing.value
    explorer.controls["seeds"].value = "3-1"
    assert explorer.generate() is None
    assert "error: explore.seeds" in explorer.status.value or "error: seeds" in explorer.status.value


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An interactive study written by Save: the baseline (ddim), then two settings."""
    tmp = tmp_path_factory.mktemp("saved")
    storage = f"sqlite:///{tmp / 'wb.db'}"
    session = Session(baseline={"scheduler": "ddim"}, results=tmp)
    cfg = TrialConfig(**TINY, scheduler="euler")
    numbers = [session.save(cfg, storage), session.save(cfg.replace(scheduler="unipc", steps=1), storage)]
    return storage, numbers


def test_save_writes_the_baseline_then_the_setting_as_sweep_rows(saved):
    storage, numbers = saved
    assert numbers == [1, 2]  # the baseline (trial 0) is run once, before the first setting
    rows = Store(storage).rows("interactive")
    assert [(r["trial_number"], r["status"], r["config"]["scheduler"]) for r in rows] == \
        [(0, "ok", "ddim"), (1, "ok", "euler"), (2, "ok", "unipc")]
    assert rows[0]["provenance"]["explore"]["role"] == "baseline"
    assert rows[1]["provenance"]["explore"] == {"role": "setting", "baseline_trial": 0}
    for row in rows:  # what a sweep row holds: timings, cost metrics, artifacts on disk
        assert {"latency_s", "gflops_per_image", "peak_memory_mb"} <= set(row["metrics"])
        assert row["artifacts"]["grid"].endswith("grid.png")
    frame = Store(storage).frame("interactive")
    assert list(frame["trial"]) == [0, 1, 2] and "latency_s" in frame


def test_study_browser_hover_shows_the_configuration_and_a_click_shows_the_images(saved):
    from plotly.callbacks import Points

    from workbench.lab.browse import StudyBrowser

    storage, _ = saved
    browser = StudyBrowser(storage, x="latency_s", y="gflops_per_image")
    assert browser.study_picker.value == "interactive" and browser.baseline == 0
    points = {int(n): text for trace in browser.figure.data for n, text in zip(trace.customdata, trace.hovertext)}
    assert set(points) == {0, 1, 2}
    assert "scheduler = unipc" in points[2] and "steps = 1" in points[2]
    trace = next(t for t in browser.figure.data if 2 in t.customdata)
    index = list(trace.customdata).index(2)
    trace._dispatch_on_click(Points(point_inds=[index], xs=[trace.x[index]], ys=[trace.y[index]],
                                    trace_name=trace.name, trace_index=0), None)
    assert browser.selected == 2 and browser.trial_picker.value == 2
    for image in (browser.image, browser.baseline_image):
        assert bytes(image.value).startswith(b"\x89PNG")
    assert bytes(browser.image.value) != bytes(browser.baseline_image.value)
    assert "scheduler=unipc" in browser.info.value and "baseline: trial 0" in browser.info.value


def test_browser_of_an_empty_store_says_so_and_refresh_finds_new_rows(tmp_path, saved):
    from workbench.lab.browse import StudyBrowser

    storage = f"sqlite:///{tmp_path / 'empty.db'}"
    browser = StudyBrowser(storage)
    assert "no study" in browser.info.value and not browser.figure.data
    for row in Store(saved[0]).rows("interactive"):  # rows appear, as after Save in the explorer
        Store(storage).write("interactive", row["trial_number"], row)
    browser.refresh_button.click()
    assert browser.study_picker.value == "interactive" and browser.baseline == 0
    assert {int(n) for t in browser.figure.data for n in t.customdata} == {0, 1, 2}
    assert [list(t.customdata) for t in browser.figure.data if t.name == "baseline"] == [[0]]  # the star


def test_contact_sheet_and_difference():
    from workbench.images import contact_sheet, difference

    images = torch.randint(0, 255, (3, 3, 4, 4), dtype=torch.uint8)
    sheet = contact_sheet(images, cols=2)
    assert sheet.shape == (8, 8, 3) and np.array_equal(sheet[:4, 4:], images[1].permute(1, 2, 0).numpy())
    assert not sheet[4:, 4:].any()  # the pad after the last image
    assert not difference(images, images).any()
    with pytest.raises(ConfigError, match="baseline: unknown parameter 'stpes'; did you mean 'steps'"):
        Session(baseline={"stpes": 3})


def test_explore_notebook_starts_on_the_reference_model_with_few_seeds_and_no_outputs():
    import json
    from pathlib import Path

    import papermill

    from workbench.config import parse_seeds

    path = Path(__file__).resolve().parent.parent / "notebooks" / "explore.ipynb"
    params = papermill.inspect_notebook(str(path))  # every line parses: papermill can override each one
    assert set(params) == {"model", "seeds", "batch_size", "quality", "start", "baseline", "storage", "study"}
    assert params["model"]["default"] == '"reference"'
    assert len(parse_seeds(params["seeds"]["default"].strip('"'))) <= 8  # Generate stays quick on a laptop CPU
    cells = json.loads(path.read_text())["cells"]
    assert not any(c.get("outputs") for c in cells)  # notebooks are source: stored without outputs
