"""End-to-end sweeps on the tiny pipeline: papermill notebooks, rows, figures, resume, failures."""
import json
import shutil
import textwrap
from pathlib import Path

import nbformat
import optuna

from workbench import paths
from workbench.study import experiment
from workbench.study.studies import folder
from workbench.cli import main
from workbench.study.store import Store

EXP = """
name: {name}
model: tiny-random
fixed: {{seeds: "0-3", batch_size: 2, timing_repeats: 1{extra}}}
baseline: {{scheduler: ddim, steps: 3}}
search_space:
  scheduler: {{type: categorical, choices: [ddim, euler, dpm++2m]}}
  steps: {{type: int, low: 1, high: 3}}
objectives: {{fid: minimize, latency_s: minimize}}
sampler: {{name: TPESampler, seed: 0}}
n_trials: {n}
storage: sqlite:///{db}
executor: {executor}
timeout_s: {timeout}
"""


def _write(tmp_path, name, n=3, executor="papermill", extra="", timeout=300):
    db = tmp_path / "wb.db"
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(EXP.format(name=name, n=n, db=db, executor=executor, extra=extra,
                                               timeout=timeout)))
    return path, f"sqlite:///{db}"


def test_papermill_sweep_end_to_end_then_resume(tmp_path, results_dir, capsys):
    path, url = _write(tmp_path, "e2e")
    assert main(["sweep", str(path)]) == 0
    rows = Store(url).rows("e2e")
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["reason"] for r in rows]
    assert rows[0]["config"]["scheduler"] == "ddim" and rows[0]["config"]["steps"] == 3  # the baseline ran first
    assert "psnr" in rows[0]["absent"] and all("psnr" in r["metrics"] for r in rows[1:])
    for r in rows:
        notebook = nbformat.read(r["artifacts"]["notebook"], as_version=4)
        injected = next(c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", []))
        assert f"trial_number = {r['trial_number']}" in injected.source
    figures = paths.figures(folder("e2e", url))  # the study's own folder: its name and its storage's tag
    for name in ("pareto_fid_vs_latency_s.png", "pareto_fid_vs_latency_s.svg", "pareto_fid_vs_latency_s.pdf",
                 "hypervolume.png", "importances.pdf", "pareto_set.csv", "pareto_set.md", "pareto_set.tex"):
        assert (figures / name).stat().st_size > 0, name
    assert "| trial |" in (figures / "pareto_set.md").read_text()
    assert "\\toprule" in (figures / "pareto_set.tex").read_text()
    assert (figures / "pareto_fid_vs_latency_s.pdf").read_bytes().startswith(b"%PDF")
    capsys.readouterr()
    # resume: the same command does nothing; raising n_trials runs exactly the missing trials
    assert main(["sweep", str(path)]) == 0
    assert "is finished: 3/3" in capsys.readouterr().out
    assert main(["sweep", str(path), "--n-trials", "4", "--executor", "inprocess"]) == 0
    assert len(Store(url).rows("e2e")) == 4
    study = optuna.load_study(study_name="e2e", storage=url)
    assert len(study.best_trials) >= 1 and study.trials[0].user_attrs["baseline"]


def test_a_fidelity_objective_counts_the_baseline_as_identical_to_itself(tmp_path, results_dir):
    # the baseline has no images to be compared to; with psnr an objective it once failed, and with it every
    # later trial (no baseline images): the whole H100 run of experiments/gpu_sd15.yaml was lost so
    path, url = _write(tmp_path, "fidelity", executor="inprocess")
    path.write_text(path.read_text().replace("{fid: minimize, latency_s: minimize}",
                                             "{psnr: maximize, latency_s: minimize}"))
    assert main(["sweep", str(path)]) == 0
    rows = Store(url).rows("fidelity")
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["reason"] for r in rows]
    assert "psnr" in rows[0]["absent"] and all("psnr" in r["metrics"] for r in rows[1:])
    study = optuna.load_study(study_name="fidelity", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert study.trials[0].values[0] == float("inf")  # identical images
    assert all(t.values[0] == r["metrics"]["psnr"] for t, r in zip(study.trials[1:], rows[1:]))

    # resumed on a host that did not run the baseline (a fresh GPU machine, a cluster without a shared results/):
    # its images are regenerated from its configuration once, and the new trial is compared to them
    base = paths.artifacts(folder("fidelity", url), 0)
    originals = {f.name: f.read_bytes() for f in (base / "images").glob("*.png")}
    shutil.rmtree(base / "images")
    assert main(["sweep", str(path), "--n-trials", "4"]) == 0
    rows = Store(url).rows("fidelity")
    assert len(rows) == 4 and rows[3]["status"] == "ok" and "psnr" in rows[3]["metrics"], rows[3]["reason"]
    assert {f.name: f.read_bytes() for f in (base / "images").glob("*.png")} == originals  # same seeds, same images
    regenerated = rows[3]["protocols"]["psnr"]["baseline_regenerated"]
    assert regenerated["reason"] == "this host lacked the baseline's images" and regenerated["seconds"] > 0
    assert "baseline_regenerated" not in rows[1]["protocols"]["psnr"]
    assert len(Store(url).rows("fidelity", 0)) == 1  # the baseline's row is not written again
    assert not list(base.parent.glob("*.regenerating-*"))


def test_a_failing_trial_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    (tmp_path / "empty.txt").write_text("\n")  # exists (validation passes), holds no prompt (the trial fails)
    path, url = _write(tmp_path, "fails", n=2, executor="inprocess", extra=f", prompt_set: {tmp_path / 'empty.txt'}")
    assert main(["sweep", str(path)]) == 0
    rows = Store(url).rows("fails")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "holds no prompts" in rows[0]["reason"]
    study = optuna.load_study(study_name="fails", storage=url)
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.FAIL}


