"""The notebooks as papermill and JupyterLab see them: every parameter is read with its default and injected back
unchanged, and the report notebook run from notebooks/ (where JupyterLab starts its kernel) reads the project's
store and trial images, as the CLI run in the project does."""
import ast
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from workbench.study import experiment
from workbench.study.store import Store
from workbench.study.sweep import sweep

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _defaults(source: str) -> dict:
    """name -> value of every assignment in a parameters cell, as Python reads it."""
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(source).body
            if isinstance(node, ast.Assign)}


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_papermill_reads_and_injects_every_parameter_with_its_default(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    defaults = _defaults(cell.source)
    params = papermill.inspect_notebook(str(NOTEBOOKS / name))  # papermill drops a line it cannot parse
    assert set(params) == set(defaults)
    for key, value in defaults.items():
        assert ast.literal_eval(params[key]["default"]) == value, key
        assert params[key]["help"], key  # the trailing comment is papermill's help text (--help-notebook)
    out = tmp_path / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=defaults, prepare_only=True,
                               progress_bar=False)
    (injected,) = [c for c in nbformat.read(out, as_version=4).cells
                   if "injected-parameters" in c.metadata.get("tags", [])]
    assert _defaults(injected.source) == defaults


def test_report_notebook_run_from_notebooks_folder_uses_the_projects_store_and_images(tmp_path, monkeypatch,
                                                                                     tiny_steps_experiment):
    project = tmp_path / "project"
    for folder in ("experiments", "notebooks"):
        (project / folder).mkdir(parents=True)
    (project / "experiments" / "labreport.yaml").write_text(
        tiny_steps_experiment("labreport", "sqlite:///results/workbench.db"))
    monkeypatch.chdir(project)  # the sweep as `workbench sweep experiments/labreport.yaml` run in the project
    monkeypatch.setenv("WORKBENCH_RESULTS", "results")  # read when a path is needed: relative, as the CLI has it
    sweep(experiment.load("experiments/labreport.yaml"), progress=False, echo=lambda *_: None)
    rows = Store("sqlite:///results/workbench.db").rows("labreport")
    assert not Path(rows[0]["artifacts"]["images"]).is_absolute()  # rows hold paths relative to the project
    out = project / "notebooks" / "report-run.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / "report.ipynb"), str(out), parameters={"study": "labreport"},
                               cwd=str(project / "notebooks"), kernel_name="python3", progress_bar=False,
                               start_timeout=300)  # the default storage, relative, from JupyterLab's kernel folder
    outputs = json.dumps([c.outputs for c in nbformat.read(out, as_version=4).cells if c.cell_type == "code"])
    assert "'images'" in outputs and "'pareto_md'" in outputs  # the image grid found the trials' images
    assert not (project / "notebooks" / "results").exists()  # no empty store created beside the notebook


def test_study_browser_finds_a_sweeps_images_from_the_notebooks_folder(tmp_path, monkeypatch):
    from PIL import Image

    from workbench.lab.browse import _grid_bytes

    project = tmp_path / "project"
    (project / "experiments").mkdir(parents=True)
    (project / "notebooks").mkdir()
    grid = project / "results" / "artifacts" / "s" / "trial-0000" / "grid.png"
    grid.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(grid)
    monkeypatch.chdir(project / "notebooks")
    assert _grid_bytes({"artifacts": {"grid": "results/artifacts/s/trial-0000/grid.png"}}).startswith(b"\x89PNG")
    assert _grid_bytes({"artifacts": {}}) == b""
