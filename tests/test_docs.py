"""The docs cite committed data: every data file that README.md or docs/*.md quotes exists in the repository, and no
measured number is sourced from results/ (git-ignored: a reader's clone does not have it)."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DATA = r"[\w.*<>-]+\.(?:json|csv|txt|md|png|svg|pdf)(?:\.gz)?"
PATH = re.compile(rf"(?<![\w/.-])((?:docs/|results/|[\w-]+-data/|soundness/)?(?:[\w.<>-]+/)*{DATA})")
# names of files the workbench writes inside artifacts and model folders: formats, not quoted data
FORMATS = {"model_index.json", "meta.json", "pruned.json", "report.json", "regenerated.json"}


def _prose(text: str):
    """(line number, line) outside fenced code blocks: commands there name outputs, not sources."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield number, line


def _tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def cited(doc: Path):
    """(line number, path as written, path in the repository or None for a results/ path) of each quoted file."""
    for number, line in _prose(doc.read_text()):
        if line.lstrip().startswith("- `results/"):
            continue  # a list describing what a command writes where (the README's output of `make demo`)
        for written in PATH.findall(line):
            if written in FORMATS:
                continue
            if any(c in written for c in "*<>") or written.startswith(("http", "workbench/", "notebooks/", "tests/",
                                                                      "benchmarks/", "scripts/", "experiments/")):
                continue
            if written.startswith("results/"):
                yield number, written, None
            elif written.startswith("docs/"):
                yield number, written, written
            elif "/" in written or written.endswith((".json", ".csv", ".txt")):
                here = (doc.parent / written).resolve().relative_to(ROOT).as_posix()
                yield number, written, here


def test_every_quoted_data_file_is_committed():
    tracked, missing = _tracked(), []
    for doc in DOCS:
        for number, written, path in cited(doc):
            if path is None:
                continue
            if path in tracked:
                continue
            # a bare file name in a page: one of the committed data folders holds it
            if "/" not in written and any(p.startswith("docs/") and p.endswith("/" + written) for p in tracked):
                continue
            missing.append(f"{doc.relative_to(ROOT)}:{number}: {written}")
    assert not missing, "quoted but not committed:\n" + "\n".join(missing)


def test_no_measured_number_is_sourced_from_results():
    """results/ is where commands write; a data file quoted as a number's source must be under docs/."""
    sourced = [f"{doc.relative_to(ROOT)}:{n}: {w}" for doc in DOCS for n, w, p in cited(doc)
               if p is None and w.endswith((".json", ".csv", ".md"))]
    assert not sourced, "cite the committed copy under docs/, not results/:\n" + "\n".join(sourced)


def test_no_placeholder_is_left_in_the_docs():
    """A line that is one upper-case word (`COST`, `TODO`) is a placeholder, not prose."""
    left = [f"{doc.relative_to(ROOT)}:{n}: {line.strip()}" for doc in DOCS for n, line in _prose(doc.read_text())
            if re.fullmatch(r"[A-Z][A-Z_]{2,}", line.strip())]
    assert not left, "placeholders:\n" + "\n".join(left)
