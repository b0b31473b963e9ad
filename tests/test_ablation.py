"""The ablation ladder: every rung a measured trial in <study>-ablation, one knob added per rung, rungs already
there never run again, and `workbench report` draws the ladder from the store."""
import pytest

from workbench.cli import main
from workbench.config import TrialConfig
from workbench.errors import ConfigError
from workbench.report import ablation as ladder_figure
from workbench.report.make import make_report
from workbench.study import ablation
from workbench.study.store import Store

EXP = """
name: lad
model: tiny-random
fixed: {{seeds: "0-1", batch_size: 2, timing_repeats: 1, quality: false}}
baseline: {{scheduler: ddim, steps: 2, cfg_scale: 7.5}}
search_space:                          # RandomSampler(seed 0): trial 2 differs from the baseline in all three
  scheduler: {{type: categorical, choices: [ddim, euler]}}
  steps: {{type: categorical, choices: [1, 2]}}
  cfg_scale: {{type: categorical, choices: [3.0, 7.5]}}
objectives: {{latency_s: minimize, gflops_per_image: minimize}}
sampler: {{name: RandomSampler, seed: 0}}
n_trials: 3
storage: sqlite:///{db}
executor: inprocess
"""


@pytest.fixture(scope="module")
def study(swept):
    return swept("lad", EXP)


def test_rungs_add_one_knob_each_and_measure_every_one(study, capsys):
    exp, path, tmp = study
    assert main(["ablate", str(path), "--trial", "2"]) == 0
    out = capsys.readouterr().out
    assert "ablation_2 " in out and "running as trial 3" in out
    rows = Store(exp.storage).rows("lad-ablation")
    configs = [r["config"] for r in rows]
    assert [(c["scheduler"], c["steps"], c["cfg_scale"]) for c in configs] == \
        [("ddim", 2, 7.5), ("euler", 2, 7.5), ("euler", 1, 7.5), ("euler", 1, 3.0)]
    assert all(r["status"] == "ok" and r["metrics"]["latency_s"] > 0 for r in rows)
    frame = ablation.ladder("lad", 2, exp.storage)
    assert list(frame["added"]) == ["baseline", "+ scheduler=euler", "+ steps=1", "+ cfg_scale=3"]
    latency = [r["metrics"]["latency_s"] for r in rows]
    assert list(frame["speedup"]) == pytest.approx([latency[0] / v for v in latency])  # measured, per rung
    written = [r["written_at"] for r in rows]
    assert main(["ablate", str(path), "--trial", "2"]) == 0  # every rung is there: nothing runs again
    assert "already measured" in capsys.readouterr().out
    assert [r["written_at"] for r in Store(exp.storage).rows("lad-ablation")] == written


def test_report_draws_the_measured_ladder_and_refuses_missing_rungs(study, tmp_path):
    exp, path, _ = study
    if not Store(exp.storage).rows("lad-ablation"):
        ablation.run_ladder("lad", 2, exp.storage, echo=lambda *_: None)
    paths = make_report("lad", exp.storage, out_dir=tmp_path)
    assert paths["ablation_2"].stat().st_size > 0 and paths["ablation_2"].with_suffix(".pdf").is_file()
    assert {k for k in paths if k.startswith("ablation")} == {"ablation_2", "ablation_2_csv", "ablation_2_md",
                                                              "ablation_2_tex"}  # no one-rung "ladder" of trial 0
    table = paths["ablation_2_md"].read_text()
    assert "| 3 | + cfg_scale=3 |" in table and "1.00x" in table and "N = 2 images per rung" in table
    tex = paths["ablation_2_tex"].read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "Δ" not in tex and r"+ cfg\_scale=3" in tex
    with pytest.raises(ConfigError, match="--trial: study 'lad' has no trial 7"):
        ablation.ladder("lad", 7, exp.storage)
    assert main(["ablate", "lad", "--storage", exp.storage, "--trial", "7"]) == 2


def test_a_knob_invalid_alone_joins_the_next_rung():
    base = TrialConfig()
    target = TrialConfig(steps=10, prune_ratio=0.25, recovery_steps=5)
    steps = ablation.rungs(base, target, order=["recovery_steps", "steps", "prune_ratio"])
    assert [label for label, _ in steps] == ["baseline", "+ recovery_steps=5, steps=10, prune_ratio=0.25"]
    assert steps[-1][1] == target
    natural = ablation.rungs(base, target)
    assert [label for label, _ in natural] == ["baseline", "+ steps=10", "+ prune_ratio=0.25", "+ recovery_steps=5"]


def test_ladder_figure_fits_the_width_of_a_two_column_page(tmp_path):
    import matplotlib.pyplot as plt
    import pandas as pd
    from PIL import Image

    from workbench.report.style import COLUMN_IN

    frame = pd.DataFrame({"rung": [0, 1], "added": ["baseline", "+ steps=15"], "trial": [0, 1], "images": [32, 32],
                          "latency_s": [0.27, 0.13], "speedup": [1.0, 2.05], "fid": [142.4, 153.5],
                          "fid_lo": [132.1, 140.0], "fid_hi": [154.5, 167.6], "align_mean": [1.0, 0.93],
                          "align_mean_lo": [0.89, 0.78], "align_mean_hi": [1.0, 0.98]})
    frame.attrs.update(study="quickstart", trial=5)
    png = ladder_figure.plot_ladder(frame, ["fid", "align_mean"], tmp_path / "ladder.png")
    # the long alignment label wraps under its own panel instead of running past the page (two columns and the
    # gutter between them)
    assert Image.open(png).size[0] / plt.rcParams["savefig.dpi"] <= 2 * COLUMN_IN + 0.2


def test_a_ladder_is_confirmed_rung_by_rung_on_held_out_seeds(study, capsys):
    exp, path, tmp = study
    assert main(["ablate", str(path), "--trial", "2"]) == 0  # the rungs (already there when run after the first test)
    rungs = [int(t) for t in ablation.ladder("lad", 2, exp.storage)["trial"]]
    capsys.readouterr()
    assert main(["confirm", str(path), "--ladder", "2", "--n", "4", "--rounds", "6", "--executor", "inprocess"]) == 0
    out = capsys.readouterr().out
    rows = {r["trial_number"]: r for r in Store(exp.storage).rows("lad-ablation-confirm")}
    assert sorted(rows) == sorted(rungs)  # every rung, the first (the baseline) as its own A/A control
    sweep_seeds = {s for r in Store(exp.storage).rows("lad") for s in TrialConfig.from_dict(r["config"]).seed_list}
    for row in rows.values():
        assert not set(TrialConfig.from_dict(row["config"]).seed_list) & sweep_seeds
        entry = row["protocols"]["confirm"]
        assert len(entry["ratios"]) == 6
    assert "rung 3 (+ cfg_scale=3)" in out and f"#{rungs[-1]}" in out
    written = [r["written_at"] for r in rows.values()]
    assert main(["confirm", str(path), "--ladder", "2", "--n", "4", "--rounds", "6", "--executor", "inprocess"]) == 0
    assert [r["written_at"] for r in Store(exp.storage).rows("lad-ablation-confirm")] == written  # resumed: nothing
    capsys.readouterr()
    for args, hint in ((["--ladder", "2", "--trials", "1"], "--ladder and --trials"),
                       (["--ladder", "9"], "--ladder: study 'lad' has no trial 9")):
        assert main(["confirm", str(path), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and hint in err and "\n" not in err, err
    assert [r["written_at"] for r in Store(exp.storage).rows("lad-ablation-confirm")] == written