def test_a_precision_this_device_cannot_run_stops_the_sweep_before_anything_is_written(refused_sweep):
    refused_sweep("precision: fp16", "fp16 needs a CUDA device")


def test_a_trial_past_its_time_limit_fails_with_the_reason(tmp_path):
    path, url = _write(tmp_path, "slow", n=1, timeout=1)
    assert main(["sweep", str(path)]) == 0
    (row,) = Store(url).rows("slow")
    assert row["status"] == "failed" and "timeout" in row["reason"]


def test_report_notebook_runs_under_papermill(tmp_path, results_dir):
    import papermill

    path, url = _write(tmp_path, "nbreport", n=2, executor="inprocess")
    assert main(["sweep", str(path)]) == 0
    out = tmp_path / "report.ipynb"
    papermill.execute_notebook("notebooks/report.ipynb", str(out), parameters={"study": "nbreport", "storage": url},
                               kernel_name="python3", progress_bar=False, start_timeout=300)
    text = json.dumps(nbformat.read(out, as_version=4).cells[-2].outputs)
    assert "image/png" in text


def test_trial_notebook_parameters_match_the_trial_config():
    import dataclasses

    import papermill

    from workbench.config import TrialConfig

    params = papermill.inspect_notebook("notebooks/trial.ipynb")
    knobs = {f.name: f.default for f in dataclasses.fields(TrialConfig)}
    import ast
    for name, default in knobs.items():
        value = ast.literal_eval(params[name]["default"])
        assert type(value) is type(default) and value == default, name


def test_experiment_in_store_uses_same_database_as_optuna(tmp_path):
    path, url = _write(tmp_path, "shared", n=1, executor="inprocess")
    assert main(["sweep", str(path)]) == 0
    import sqlalchemy as sa
    tables = set(sa.inspect(sa.create_engine(url)).get_table_names())
    assert {"workbench_trials", "studies", "trials"} <= tables
    assert experiment.load(path).name == "shared"


