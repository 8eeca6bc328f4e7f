"""`make bench`: gateway, nginx and platform benchmarks on this machine (see docs/benchmarks.md).

Run from the repository root with the app's virtualenv: `.venv/bin/python -m benchmarks.run`.
"""
