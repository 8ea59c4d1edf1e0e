#!/usr/bin/env bash
# Run pytest from the project virtualenv; "no tests collected" (exit 5) counts as a failure,
# because this suite always has tests and an empty run means something is broken.
# Usage: scripts/run_tests.sh [pytest args...]   (env: VENV)
set -uo pipefail

venv=${VENV:-.venv}
export KERAS_BACKEND=${KERAS_BACKEND:-tensorflow}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
"$venv/bin/python" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests (exit 5); treating that as a failure" >&2
    exit 1
fi
exit "$rc"
