"""Regenerate the notebooks (stored without outputs) from the package: `python notebooks/_build.py`.

The trial notebook's parameters cell is written from TrialConfig's declared fields (default and help of each),
so its flat typed defaults never drift.
"""
import nbformat as nbf

from workbench.config import FIELDS
from workbench.paths import DEFAULT_STORAGE

def parameters_cell(source):
    """A code cell tagged `parameters`, as papermill expects."""
    cell = nbf.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


def nb(cells):
    n = nbf.v4.new_notebook()
    n.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                  "language_info": {"name": "python"}}
    n.cells = cells
    for i, cell in enumerate(cells):  # stable ids: regenerating an unchanged notebook changes nothing
        cell.id = f"cell-{i}"
    return n

params = ["# Parameters (papermill injects overrides below this cell). One trial's knobs, flat and typed."]
for f in FIELDS:
    assert "=" not in f.help, f"{f.name}: papermill's parameter parser reads '=' in a comment as an assignment"
    default = f'"{f.default}"' if isinstance(f.default, str) else repr(f.default)
    params.append(f"{f.name} = {default}  # {f.help}")
params += ["", "# Where the row goes (set by `workbench sweep`)",
           f'storage = "{DEFAULT_STORAGE}"  # SQLAlchemy URL of the results store',
           'study = "interactive"  # study name the row is filed under',
           "trial_number = 0  # Optuna trial number",
           'baseline_dir = ""  # folder of the baseline images for fidelity, empty for none',
           'artifacts_dir = "results/artifacts/interactive/trial-0000"  # where images and the grid go',
           'notebook_out = ""  # path of this executed notebook, recorded on the row']
p = parameters_cell("\n".join(params))
knobs = ", ".join(f'"{f.name}": {f.name}' for f in FIELDS)
trial = nb([
    nbf.v4.new_markdown_cell("# One trial\nRuns one configuration, measures quality and cost, writes one row to the "
                             "results store. `workbench sweep` executes this notebook with papermill, one fresh kernel "
                             "per trial; run it by hand to explore one setting."),
    p,
    nbf.v4.new_code_cell("from workbench.study.executors import record_trial\n\n"
                         f"config = {{{knobs}}}\n"
                         "row = record_trial(config, storage, study, trial_number, baseline_dir or None, artifacts_dir,\n"
                         "                   notebook_out=notebook_out or None)"),
    nbf.v4.new_code_cell("import pandas as pd\nfrom IPython.display import Image, display\n\n"
                         "display(pd.Series(row['metrics'], name='value').to_frame())\n"
                         "display(pd.Series(row['absent'], name='absent because', dtype=str).to_frame())\n"
                         "display(Image(row['artifacts']['grid']))"),
])
nbf.write(trial, "notebooks/trial.ipynb")

rp = parameters_cell("# Parameters\n"
    'study = "quickstart"  # study name (the experiment\'s name)\n'
    'storage = "sqlite:///results/workbench.db"  # SQLAlchemy URL; a relative path is from the project root, as for the CLI\n'
    'objectives = ""  # comma-separated metrics; empty for the study\'s objectives\n'
    'pairs = ""  # Pareto figures as "x,y;x,y"; empty for every pair of objectives\n'
    "ablate_trial = -1  # a trial to ablate (its missing rungs run into <study>-ablation); -1 for none\n"
    'confirm_trials = ""  # pareto, or trial numbers like 3,7: re-measured on held-out seeds (workbench confirm); empty for none\n'
    "confirm_n = 256  # images per confirmed point on the held-out seeds")
report = nb([
    nbf.v4.new_markdown_cell("# Study report\nPareto fronts, hypervolume over trials, the Pareto set and the ablation "
                             "ladders of one study, from the results store. Same code as `workbench report` and "
                             "`workbench ablate`."),
    rp,
    nbf.v4.new_code_cell("import os\n\nfrom workbench.paths import project_root\nfrom workbench.report.make import make_report\n"
                         "from workbench.study.store import trials\n\n"
                         "os.chdir(project_root())  # JupyterLab starts this kernel in notebooks/: paths as for the CLI\n"
                         "paths = make_report(study, storage, objectives.split(',') if objectives else None,\n"
                         "                    [tuple(p.split(',')) for p in pairs.split(';')] if pairs else None)\n"
                         "paths"),
    nbf.v4.new_code_cell("from workbench.report.ablation import write_ladder\nfrom workbench.study.ablation import run_ladder\n\n"
                         "if ablate_trial >= 0:  # the same code as `workbench ablate <study> --trial N`\n"
                         "    ladder = run_ladder(study, ablate_trial, storage)\n"
                         "    paths.update(write_ladder(ladder, paths['pareto_md'].parent,\n"
                         "                              objectives.split(',') if objectives else None))"),
    nbf.v4.new_code_cell("from IPython.display import display\nfrom workbench.report.make import make_report\nfrom workbench.study import confirm\n"
                         "from workbench.study.studies import objectives as study_objectives\n\n"
                         "if confirm_trials:  # the same code as `workbench confirm <study> --trials ... --n ...`\n"
                         "    settings = confirm.parse_settings({'n': confirm_n}, study_objectives(study, storage))\n"
                         "    chosen = None if confirm_trials == 'pareto' else [int(t) for t in confirm_trials.split(',')]\n"
                         "    display(confirm.run_confirm(study, storage, settings, chosen)[['trial', 'verdict', 'reason']])\n"
                         "    paths = make_report(study, storage, objectives.split(',') if objectives else None,\n"
                         "                        [tuple(p.split(',')) for p in pairs.split(';')] if pairs else None)"),
    nbf.v4.new_code_cell("from IPython.display import Image, Markdown, display\n\n"
                         "for name, path in paths.items():\n"
                         "    if path.suffix == '.png':\n        display(Image(str(path)))\n"
                         "display(Markdown(paths['pareto_md'].read_text()))"),
    nbf.v4.new_code_cell("frame = trials(study, storage)\nframe.drop(columns=['protocols', 'provenance', 'artifacts', 'absent'])"),
])
nbf.write(report, "notebooks/report.ipynb")

