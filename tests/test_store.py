import pytest

from workbench.errors import ConfigError
from workbench.study.storages import check_storage_url
from workbench.study.store import Store
from workbench.study.store import failed_row


def _row(fid):
    return {"config": {"steps": 4}, "status": "ok", "reason": None, "metrics": {"fid": fid, "latency_s": 0.1},
            "protocols": {"fid": {"n_generated": 16}}, "absent": {"psnr": "baseline"}, "timings": {"total_s": 1.0},
            "provenance": {"torch": "x"}, "artifacts": {"grid": "g.png"}, "quality_meaningful": True}


def test_rows_round_trip_through_a_real_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    Store(url).write("s", 0, _row(12.5))
    Store(url).write("s", 1, failed_row({"steps": 0}, "ValueError: boom"))
    rows = Store(url).rows("s")
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["metrics"]["fid"] == 12.5 and rows[0]["protocols"]["fid"]["n_generated"] == 16
    assert rows[1]["reason"] == "ValueError: boom"
    frame = Store(url).frame("s")
    assert list(frame["trial"]) == [0, 1] and frame.loc[0, "fid"] == 12.5 and frame.loc[0, "steps"] == 4


def test_writing_a_trial_again_replaces_its_row(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.write("s", 0, _row(1.0))
    store.write("s", 0, _row(2.0))
    assert [r["metrics"]["fid"] for r in store.rows("s")] == [2.0]
    assert store.studies() == ["s"]


@pytest.mark.parametrize("url, hint", [
    ("not a url", "not a SQLAlchemy URL"),
    ("nosuchdb://x/y", "no driver"),
    ("sqlite:////proc/forbidden/x.db", "cannot"),
])
def test_unusable_storage_urls_are_one_clear_line(url, hint):
    with pytest.raises(ConfigError) as err:
        check_storage_url(url)
    assert hint in str(err.value) and "\n" not in str(err.value)
