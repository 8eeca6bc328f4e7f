#!/bin/sh
# EC-SW-001: an image whose installed packages disagree is refused when it is built, naming the
# conflict, instead of failing at an import in production. The application wheel is installed
# with --no-deps on a runtime built from requirements/*.txt, so only this check compares what
# pyproject.toml asks for with what the runtime holds. $1: the virtualenv (default /opt/gekko).
set -u
venv="${1:-/opt/gekko}"
if ! conflicts="$("$venv/bin/python" -m pip check --disable-pip-version-check 2>&1)"; then
    echo "dependency conflict in the image ($venv):" >&2
    printf '%s\n' "$conflicts" | sed 's/^/  /' >&2
    echo "Make the pins agree (requirements/app.txt and signals.txt with pyproject.toml), then deploy again." >&2
    exit 1
fi
