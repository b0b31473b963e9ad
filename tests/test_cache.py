"""The compressed-model cache: an artifact damaged after it was built is found when loaded and rebuilt, in one log
line naming it, before any trial measures it."""
import logging
from pathlib import Path

from workbench.compress import cache
from workbench.trial import run_trial


def _build(calls):
    def build(folder: Path) -> dict:
        calls.append(folder)
        (folder / "model.bin").write_bytes(bytes(range(256)) * 64)
        (folder / "sub").mkdir()
        (folder / "sub" / "shapes.json").write_text('{"a": 1}')
        return {"cost_s": {"build_s": 0.0}}
    return build


def test_damaged_files_are_found_by_size_or_hash_and_rebuilt(tmp_path, caplog):
    calls = []
    art = cache.cached("unit", {"x": 1}, _build(calls), where=tmp_path)
    assert art.built and set(art.meta["files"]) == {"model.bin", "sub/shapes.json"}
    assert not cache.cached("unit", {"x": 1}, _build(calls), where=tmp_path).built and len(calls) == 1
    model = art.folder / "model.bin"
    good = model.read_bytes()
    damaged = {"truncated": good[:100], "same size, one byte changed": b"\xff" + good[1:]}
    for what, content in damaged.items():
        model.write_bytes(content)
        with caplog.at_level(logging.WARNING, logger="workbench.compress"):
            again = cache.cached("unit", {"x": 1}, _build(calls), where=tmp_path)
        assert again.built and model.read_bytes() == good, what
        line = caplog.records[-1].getMessage()
        assert str(art.folder) in line and "model.bin" in line and "\n" not in line, line
    (art.folder / "sub" / "shapes.json").unlink()
    assert cache.cached("unit", {"x": 1}, _build(calls), where=tmp_path).built and len(calls) == 4


def test_a_truncated_onnx_model_is_rebuilt_and_the_next_trial_measures_the_good_one(tmp_path, caplog):
    cfg = {"model": "tiny-random", "steps": 2, "seeds": "0-1", "batch_size": 2, "quality": False,
           "timing_repeats": 1, "backend": "onnxruntime"}
    first = run_trial(cfg, artifacts_dir=tmp_path / "first", progress=False)
    onnx = Path(first["artifacts"]["onnx_unet"]) / "model.onnx"
    size = onnx.stat().st_size
    with open(onnx, "r+b") as f:
        f.truncate(size // 2)
    with caplog.at_level(logging.WARNING, logger="workbench.compress"):
        second = run_trial(cfg, artifacts_dir=tmp_path / "second", progress=False)
    assert second["status"] == "ok" and onnx.stat().st_size == size
    lines = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(lines) == 1 and str(onnx.parent) in lines[0] and "model.onnx" in lines[0], lines
    for seed in (0, 1):  # the rebuilt export draws the first trial's images
        name = f"seed{seed:06d}.png"
        assert (tmp_path / "first" / "images" / name).read_bytes() == (tmp_path / "second" / "images" / name).read_bytes()
