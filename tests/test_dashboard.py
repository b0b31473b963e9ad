"""optuna-dashboard opens the results database as it is and shows our studies with their Pareto fronts."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from workbench.study import experiment
from workbench.study.store import Store
from workbench.study.sweep import sweep


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_optuna_dashboard_reads_a_study_and_its_pareto_front(tmp_path, tiny_steps_experiment):
    db = tmp_path / "wb.db"
    path = tmp_path / "dash.yaml"
    path.write_text(tiny_steps_experiment("dash", f"sqlite:///{db}"))
    exp = experiment.load(path)
    sweep(exp, progress=False, echo=lambda *_: None)
    assert len(Store(exp.storage).rows("dash")) == 3
    port = _free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    server = subprocess.Popen([str(dashboard), f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-2000:]
                time.sleep(0.5)
        else:
            raise AssertionError("optuna-dashboard did not answer within 60 s")
        study = next(s for s in studies if s["study_name"] == "dash")
        assert [d.lower() for d in study["directions"]] == ["minimize", "minimize"]
        detail = _get(f"{base}/api/studies/{study['study_id']}")
        assert len(detail["trials"]) == 3 and detail["best_trials"]  # the Pareto front it draws
        assert {t["number"] for t in detail["best_trials"]} <= {t["number"] for t in detail["trials"]}
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert len(Store(exp.storage).rows("dash")) == 3  # our table untouched beside Optuna's
