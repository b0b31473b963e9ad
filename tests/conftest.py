"""Test set-up: offline, results in a temporary folder, and a guard that fails any non-loopback connection."""
import os
import socket
import tempfile

import pytest

_RESULTS = tempfile.mkdtemp(prefix="workbench-test-results-")
os.environ["WORKBENCH_RESULTS"] = _RESULTS  # workbench.paths reads it; papermill kernels inherit it
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WORKBENCH_CACHE", os.path.join(_RESULTS, "cache"))

_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
        raise AssertionError(f"test tried the network: connect to {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs with outbound connections failing loudly (a download attempt is a test failure)."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    yield


@pytest.fixture(scope="session")
def results_dir():
    return _RESULTS


@pytest.fixture(scope="session")
def tiny_pipe():
    from workbench.models import tiny_random_pipeline
    return tiny_random_pipeline()


@pytest.fixture
def refused_sweep(tmp_path, capsys):
    """`refused_sweep(fixed, hint, model="tiny-random")`: a tiny experiment with these fixed knobs must be refused by
    `workbench sweep` with one line naming `hint`, before anything is written: no store and nothing new under
    results/compressed."""
    import os
    import textwrap
    from pathlib import Path

    from workbench.cli import main

    def check(fixed: str, hint: str, model: str = "tiny-random") -> None:
        results = Path(os.environ["WORKBENCH_RESULTS"]) / "compressed"
        before = sorted(results.rglob("*")) if results.exists() else []
        db = tmp_path / "store.db"
        (tmp_path / "exp.yaml").write_text(textwrap.dedent(f"""
            name: refused
            model: {model}
            fixed: {{seeds: "0-1", steps: 2, {fixed}}}
            search_space:
              cfg_scale: {{type: float, low: 1.0, high: 5.0}}
            objectives: {{latency_s: minimize}}
            sampler: {{name: RandomSampler, seed: 0}}
            storage: sqlite:///{db}
            executor: inprocess
        """))
        assert main(["sweep", str(tmp_path / "exp.yaml")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and hint in err and "\n" not in err
        assert not db.exists()
        assert (sorted(results.rglob("*")) if results.exists() else []) == before

    return check


@pytest.fixture
def refused_config():
    """`refused_config(values, field, hint)`: TrialConfig refuses these values with one line naming field and hint."""
    from workbench.config import TrialConfig
    from workbench.errors import ConfigError

    def check(values: dict, field: str, hint: str) -> None:
        with pytest.raises(ConfigError) as err:
            TrialConfig.from_dict(values)
        message = str(err.value)
        assert field in message and hint in message and "\n" not in message

    return check


TINY_STEPS_EXPERIMENT = """
name: {name}
model: tiny-random
fixed: {{seeds: "0-1", batch_size: 2, timing_repeats: 1, quality: false}}
baseline: {{scheduler: ddim, steps: 2}}
search_space:
  steps: {{type: int, low: 1, high: 3}}
objectives: {{latency_s: minimize, gflops_per_image: minimize}}
sampler: {{name: RandomSampler, seed: 0}}
n_trials: 3
storage: {storage}
executor: inprocess
"""


@pytest.fixture
def tiny_steps_experiment():
    """`tiny_steps_experiment(name, storage)`: the YAML of a 3-trial steps study of the tiny model, cost only."""
    return lambda name, storage: TINY_STEPS_EXPERIMENT.format(name=name, storage=storage)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """`swept(name, text)`: write the experiment YAML `text` (formatted with name, db and an empty extra) into a fresh
    folder, load it and run its sweep in process; returns (experiment, its path, the folder)."""
    import textwrap

    from workbench.study import experiment
    from workbench.study.sweep import sweep

    def run(name: str, text: str):
        tmp = tmp_path_factory.mktemp(name)
        path = tmp / f"{name}.yaml"
        path.write_text(textwrap.dedent(text.format(name=name, db=tmp / "wb.db", extra="")))
        exp = experiment.load(path)
        sweep(exp, progress=False, echo=lambda *_: None)
        return exp, path, tmp
    return run
