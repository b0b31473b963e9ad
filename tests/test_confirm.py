"""`workbench confirm`: held-out seeds disjoint from the sweep's, interleaved timing that never calls a speed-neutral
change faster, paired quality differences, verdicts from intervals, resume without re-running, and bad input
refused in one line before anything is written."""
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench import paths
from workbench.cli import main
from workbench.config import parse_seeds
from workbench.errors import ConfigError
from workbench.measure import paired
from workbench.measure.spread import median_interval
from workbench.report.confirm import write_confirm
from workbench.study import confirm, executors, experiment
from workbench.study.store import Store
from workbench.study.studies import where
from workbench.study.sweep import sweep

# cost only (quality: false): trial 1 changes the CFG scale alone, the same UNet work as the baseline's
EXP = """
name: {name}
model: tiny-random
fixed: {{seeds: "0-3", batch_size: 2, timing_repeats: 1, steps: 2, quality: false}}
baseline: {{cfg_scale: 7.5}}
search_space:
  cfg_scale: {{type: categorical, choices: [7.5, 3.0]}}
objectives: {{latency_s: minimize, gflops_per_image: minimize}}
sampler: {{name: RandomSampler, seed: 0}}
n_trials: 2
storage: sqlite:///{db}
executor: inprocess
confirm: {{n: 4, rounds: 6{extra}}}
"""


@pytest.fixture(scope="module")
def study(swept):
    exp, path, tmp = swept("cf", EXP)
    rows = Store(exp.storage).rows("cf")
    assert [r["config"]["cfg_scale"] for r in rows] == [7.5, 3.0]  # trial 1: the speed-neutral change
    return exp, path, tmp


def _counting(monkeypatch):
    """Count quality trials run and pipelines built for timing."""
    import workbench.trial

    counts = {"trials": 0, "builds": 0}
    run, build = executors.EXECUTORS["inprocess"], workbench.trial.build_pipeline

    def counted_run(*args, **kwargs):
        counts["trials"] += 1
        return run(*args, **kwargs)

    def counted_build(*args, **kwargs):
        counts["builds"] += 1
        return build(*args, **kwargs)

    monkeypatch.setitem(executors.EXECUTORS, "inprocess", counted_run)
    monkeypatch.setattr(workbench.trial, "build_pipeline", counted_build)
    return counts


def test_confirm_on_held_out_seeds_never_calls_a_speed_neutral_change_faster_and_resumes(study, monkeypatch,
                                                                                         capsys):
    exp, path, _ = study
    counts = _counting(monkeypatch)
    assert main(["confirm", str(path), "--trials", "1"]) == 0
    out = capsys.readouterr().out
    # quality trials of the baseline and #1 (each builds its pipeline), then timing: the baseline once, #1, and the
    # A/A control's second build of the baseline
    assert counts == {"trials": 2, "builds": 5}
    rows = {r["trial_number"]: r for r in Store(exp.storage).rows("cf-confirm")}
    assert set(rows) == {0, 1}
    sweep_seeds = {s for r in Store(exp.storage).rows("cf") for s in parse_seeds(r["config"]["seeds"])}
    for row in rows.values():
        held_out = parse_seeds(row["config"]["seeds"])
        assert len(held_out) == 4 and not set(held_out) & sweep_seeds
        entry = row["protocols"]["confirm"]
        assert len(entry["ratios"]) == 6 and entry["speedup"]["lo"] <= entry["speedup"]["median"] <= \
            entry["speedup"]["hi"]
        # the CFG scale and the baseline itself do the same work: never called faster
        assert not entry["verdict"].startswith("confirmed faster"), entry["reason"]
        assert f"#{row['trial_number']}" in out
    assert rows[1]["config"]["cfg_scale"] == 3.0 and rows[0]["config"]["cfg_scale"] == 7.5
    figures = where("cf", exp.storage)[1]  # a study outside the results' own store: its folder is keyed
    data = (figures / "confirm.json").read_text()
    assert '"seeds": "4-7"' in data and '"wall_s"' in data
    pareto = (figures / "pareto_set.md").read_text()  # the report gains the confirmation's columns
    assert "confirmed speed-up (N=4)" in pareto and "| verdict |" in pareto
    assert "| 1 |" in (figures / "confirm.md").read_text()

    written = [r["written_at"] for r in Store(exp.storage).rows("cf-confirm")]
    quiet = {"progress": False, "echo": lambda *_: None}
    confirm.run_confirm("cf", exp.storage, exp.confirm, [1], **quiet)  # resumed: everything is stored
    assert counts == {"trials": 2, "builds": 5}
    assert [r["written_at"] for r in Store(exp.storage).rows("cf-confirm")] == written

    # other thresholds re-judge the stored intervals and measure nothing
    confirm.run_confirm("cf", exp.storage, exp.confirm.replace(speedup=1.5), [1], **quiet)
    assert counts == {"trials": 2, "builds": 5}
    assert all(r["protocols"]["confirm"]["settings"]["speedup"] == 1.5 for r in Store(exp.storage).rows("cf-confirm"))


