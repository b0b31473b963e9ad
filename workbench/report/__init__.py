"""Figures and tables from the results store, for papers: Pareto fronts, hypervolume, importances, image grids,
ablation ladders, several studies compared. `make.make_report` is what `workbench report` runs. Nothing here imports
torch: it reads rows and draws."""
