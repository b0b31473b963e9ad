"""Report figures a paper needs: studies overlaid on one set of axes (equal N only), image grids, LaTeX tables."""
import textwrap

import pytest

from workbench import experiment
from workbench.cli import main
from workbench.errors import ConfigError
from workbench.report import make_report, plot_overlay
from workbench.sweep import sweep

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
