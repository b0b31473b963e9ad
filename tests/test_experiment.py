"""Bad experiment input: one clear line on stderr, exit code 2, no traceback, nothing written."""
import textwrap
from pathlib import Path

import pytest

from workbench.cli import main

GOOD = """
name: {name}
model: tiny-random
fixed: {{seeds: "0-1", batch_size: 2, steps: 2, timing_repeats: 1}}
baseline: {{scheduler: ddim}}
search_space:
  scheduler: {{type: categorical, choices: [ddim, euler]}}
  cfg_scale: {{type: float, low: 1.0, high: 5.0}}
objectives: {{fid: minimize, latency_s: minimize}}
sampler: {{name: RandomSampler, seed: 0}}
n_trials: 2
storage: sqlite:///{db}
executor: inprocess
"""


def _run(tmp_path, capsys, text):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    code = main(["sweep", str(path)])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize("change, hint", [
    (lambda t: t.replace("[ddim, euler]", "[ddim, warp-drive]"), "unknown scheduler"),
    (lambda t: t.replace("steps: 2", "steps: 0"), "steps"),
    (lambda t: t.replace("low: 1.0, high: 5.0", "low: 5.0, high: 1.0"), "inverted"),
    (lambda t: t.replace("  cfg_scale:", "  cfg_scael:"), "did you mean 'cfg_scale'"),
    (lambda t: t.replace("model: tiny-random", "model: /no/such/folder"), "does not exist"),
    (lambda t: t.replace("objectives: {fid: minimize", "objectives: {fdi: minimize"), "unknown metric"),
    (lambda t: t.replace("name: RandomSampler", "name: MagicSampler"), "not an Optuna sampler"),
    (lambda t: t.replace("search_space:", "serch_space:"), "unknown experiment field"),
    (lambda t: t + "  steps: [unclosed\n", "malformed YAML"),
    (lambda t: t.replace("storage: sqlite:///", "storage: nosuchdb:///"), "no driver"),
    (lambda t: t.replace("storage: sqlite:///", "storage: postgresql://u:p@127.0.0.1:1/"), "psycopg"),
])
def test_bad_input_is_rejected_with_one_line_and_nothing_written(tmp_path, capsys, change, hint):
    db = tmp_path / "store.db"
    code, err = _run(tmp_path, capsys, change(GOOD.format(name="bad", db=db)))
    assert code == 2
    assert err.startswith("error: ") and hint in err and "\n" not in err and "Traceback" not in err
    assert not db.exists()  # rejected before anything was created or written


def test_missing_experiment_file(capsys):
    assert main(["sweep", "experiments/no-such.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_shipped_experiments_are_valid():
    from workbench.study import experiment

    for path in Path("experiments").glob("*.yaml"):
        exp = experiment.load(path)
        assert exp.baseline_params and exp.objectives
    steps_cfg = experiment.load("experiments/steps_cfg.yaml")
    schedulers = next(p for p in steps_cfg.space if p.name == "scheduler").choices
    assert len(schedulers) >= 5
    steps = next(p for p in steps_cfg.space if p.name == "steps")
    assert (steps.low, steps.high) == (4, 50)


def test_a_baseline_outside_the_categorical_choices_is_one_line(tmp_path, capsys):
    # Optuna refuses an enqueued category that is not a choice: it crashed the sweep with a traceback at its first ask
    db = tmp_path / "store.db"
    text = GOOD.format(name="bad", db=db).replace("baseline: {scheduler: ddim}", "baseline: {scheduler: unipc}")
    code, err = _run(tmp_path, capsys, text)
    assert code == 2 and not db.exists()
    assert err == ("error: baseline.scheduler: 'unipc' is not among search_space.scheduler's choices ['ddim', 'euler'];"
                   " add it to them (the baseline is the study's first trial)"), err
