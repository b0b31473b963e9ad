"""The adapters to dependencies' private parts: if a pinned version moves one, this fails and names it (the adapter's
docstring names the public API that would replace it)."""
import inspect

import optuna
import pytest
import torch


def test_optuna_private_parts_are_where_the_adapter_reaches():
    from workbench.study import optuna_compat as compat

    storage = optuna.storages.RDBStorage("sqlite:///:memory:", heartbeat_interval=10, grace_period=30)
    cached = compat.cached(storage)
    assert isinstance(cached, optuna.storages.BaseStorage) and isinstance(cached, compat.BaseHeartbeat)
    assert compat.is_heartbeat_enabled(cached) and not compat.is_heartbeat_enabled(optuna.storages.InMemoryStorage())
    assert callable(getattr(compat.BaseHeartbeat, compat.STALE_TRIALS_METHOD))
    study = optuna.create_study(storage=cached, directions=["minimize", "minimize"])
    trial = study.ask()
    assert compat.storage_of(study) is cached
    assert compat.storage_of(study).get_trial(compat.trial_id(trial)).number == trial.number
    frozen = study.tell(trial, [1.0, 2.0])
    assert compat.trial_id(frozen) == compat.trial_id(trial)
    import numpy as np

    square = np.array([[0.0, 0.0]])
    assert compat.compute_hypervolume(square, np.array([1.0, 1.0])) == pytest.approx(1.0)


def test_the_retrying_storage_forwards_every_storage_and_heartbeat_method():
    """Optuna adding an abstract storage method would make RetryingStorage abstract: caught here, not in a sweep."""
    from workbench.study.storages import RetryingStorage

    assert not inspect.isabstract(RetryingStorage)


def test_torchmetrics_per_image_clip_scores_average_to_the_public_metric():
    from torchmetrics.functional.multimodal import clip_score

    from workbench.measure.clip_score import _TensorFeatures, load_clip
    from workbench.measure.torchmetrics_compat import per_image_clip_scores

    model, processor = load_clip("reference")
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    prompts = ["a red bag in the center", "a blue coat on the left", "a green dress on the right"]
    scores, n = per_image_clip_scores(list(images), prompts, _TensorFeatures(model), processor)
    assert scores.shape == (3,) and n == 3
    public = clip_score(list(images), prompts, model_name_or_path=lambda: (_TensorFeatures(model), processor))
    assert float(public) == pytest.approx(max(float(scores.mean()), 0.0), rel=1e-4)
