#!/usr/bin/env bash
# Run pytest from the project virtualenv; "no tests collected" (exit 5) counts as a failure,
# because this suite always has tests and an empty run means something is broken.
# The suite runs on TEST_WORKERS pytest-xdist workers (default 2; 1 runs it in one process);
# the tests that start real processes stay together on one of them (see tests/conftest.py).
# Usage: scripts/run_tests.sh [pytest args...]   (env: VENV, TEST_WORKERS)
set -uo pipefail

venv=${VENV:-.venv}
workers=${TEST_WORKERS:-2}
export KERAS_BACKEND=${KERAS_BACKEND:-tensorflow}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
parallel=()
if [[ "$workers" =~ ^[0-9]+$ ]] && [ "$workers" -gt 1 ] && [[ " $* " != *" -n "* ]] \
    && "$venv/bin/python" -c "import xdist" 2>/dev/null; then
    parallel=(-n "$workers" --dist loadgroup)
fi
"$venv/bin/python" -m pytest "${parallel[@]}" "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests (exit 5); treating that as a failure" >&2
    exit 1
fi
exit "$rc"
