"""The house keeps its shape: no import cycle among workbench modules (imports inside functions counted), few
imports inside functions, and `workbench report` / `workbench compare` of a finished study without torch.
The layers themselves are import-linter's contract in pyproject.toml (`lint-imports`, run by `make test`)."""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parent.parent / "workbench"
MAX_FUNCTION_LEVEL = 30  # imports of workbench.* inside functions: heavy dependencies only, each with its reason
HEAVY = ("torch", "diffusers", "transformers", "torchmetrics", "nncf", "onnxruntime")


def _cycles(graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), over every import grimp found."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return out


def test_no_import_cycle_among_workbench_modules():
    graph = grimp.build_graph("workbench")  # grimp reads every import statement, those inside functions too
    assert len(graph.modules) > 60
    assert _cycles(graph) == []


def _function_level_imports() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                names = ([a.name for a in inner.names] if isinstance(inner, ast.Import) else
                         [inner.module or ""] if isinstance(inner, ast.ImportFrom) and not inner.level else [])
                found += [f"{path.relative_to(PACKAGE.parent)}:{inner.lineno} {n}" for n in names
                          if n.startswith("workbench")]
    return sorted(set(found))


def test_imports_inside_functions_are_few_and_say_why():
    found = _function_level_imports()
    assert len(found) <= MAX_FUNCTION_LEVEL, found
    for entry in found:  # each one defers something heavy, and its line says so
        path, rest = entry.split(":", 1)
        line = (PACKAGE.parent / path).read_text().splitlines()[int(rest.split()[0]) - 1]
        assert "# heavy" in line, f"{entry}: an import inside a function needs '# heavy: <what>' (or move it up)"


def test_report_and_compare_of_a_finished_study_import_neither_torch_nor_diffusers(tmp_path, tiny_steps_experiment):
    db = tmp_path / "wb.db"
    (tmp_path / "tiny.yaml").write_text(tiny_steps_experiment("tiny", f"sqlite:///{db}"))
    from workbench.cli import main

    assert main(["sweep", str(tmp_path / "tiny.yaml")]) == 0
    probe = textwrap.dedent(f"""
        import sys
        from workbench.cli import main
        assert main(["report", "tiny", "--storage", "sqlite:///{db}"]) == 0
        assert main(["compare", "tiny", "--pair", "latency_s,gflops_per_image", "--storage", "sqlite:///{db}"]) == 0
        print("LOADED", sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "LOADED []" in done.stdout, done.stdout[-500:]
    assert "pareto_md" in done.stdout and "overlay of tiny" in done.stdout
