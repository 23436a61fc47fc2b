#!/usr/bin/env bash
# Install what is missing, then run the demo (camera → agent → broker → cloud receiver).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" scripts/demo.py "$@"
