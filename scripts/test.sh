#!/usr/bin/env bash
# Install what is missing, then run the whole test suite in the project's venv.
# Arguments go to pytest: `bash scripts/test.sh -m unit` is the fast loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${BK_VENV:-$PWD/.venv}/bin/python" -m pytest -q "$@"
