"""Warm kernels (`workbench.study.kernels`, the `papermill` executor): real kernels, real notebook executions, tiny
models. A kernel serves one trial and is never reused; one that dies while waiting is replaced; Ctrl-C leaves no
kernel behind."""
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
import optuna

from workbench.cli import main
from workbench.study import executors, forkserver, kernels
from workbench.study.store import Store

EXP = """
name: {name}
model: tiny-random
fixed: {{seeds: "0-1", batch_size: 2, timing_repeats: {repeats}, quality: false}}
baseline: {{scheduler: ddim, steps: 2}}
search_space:
  steps: {{type: int, low: 1, high: 3}}
objectives: {{latency_s: minimize}}
sampler: {{name: RandomSampler, seed: 0}}
n_trials: {n}
storage: sqlite:///{db}
executor: papermill
timeout_s: 300
"""


def _write(tmp_path, name, n, repeats=1):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(EXP.format(name=name, n=n, db=tmp_path / "wb.db", repeats=repeats)))
    return path, f"sqlite:///{tmp_path / 'wb.db'}"


def _kernels_of(pid: int, marker: str = "JPY_PARENT_PID") -> list[int]:
    """Live kernel processes started by process `pid`: jupyter_client sets JPY_PARENT_PID in their environment (for
    forked kernels, their launchers); with marker=SERVER_OF, the fork server and the kernels it forked (a forked
    process shows the environment its server was started with)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{marker}={pid}".encode() in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _everything_of(pid: int) -> list[int]:
    return _kernels_of(pid) + _kernels_of(pid, forkserver.SERVER_OF)


def test_a_kernel_serves_one_trial_its_globals_die_with_it(tmp_path, monkeypatch):
    """Each trial plants a global in its kernel and reports what it finds: no trial sees another's."""
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell('trial_number = 0\nstorage = ""\nstudy = ""\nartifacts_dir = ""')
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell(
        "import os\n"
        "print('seen', sorted(k for k in globals() if k.startswith('planted_')), 'pid', os.getpid())\n"
        "globals()[f'planted_{trial_number}'] = True")]
    notebook.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(notebook, tmp_path / "plant.ipynb")
    monkeypatch.setattr(executors, "TRIAL_NOTEBOOK", tmp_path / "plant.ipynb")
    outputs = []
    try:
        for number in range(3):
            executors.run_papermill({"model": "tiny-random"}, storage=f"sqlite:///{tmp_path}/wb.db", study="plant",
                                    trial_number=number, baseline_dir=None, artifacts_dir=tmp_path / str(number),
                                    timeout_s=120)
            executed = nbformat.read(tmp_path / str(number) / "trial.ipynb", as_version=4)
            outputs.append(executed.cells[-1].outputs[0]["text"].split())
            assert executors._POOL.waiting is not None  # the next trial's kernel is already starting
    finally:
        executors.close()
    assert [out[1] for out in outputs] == ["[]"] * 3, outputs  # a planted global never reaches a later trial
    assert len({out[-1] for out in outputs}) == 3  # three trials, three kernel processes
    assert _everything_of(os.getpid()) == []  # each shut down after its trial; the waiting one and the server by close()


