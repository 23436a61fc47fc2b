#!/usr/bin/env bash
# Install what is missing, then run the whole test suite in the project's venv.
# Arguments go to pytest: `bash scripts/test.sh -m unit` is the fast loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two workers (pytest-xdist), each taking whole test modules (module fixtures stay on one worker): most
# tests wait on brokers, servers and timeouts rather than compute. BK_TEST_WORKERS=0 runs in one process.
exec "${BK_VENV:-$PWD/.venv}/bin/python" -m pytest -q -n "${BK_TEST_WORKERS:-2}" --dist loadfile "$@"
