#!/usr/bin/env bash
# Install what is missing, then run the demo (camera → agent → broker → cloud receiver) in the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${BK_VENV:-$PWD/.venv}/bin/python" scripts/demo.py "$@"
