"""JupyterLab: the explorer (`explore`: a session that keeps built pipelines, widgets generated from the knobs'
fields in `widgets`) and the study browser (`browse`)."""
