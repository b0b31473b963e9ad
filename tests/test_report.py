"""Report figures a paper needs: studies overlaid on one set of axes (equal N only), image grids, LaTeX tables."""
import textwrap

import pytest

from workbench.cli import main
from workbench.errors import ConfigError
from workbench.report.figures import plot_overlay
from workbench.report.make import make_report
from workbench.study import experiment
from workbench.study.sweep import sweep

EXP = """
name: {name}
model: tiny-random
fixed: {{seeds: "{seeds}", batch_size: 2, timing_repeats: 1, quality: false}}
baseline: {{scheduler: ddim, steps: 2}}
search_space:
  steps: {{type: int, low: 1, high: 3}}
objectives: {{latency_s: minimize, gflops_per_image: minimize}}
sampler: {{name: RandomSampler, seed: 0}}
n_trials: 3
storage: sqlite:///{db}
executor: inprocess
"""


def _study(tmp_path, name, seeds="0-1"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(EXP.format(name=name, seeds=seeds, db=tmp_path / "wb.db")))
    exp = experiment.load(path)
    sweep(exp, progress=False, echo=lambda *_: None)
    return exp.storage


def test_two_studies_overlaid_and_different_n_refused(tmp_path, results_dir, capsys):
    storage = _study(tmp_path, "a")
    _study(tmp_path, "b")
    out = plot_overlay(["a", "b"], storage, "latency_s", "gflops_per_image", tmp_path / "overlay.png")
    assert out.stat().st_size > 0 and out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert main(["compare", "a", "b", "--pair", "latency_s,gflops_per_image", "--storage", storage]) == 0
    assert "overlay of a, b" in capsys.readouterr().out
    _study(tmp_path, "c", seeds="0-3")
    with pytest.raises(ConfigError, match="different N"):
        plot_overlay(["a", "c"], storage, "latency_s", "gflops_per_image", tmp_path / "no.png")


def test_report_writes_image_grid_of_baseline_and_front_at_the_same_seeds(tmp_path):
    storage = _study(tmp_path, "g")
    paths = make_report("g", storage, out_dir=tmp_path / "fig")
    for name in ("images", "hypervolume", "pareto_tex"):
        assert paths[name].stat().st_size > 0, name
    assert paths["images"].with_suffix(".svg").is_file()


def test_an_objective_constant_over_the_study_gets_no_importance_panel_and_the_reason(tmp_path, caplog):
    # params_m is the same for every trial: Optuna's fANOVA raises "zero total variance" on it
    path = tmp_path / "flat.yaml"
    path.write_text(textwrap.dedent(EXP.format(name="flat", seeds="0-1", db=tmp_path / "wb.db"))
                    .replace("gflops_per_image: minimize", "params_m: minimize"))
    exp = experiment.load(path)
    sweep(exp, progress=False, echo=lambda *_: None)
    with caplog.at_level("WARNING", logger="workbench.report"):
        paths = make_report("flat", exp.storage, out_dir=tmp_path / "fig")
    assert paths["importances"].stat().st_size > 0
    assert "params_m is constant over the 3 trials" in paths["importances"].with_suffix(".svg").read_text()
    assert "params_m is constant over the 3 trials" in caplog.text


def test_pareto_figure_fits_one_column_and_its_front_bounds_what_the_trials_reach(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt
    import pandas as pd
    from PIL import Image

    from workbench.report import figures, style

    # latency down, alignment up: between two front points only the slower one's alignment is reached
    ok = pd.DataFrame({"trial": [0, 1, 2], "scheduler": ["ddim"] * 3, "steps": [25, 10, 4],
                       "cfg_scale": [7.5, 5.0, 3.0], "latency_s": [0.3, 0.1, 0.05],
                       "align_mean": [1.0, 0.95, 0.8], "align_mean_lo": [0.9, 0.8, 0.6],
                       "align_mean_hi": [1.0, 0.99, 0.9]})
    drawn = {}
    real_save = style.save_figure
    monkeypatch.setattr(style, "save_figure", lambda fig, path: (drawn.update(fig=fig), real_save(fig, path))[1])
    png = figures.plot_pareto(ok, "latency_s", "align_mean", 0, tmp_path / "p.png", "quickstart")
    width_in = Image.open(png).size[0] / plt.rcParams["savefig.dpi"]
    assert width_in <= style.COLUMN_IN + 0.05  # long labels and titles wrap instead of widening the figure
    (front,) = [line for line in drawn["fig"].axes[0].lines if line.get_drawstyle().startswith("steps")]
    assert front.get_drawstyle() == "steps-post"  # the staircase never claims 0.95 alignment at 0.05 s


def test_point_labels_name_the_compression_knobs_a_trial_uses():
    import pandas as pd

    from workbench.report.tables import short_label

    row = pd.Series({"scheduler": "unipc", "steps": 8, "cfg_scale": 3.89, "prune_ratio": 0.1, "quant": "qat",
                     "quant_keep": 0.1})
    assert short_label(row) == "unipc 8 st cfg 3.89 prune 0.1 QAT keep 0.1"
    plain = pd.Series({"scheduler": "ddim", "steps": 9, "cfg_scale": 6.4, "prune_ratio": 0.0, "quant": "none",
                       "quant_keep": 0.2})
    assert short_label(plain) == "ddim 9 st cfg 6.4"
    other_study = pd.Series({"scheduler": "ddim", "steps": 9, "cfg_scale": 6.4, "prune_ratio": float("nan"),
                             "quant": float("nan")})
    assert short_label(other_study) == "ddim 9 st cfg 6.4"


def test_a_report_is_redrawn_only_when_its_study_changed(tmp_path):
    from workbench.study.store import Store

    storage = _study(tmp_path, "inc")
    first = make_report("inc", storage, out_dir=tmp_path / "fig")
    stamps = {name: p.stat().st_mtime_ns for name, p in first.items()}
    again = make_report("inc", storage, out_dir=tmp_path / "fig")
    assert again == first and {n: p.stat().st_mtime_ns for n, p in again.items()} == stamps  # nothing redrawn
    forced = make_report("inc", storage, out_dir=tmp_path / "fig", force=True)["pareto_md"].stat().st_mtime_ns
    assert forced > stamps["pareto_md"]
    store = Store(storage)
    row = store.rows("inc", 1)[0]
    store.write("inc", 1, row)  # the row written again (a re-measured trial): the report follows
    redrawn = make_report("inc", storage, out_dir=tmp_path / "fig")
    assert redrawn["pareto_md"].stat().st_mtime_ns > forced
