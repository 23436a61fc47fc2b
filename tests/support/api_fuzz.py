"""Schemathesis against a live receiver (`api_server.live_api`), through its CLI in a subprocess, for
tests/test_api_schemathesis.py and scripts/fuzz_api.py.

All checks run (`--checks all`) with tests/support/schemathesis.toml, which tells schemathesis the
API's status policy (422 = well-formed but not possible). `/alerts/stream` and its tickets are left
out: a stream never ends, so a request/response fuzzer can only time out on it (the stateful phase
follows the ticket's `url` to it); tests/test_api_stream.py and test_api_limits.py cover them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from support.api_server import LiveApi

CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
# the event stream never ends; sending a command and the live WebSocket need the MQTT connection this
# test's receiver does not have (documented 503; tests/test_commands_api.py checks their input handling)
EXCLUDE = r"^/alerts/stream|^/devices/\{id\}/commands$|^/live/"
ROLE_TOKENS = {"admin": "admin", "regulator": "reg", "canteen": "c1"}


@dataclass(frozen=True)
class FuzzRun:
    role: str
    command: list[str]
    exit_code: int
    generated: int
    passed: int
    failures: int
    seconds: float
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.failures == 0 and self.generated > 0


def run_schemathesis(api: LiveApi, role: str, *, max_examples: int, seed: int | None, workdir: Path,
                     timeout_s: float = 600.0) -> FuzzRun:
    """One schemathesis run as `role` (admin, regulator or canteen): every operation, every check, every phase."""
    token = api.tokens[ROLE_TOKENS[role]]
    cmd = [str(ST), "--config-file", str(CONFIG), "run", api.openapi_url, "--checks", "all",
           "--max-examples", str(max_examples), "--exclude-path-regex", EXCLUDE, "--no-color",
           "--header", f"Authorization: Bearer {token}", "--request-timeout", "10"]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COLUMNS": "120", "SCHEMATHESIS_TELEMETRY": "false"}
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    out = proc.stdout + proc.stderr
    counts = re.search(r"(\d+) generated(?:, (\d+) passed)?(?:, \d+ found (\d+) unique failures?)?", out)
    generated = int(counts.group(1)) if counts else 0
    passed = int(counts.group(2) or 0) if counts else 0
    failures = int(counts.group(3) or 0) if counts else 0
    if proc.returncode != 0 and failures == 0:
        failures = len(re.findall(r"^\s*\d+\. Test Case ID", out, re.MULTILINE)) or 1
    shown = [part if not part.startswith("Authorization") else "Authorization: Bearer $TOKEN" for part in cmd]
    return FuzzRun(role, shown, proc.returncode, generated, passed, failures, time.monotonic() - started, out)