tp = parameters_cell("# Parameters\n"
    'work = "results/reference-training"  # checkpoint folder; every stage resumes from it\n'
    'fmnist_dir = ""  # folder of the Fashion-MNIST IDX files; empty for the bundled test split + Debian package\n'
    "vae_minutes = 2.2  # autoencoder budget (H100 minutes; as shipped)\n"
    "clip_minutes = 3.0  # joint contrastive phase\n"
    "clip_vision_minutes = 5.8  # vision-only phase against every caption\n"
    "unet_minutes = 15.5  # UNet budget\n"
    'dest = "results/reference-model"  # where the assembled sd/ and clip/ folders go')
train = nb([
    nbf.v4.new_markdown_cell("# Train the reference model\nThe same stages as `make reference-model` "
                             "(see workbench/reference/train.py). Needs a GPU for the budgets below; on a CPU set "
                             "tiny budgets to try the code."),
    tp,
    nbf.v4.new_code_cell("from pathlib import Path\nfrom workbench.reference import train\nfrom workbench.reference.assemble import assemble\n\n"
                         "common = ['--work', work] + (['--fmnist-dir', fmnist_dir] if fmnist_dir else [])\n"
                         "train.main(common + ['--stage', 'vae', '--minutes', str(vae_minutes)])\n"
                         "train.main(common + ['--stage', 'clip', '--minutes', str(clip_minutes)])\n"
                         "train.main(common + ['--stage', 'clip', '--freeze-text', '--minutes', str(clip_vision_minutes),\n"
                         "                     '--total-minutes', str(clip_minutes + clip_vision_minutes)])\n"
                         "train.main(common + ['--stage', 'unet', '--minutes', str(unet_minutes)])\n"
                         "train.main(common + ['--stage', 'export', '--minutes', '0', '--out', work + '/export'])\n"
                         "assemble(Path(work) / 'export', Path(dest))"),
])
nbf.write(train, "notebooks/train_reference.ipynb")
print("ok")

ep = parameters_cell("# Parameters: where the explorer starts (every other knob starts at TrialConfig's default)\n"
    'model = "reference"  # the bundled reference model; tiny-random, a diffusers folder or a hub id also work\n'
    'seeds = "0-7"  # 8 images: Generate takes a few seconds on a 2-core CPU\n'
    "batch_size = 8  # images per pipeline call (never changes the images)\n"
    "quality = True  # FID, KID, CMMD, CLIP score, alignment and PSNR/SSIM to the baseline, with spreads\n"
    'start = "{}"  # starting values of other knobs as YAML, e.g. "{steps: 10, scheduler: unipc}"\n'
    'baseline = "{}"  # knobs of the baseline as YAML; {} for TrialConfig defaults (dpm++2m, 25 steps, CFG 7.5)\n'
    'storage = ""  # SQLAlchemy URL of the results store; "" for workbench.db in the results folder\n'
    'study = "interactive"  # the study Save files rows under')
explore = nb([
    nbf.v4.new_markdown_cell("# Explore one model by hand\nRun all cells, change any knob, press **Generate**: "
                             "the images, the baseline's at the same seeds, their difference and the quality "
                             "numbers with their spreads. Call-time knobs (left) keep the loaded pipeline; build "
                             "knobs (right) rebuild it. **Save** runs the setting as a full trial into the results "
                             "store. The study browser below reads any study of the store."),
    ep,
    nbf.v4.new_code_cell("import yaml\nfrom workbench.lab.explore import Explorer\n\n"
                         "explorer = Explorer(baseline=yaml.safe_load(baseline), storage=storage or None, study=study,\n"
                         "                    model=model, seeds=str(seeds), batch_size=batch_size, quality=quality,\n"
                         "                    **yaml.safe_load(start)).show()"),
    nbf.v4.new_markdown_cell("## Study browser\nPick a study; hover a point for its configuration, click it for its "
                             "images beside the baseline's. **Refresh** reads the store again (e.g. after Save)."),
    nbf.v4.new_code_cell("from workbench.lab.browse import StudyBrowser\n\nbrowser = StudyBrowser(storage or None).show()"),
])
nbf.write(explore, "notebooks/explore.ipynb")
print("explore ok")