@pytest.mark.parametrize("args, extra, hint", [
    (["--trials", "9"], "", "--trials: study 'cf' has no trial 9; its trials: 0, 1"),
    (["--trials", "1,x"], "", "--trials '1,x': write trial numbers"),
    (["--n", "2"], "", "--n: images per trial, a whole number >= 4"),
    (["--rounds", "3"], "", "--rounds: timing rounds, a whole number >= 6"),
    ([], ", tolerance: {fdi: 5}", "confirm.tolerance.fdi: not a metric confirm compares pairwise; did you mean 'fid'?"),
    ([], ", tolerance: {fid: -1}", "confirm.tolerance.fid: how much worse still counts as equal, a number >= 0"),
    ([], ", rund: 3", "confirm.rund: unknown key; did you mean 'rounds'?"),
])
def test_bad_confirm_input_is_one_line_and_writes_nothing(study, tmp_path, capsys, args, extra, hint):
    exp, path, _ = study
    bad = tmp_path / "cf.yaml"
    bad.write_text(path.read_text().replace("rounds: 6}", f"rounds: 6{extra}}}"))
    store = Store(exp.storage)
    before = [(r["trial_number"], r["written_at"]) for r in store.rows("cf-confirm")]
    folder = where("cf-confirm", exp.storage)[0]
    files = sorted(folder.rglob("*")) if folder.exists() else []
    assert main(["confirm", str(bad), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and hint in err and "\n" not in err, err
    assert [(r["trial_number"], r["written_at"]) for r in store.rows("cf-confirm")] == before
    assert (sorted(folder.rglob("*")) if folder.exists() else []) == files


def test_the_baselines_aa_control_pairs_its_images_exactly(tmp_path):
    """Quality on: the baseline confirmed against itself on held-out seeds keeps per-image evidence, and every paired
    difference of a trial with itself is exactly zero with a zero-width interval."""
    path = tmp_path / "aa.yaml"
    path.write_text(textwrap.dedent(EXP.format(name="aa", db=tmp_path / "wb.db", extra=", tolerance: {fid: 0}"))
                    .replace("quality: false", "quality: true").replace("n_trials: 2", "n_trials: 1"))
    exp = experiment.load(path)
    sweep(exp, progress=False, echo=lambda *_: None)
    frame = confirm.run_confirm("aa", exp.storage, exp.confirm, trials=[0], progress=False, echo=lambda *_: None)
    assert list(frame["trial"]) == [0]
    row = Store(exp.storage).rows("aa-confirm", 0)[0]
    with np.load(paths.project_root() / row["artifacts"]["per_image"]
                 if not Path(row["artifacts"]["per_image"]).exists() else row["artifacts"]["per_image"]) as evidence:
        assert list(evidence["seeds"]) == [4, 5, 6, 7] and evidence["inception"].shape == (4, 2048)
        assert evidence["clip_score"].shape == (4,) and evidence["align_hits"].shape == (4, 5)
    deltas = row["protocols"]["confirm"]["deltas"]
    assert {"fid", "kid", "cmmd", "clip_score", "align_mean"} <= set(deltas)
    assert all(d["delta"] == 0 and d["lo"] == 0 and d["hi"] == 0 for d in deltas.values()), \
        [(m, d) for m, d in deltas.items() if (d["delta"], d["lo"], d["hi"]) != (0, 0, 0)]
    assert row["metrics"]["delta_fid"] == 0 and row["protocols"]["confirm"]["verdict"] != confirm.FASTER_EQUAL
    sweep_rows = Store(exp.storage).frame("aa")
    written = write_confirm("aa", exp.storage, sweep_rows, 0, tmp_path / "figures")
    assert written["confirm"].is_file() and written["confirm"].with_suffix(".pdf").is_file()
    assert "Δ fid" in written["confirm_md"].read_text()


def _evidence(n=24, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"seeds": np.arange(n), "inception": (torch.randn(n, 2048, generator=g) + shift).numpy(),
            "clip_embedding": torch.randn(n, 16, generator=g).numpy(),
            "clip_score": torch.randn(n, generator=g).double().numpy() * 5 + 30,
            "align_hits": (torch.rand(n, 5, generator=g) > 0.3).numpy()}


def test_paired_differences_cancel_what_both_share_and_resolve_what_differs():
    base = _evidence()
    real = (torch.randn(24, 2048, generator=torch.Generator().manual_seed(9)), torch.randn(24, 16))
    same = paired.compare(base, base, *real, resamples=50)
    assert all((d["delta"], d["lo"], d["hi"]) == (0, 0, 0) for d in same.values())
    better = {**base, "clip_score": base["clip_score"] + 1.0}  # every image +1: paired, the interval is a point
    d = paired.compare(better, base, *real, resamples=50)["clip_score"]
    assert d["delta"] == pytest.approx(1.0) and d["lo"] == pytest.approx(1.0) and d["hi"] == pytest.approx(1.0)
    far = paired.compare({**_evidence(shift=0.5)}, base, *real, resamples=50)["fid"]  # moved away from the reference
    assert far["lo"] > 0 and far["lo"] <= far["delta"] <= far["hi"]
    with pytest.raises(ValueError, match="same seeds"):
        paired.compare({**base, "seeds": np.arange(1, 25)}, base, *real)


def test_median_interval_is_order_statistics_and_needs_six_values():
    assert median_interval(range(1, 11)) == (2.0, 9.0)  # binomial(10, 1/2): ranks 2 and 9 cover >= 95 %
    assert median_interval([5, 1, 4, 2, 6, 3]) == (1.0, 6.0)
    with pytest.raises(ValueError, match="more than 5 values"):
        median_interval(range(5))


def _entry(speed, **deltas):
    return {"speedup": {"median": sum(speed) / 2, "lo": speed[0], "hi": speed[1]},
            "deltas": {m: {"delta": sum(v) / 2, "lo": v[0], "hi": v[1]} for m, v in deltas.items()}}


@pytest.mark.parametrize("speed, deltas, expected", [
    ((0.96, 1.07), {"fid": (-1, 1)}, confirm.NOT_RESOLVED),         # inside the timing noise
    ((1.02, 1.30), {"fid": (-1, 1)}, confirm.NOT_RESOLVED),         # faster, but not clearly beyond 1.05x
    ((1.50, 1.70), {"fid": (-1, 4)}, confirm.FASTER_EQUAL),
    ((1.50, 1.70), {"fid": (6, 12)}, confirm.TRADE_OFF),
    ((1.50, 1.70), {"fid": (-2, 9)}, confirm.NOT_RESOLVED),         # quality straddles the tolerance
    ((1.50, 1.70), {"align_mean": (-0.2, -0.1)}, confirm.TRADE_OFF),  # alignment is maximised: a drop is worse
    ((0.40, 0.60), {"fid": (-9, -6)}, confirm.TRADE_OFF),           # slower and better
    ((0.40, 0.60), {"fid": (-1, 2)}, confirm.SLOWER),
])
def test_verdicts_follow_the_intervals(speed, deltas, expected):
    tolerance = {"fid": 5.0, "align_mean": 0.05}
    settings = confirm.Settings(tolerance={m: tolerance[m] for m in deltas})
    verdict, reason = confirm.verdict(_entry(speed, **deltas), settings)
    assert verdict == expected, reason


def test_settings_default_to_zero_tolerance_on_the_quality_objectives():
    s = confirm.parse_settings(None, ["fid", "latency_s", "align_mean"])
    assert s.tolerance == {"fid": 0.0, "align_mean": 0.0} and (s.n, s.rounds, s.speedup) == (256, 10, 1.05)
    with pytest.raises(ConfigError, match="confirm: write a mapping"):
        confirm.parse_settings([1, 2])
