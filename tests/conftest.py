"""Test set-up: offline, results in a temporary folder, and a guard that fails any non-loopback connection."""
import os
import socket
import tempfile

import pytest

_RESULTS = tempfile.mkdtemp(prefix="workbench-test-results-")
os.environ["WORKBENCH_RESULTS"] = _RESULTS  # read at import by workbench.trial; inherited by papermill kernels
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
