"""The one place that reaches into Optuna's private parts (pyproject: optuna>=4.5; tested on 5.0).

Each name below says what it is for and which public API would replace it; tests/test_compat.py fails loudly,
naming the part, if an Optuna release moves one.

- `cached(storage)`: `optuna.storages._CachedStorage`, the wrapper `optuna.storages.get_storage` puts around every
  RDBStorage (finished trials read once, then only new and unfinished ones). We build RDBStorage ourselves (engine
  options, retries), so we wrap it ourselves. Public replacement: `optuna.storages.get_storage(RDBStorage(...))`
  if it ever accepts a built storage and still caches.
- `BaseHeartbeat`, `is_heartbeat_enabled`: `optuna.storages._heartbeat`, what `fail_stale_trials` checks a storage
  for; our retrying storage must be one to keep heartbeats. Public replacement: none yet (optuna#4240 asks).
- `STALE_TRIALS_METHOD`: `BaseHeartbeat._get_stale_trial_ids`, the one underscored method a heartbeat storage
  implements; the retrying storage forwards it.
- `storage_of(study)`, `trial_id(trial)`: `Study._storage` and `Trial._trial_id`, to read a trial back by id
  and to fail a lost one. Public replacement: `study.tell(number, state=FAIL)` covers failing, not reading.
- `GridSampler`: Optuna's, without its `after_trial`, which reads the finished trial's `grid_id` system attribute
  (an enqueued trial, every sweep's baseline, lacks it: KeyError with one grid point left, optuna PR #6844, open)
  and calls `Study.stop`, which raises outside `optimize` (our sweeps ask and tell). Public replacement: none.
- `compute_hypervolume`: `optuna._hypervolume.compute_hypervolume`, the function behind Optuna's own hypervolume
  history plot. Public replacement: `optuna.visualization.plot_hypervolume_history` (a figure, not the numbers).
"""
from __future__ import annotations

import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled

STALE_TRIALS_METHOD = "_get_stale_trial_ids"


def cached(storage: optuna.storages.RDBStorage) -> optuna.storages.BaseStorage:
    return _CachedStorage(storage)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    return study._storage


def trial_id(trial: optuna.trial.BaseTrial | optuna.trial.FrozenTrial) -> int:
    return trial._trial_id


__all__ = ["BaseHeartbeat", "GridSampler", "STALE_TRIALS_METHOD", "cached", "compute_hypervolume",
           "is_heartbeat_enabled", "storage_of", "trial_id"]


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid search in an ask-and-tell loop: its `after_trial` stops the study when the grid is done
    (`Study.stop`, which raises outside `optimize`) and reads the trial's grid id (which an enqueued baseline lacks:
    KeyError with one grid point left). The sweep's own count (n_trials) ends it instead."""

    def after_trial(self, study, trial, state, values) -> None:
        return None
