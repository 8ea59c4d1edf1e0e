#!/usr/bin/env bash
# Create or refresh the project virtualenv for the given requirements files, and install the
# project itself into it (`pip install -e .`), so every documented command (`flask --app web`,
# `celery -A workers`, `python -m training`) imports it from any shell without PYTHONPATH.
# A stamp file keyed on the requirements' and pyproject.toml's hash makes a second run
# instant; a venv made by a Python older than 3.11 (or a broken one) is rebuilt.
# Usage: scripts/ensure_venv.sh NAME REQUIREMENTS_FILE...   (env: VENV, PYTHON, VENV_UPGRADE_PIP=0)
set -euo pipefail

name=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-.venv}
python=${PYTHON:-python3}
hash=$(cat "$@" "$root/pyproject.toml" | sha256sum | cut -c1-16)
stamp="$venv/.stamp-$name-$hash"

if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    if ! command -v "$python" >/dev/null; then
        echo "error: $python not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: $python is $("$python" --version 2>&1); Python 3.11 or newer is needed (set PYTHON=...)" >&2
        exit 1
    fi
    echo "[venv] creating $venv with $("$python" --version 2>&1)"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv"; then
        echo "error: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    fi
fi

if [ ! -f "$stamp" ]; then
    echo "[venv] installing $* into $venv (the first time downloads TensorFlow: a few minutes)"
    [ "${VENV_UPGRADE_PIP:-1}" = 0 ] || "$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip || echo "[venv] could not upgrade pip; going on with $("$venv/bin/python" -m pip --version)"
    for req in "$@"; do
        "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$req"
    done
    # Dependencies come from the pinned requirements above, so none are resolved here.
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet --no-deps -e "$root"
    rm -f "$venv"/.stamp-"$name"-*
    touch "$stamp"
    if [ "$name" != run ] && [ "$1" = requirements.txt ]; then
        # The runtime requirements came along: `make run` need not install them again.
        rm -f "$venv"/.stamp-run-*
        touch "$venv/.stamp-run-$(cat requirements.txt "$root/pyproject.toml" | sha256sum | cut -c1-16)"
    fi
fi
