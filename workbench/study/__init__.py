"""Studies: an experiment YAML run as an Optuna study by one or many workers (`sweep`, `workers`), each trial in a
papermill kernel (warm: started and prepared while the previous trial ran, `kernels`, `prepare`) or in process
(`executors`), rows in the results store (`store`) on SQLite, a journal file or
PostgreSQL (`storages`); ablation ladders run as studies too (`ablation`). Optuna's private parts: `optuna_compat`."""