def test_ctrl_c_marks_the_trial_interrupted_writes_nothing_and_resume_finishes(tmp_path, monkeypatch, capsys):
    from workbench.study import executors, sweep as sweep_mod

    path, url = _write(tmp_path, "ctrlc", n=2, executor="inprocess")
    real = executors.run_inprocess
    calls = []

    def interrupted(config, **kw):
        calls.append(kw["trial_number"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, **kw)
    monkeypatch.setitem(sweep_mod.EXECUTORS, "inprocess", interrupted)
    assert main(["sweep", str(path)]) == 0
    assert "interrupted" in capsys.readouterr().out
    assert [r["trial_number"] for r in Store(url).rows("ctrlc")] == [0]  # no row for the interrupted trial
    monkeypatch.setitem(sweep_mod.EXECUTORS, "inprocess", real)
    assert main(["sweep", str(path)]) == 0
    rows = Store(url).rows("ctrlc")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    study = optuna.load_study(study_name="ctrlc", storage=url)
    assert sum(bool(t.user_attrs.get("interrupted")) for t in study.trials) == 1


def test_dead_kernel_and_timeout_errors_become_readable_reasons():
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    from workbench.study.executors import _reason

    assert _reason(DeadKernelError("Kernel died"), 60).startswith("kernel died")
    assert _reason(CellTimeoutError("A cell timed out while it was being executed"), 60).startswith("timeout")


def test_a_sampled_combination_the_knobs_refuse_together_is_skipped_not_counted_and_writes_nothing(tmp_path, capsys):
    from workbench.study import sweep as sweep_mod

    db = tmp_path / "wb.db"
    path = tmp_path / "combo.yaml"
    path.write_text(textwrap.dedent(f"""
        name: combo
        model: tiny-random
        fixed: {{seeds: "0-1", batch_size: 2, timing_repeats: 1, steps: 2, quality: false}}
        baseline: {{prune_ratio: 0.0, recovery_steps: 0}}
        search_space:
          prune_ratio: [0.1, 0.0]
          recovery_steps: [0, 2]
        objectives: {{latency_s: minimize}}
        sampler: {{name: RandomSampler, seed: 0}}
        n_trials: 2
        storage: sqlite:///{db}
        executor: inprocess
    """))
    exp = experiment.load(path)
    study = sweep_mod.open_study(exp)  # the baseline first, then a combination each value of which is valid alone
    study.enqueue_trial({"prune_ratio": 0.0, "recovery_steps": 2})
    study.enqueue_trial({"prune_ratio": 0.0, "recovery_steps": 0})
    assert main(["sweep", str(path)]) == 0
    out = capsys.readouterr().out
    assert "#1 skipped" in out and "prune_ratio is 0" in out
    study = optuna.load_study(study_name="combo", storage=f"sqlite:///{db}")
    assert [t.number for t in sweep_mod.counted(study.trials)] == [0, 2]
    assert study.trials[1].user_attrs.get("invalid") and study.trials[1].state == optuna.trial.TrialState.FAIL
    assert [r["trial_number"] for r in Store(f"sqlite:///{db}").rows("combo")] == [0, 2]


def test_a_same_named_study_in_another_storage_leaves_the_first_studys_files_byte_identical(
        tmp_path, results_dir, capsys, tiny_steps_experiment):
    """Two storages, one study name: each study's trial images (a later trial's fidelity reference) and figures live
    in a folder of its own, `<name>-<storage tag>`; the default store's study keeps the plain name."""
    from workbench.study.studies import folder_name

    def study(storage, steps):
        path = tmp_path / f"twin-{steps}.yaml"
        path.write_text(tiny_steps_experiment("twin", storage).replace("steps: 2}", f"steps: {steps}}}"))
        assert main(["sweep", str(path), "--n-trials", "1"]) == 0
        name = folder("twin", storage)
        return [p for root in (paths.artifacts(name), paths.figures(name)) for p in sorted(root.rglob("*"))
                if p.is_file()]

    first_url, second_url = f"sqlite:///{tmp_path / 'a.db'}", f"journal:///{tmp_path / 'b.journal'}"
    first = study(first_url, 3)
    before = {p: p.read_bytes() for p in first}
    assert any(p.name == "grid.png" for p in first) and any(p.name == "pareto_set.md" for p in first)
    out = capsys.readouterr().out
    assert f"figures in {paths.figures(folder('twin', first_url))}/" in out  # the report says where they are
    second = study(second_url, 2)  # another baseline: other images, other figures
    assert folder("twin", first_url) != folder("twin", second_url) and not set(first) & set(second)
    assert {p: p.read_bytes() for p in first} == before
    own = f"sqlite:///{Path(results_dir).resolve() / 'workbench.db'}"
    assert folder_name("twin", own) == "twin" and folder_name("twin", first_url).startswith("twin-")


def test_a_grid_search_runs_its_last_grid_point_after_the_enqueued_baseline(tmp_path):
    """Optuna's GridSampler reads a finished trial's grid id, which the enqueued baseline lacks: with one grid point
    left it raised KeyError('grid_id') and the sweep stopped before the grid ran (optuna PR #6844)."""
    path, url = _write(tmp_path, "grid", n=2, executor="inprocess", extra=", quality: false")
    path.write_text(path.read_text().replace("{name: TPESampler, seed: 0}",
                                             "{name: GridSampler, seed: 0, search_space: {scheduler: [euler], "
                                             "steps: [2]}}").replace("{fid: minimize,", "{gflops_per_image: minimize,"))
    assert main(["sweep", str(path)]) == 0
    rows = Store(url).rows("grid")
    assert [(r["status"], r["config"]["scheduler"], r["config"]["steps"]) for r in rows] == [
        ("ok", "ddim", 3), ("ok", "euler", 2)]  # the baseline, then the one grid point