def test_a_warm_sweep_prepares_each_kernel_and_a_kernel_killed_while_waiting_is_replaced(tmp_path, monkeypatch,
                                                                                       capfd):
    path, url = _write(tmp_path, "warm", n=3)
    real = executors.EXECUTORS["papermill"]
    killed = []

    def kill_the_waiting_kernel_before_trial_2(config, **kw):
        if kw["trial_number"] == 2:
            waiting = executors._POOL.waiting
            assert waiting.wait_ready(120)  # prepared and idle
            os.kill(waiting.pid, signal.SIGKILL)
            killed.append(waiting.pid)
            deadline = time.monotonic() + 30
            while waiting.exit_code() is None and time.monotonic() < deadline:
                time.sleep(0.1)
        return real(config, **kw)

    monkeypatch.setitem(executors.EXECUTORS, "papermill", kill_the_waiting_kernel_before_trial_2)
    assert main(["sweep", str(path)]) == 0
    assert f"warm kernel {killed[0]} died while waiting" in capfd.readouterr().err
    rows = Store(url).rows("warm")
    assert [r["status"] for r in rows] == ["ok"] * 3, [r["reason"] for r in rows]  # the kill cost no trial
    study = optuna.load_study(study_name="warm", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    prepared = [r["provenance"]["prepared"] for r in rows]
    assert all(p["prepared"].get("imports") is not None and not p["failed"] for p in prepared), prepared
    assert len({p["pid"] for p in prepared}) == 3 and killed[0] not in {p["pid"] for p in prepared}
    if forkserver.SUPPORTED:  # one fork server prepared once; each trial's kernel a process forked from it
        assert len({p["forked_from"] for p in prepared}) == 1, prepared
    for r in rows:  # papermill ran every trial: its executed notebook is kept
        notebook = nbformat.read(r["artifacts"]["notebook"], as_version=4)
        assert f"trial_number = {r['trial_number']}" in notebook.cells[2].source
    assert _everything_of(os.getpid()) == []


def test_ctrl_c_during_a_warm_trial_marks_it_interrupted_and_leaves_no_kernel_behind(tmp_path, results_dir):
    path, url = _write(tmp_path, "warmctrlc", n=2, repeats=400)  # a trial long enough to be interrupted in flight
    env = {**os.environ, "WORKBENCH_RESULTS": results_dir}
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "sweep", str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as tests/test_workers.py
    try:
        from workbench.study.studies import folder_name  # a study outside the results' own store: a keyed folder

        notebook = Path(results_dir) / "artifacts" / folder_name("warmctrlc", url) / "trial-0000" / "trial.ipynb"
        deadline = time.monotonic() + 300
        while not notebook.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert notebook.is_file(), "papermill never started trial 0"
        deadline = time.monotonic() + 60
        while len(_kernels_of(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        kernels_before = _kernels_of(proc.pid)
        assert len(kernels_before) == 2, kernels_before  # the trial's kernel and the next trial's, waiting
        if forkserver.SUPPORTED:  # their launchers; the kernels themselves and the fork server
            deadline = time.monotonic() + 30
            while len(_kernels_of(proc.pid, forkserver.SERVER_OF)) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(_kernels_of(proc.pid, forkserver.SERVER_OF)) >= 3  # (a kernel may fork helpers of its own)
        kernels_before = _everything_of(proc.pid)
        proc.send_signal(signal.SIGINT)  # to the sweep process only: its kernels run in sessions of their own
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # a failed assertion above must not leave the sweep running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0 and "interrupted" in out, out[-3000:]
    time.sleep(0.5)
    assert [p for p in kernels_before if Path(f"/proc/{p}").exists()
            and (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")] == []
    study = optuna.load_study(study_name="warmctrlc", storage=url)  # as any executor (resume: tests/test_sweep.py)
    assert study.trials[0].user_attrs.get("interrupted") and Store(url).rows("warmctrlc") == []


def test_the_warm_engine_is_registered_with_papermill_and_refuses_to_run_without_a_kernel():
    import pytest
    from papermill.engines import papermill_engines

    assert papermill_engines.get_engine(kernels.ENGINE) is kernels.WarmKernelEngine
    with pytest.raises(ValueError, match="kernel="):
        kernels.WarmKernelEngine.execute_managed_notebook(None, "python3")
    assert {"papermill", "papermill-cold", "inprocess"} <= set(executors.EXECUTORS)


def test_a_prepared_pipeline_is_taken_once_and_preparation_leaves_the_random_state_alone(tmp_path):
    import torch

    from workbench.models import load_pipeline, prepare_pipeline
    from workbench.study import prepare

    before = torch.random.get_rng_state()
    report = prepare.prepare({"model": "reference", "quality": False})
    assert torch.equal(torch.random.get_rng_state(), before)
    assert set(report["prepared"]) == {"imports", "pipeline"} and not report["failed"]
    assert prepare.report() == report and prepare.report() is None  # one trial's row says so, no later one
    first, second = load_pipeline("reference"), load_pipeline("reference")
    assert getattr(first, "prepared", False) and not getattr(second, "prepared", False)  # one use, then disk
    assert first.unet is not second.unet
    assert not prepare_pipeline("tiny-random") and not prepare_pipeline("sd15-random")  # built in the trial


def test_world_caption_embeddings_are_cached_and_equal_the_text_encoders(tmp_path):
    import torch

    from workbench.measure.alignment import caption_features
    from workbench.measure.clip_score import load_clip
    from workbench.measure.quality import world_caption_features
    from workbench.world.render import all_captions

    cached = world_caption_features(tmp_path)
    (path,) = tmp_path.iterdir()
    assert torch.equal(world_caption_features(tmp_path), cached)  # read back from the file
    model, processor = load_clip("reference")
    captions, _ = all_captions(template=0)
    assert torch.allclose(caption_features(model, processor.tokenizer, captions[:16]), cached[:16], atol=1e-5)
    assert len(cached) == len(captions) and path.suffix == ".pt"


def test_a_fork_server_on_a_cuda_host_prepares_with_torchao_looking_absent():
    """transformers and diffusers import an installed torchao, and torchao's import reads the GPU's compute capability
    (initialising CUDA: no kernel could be forked after it, as on an H100). The server prepares with torchao hidden,
    and a forked kernel imports it when its trial asks (`is_available` forced true: this CPU has no CUDA)."""
    pytest.importorskip("torchao")
    code = textwrap.dedent("""
        import importlib.util, sys, torch
        torch.cuda.is_available = lambda: True
        from workbench.study.forkserver import torchao_hidden
        with torchao_hidden(torch):
            from transformers.utils import is_torchao_available
            assert importlib.util.find_spec("torchao") is None and not is_torchao_available()
            try:
                import torchao
            except ImportError:
                pass
            else:
                raise SystemExit("torchao was importable while hidden")
        from torchao.quantization import quantize_
        print("importable again")
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "importable again" in done.stdout, done.stderr[-2000:]
