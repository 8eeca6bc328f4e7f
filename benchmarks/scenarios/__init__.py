"""One module per measurement; each exposes `run(...)` returning a plain dict for the report."""
