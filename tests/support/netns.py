"""Run commands or Python functions inside a private, throw-away network namespace.

The namespace has only a loopback interface (up) and a route for 239.0.0.0/8 on it, so
multicast (WS-Discovery, SSDP, ...) stays inside it and never reaches the host's network.
Needs root (or user namespaces), `unshare` (util-linux) and `ip` (iproute2); if they are
missing the call raises, so a test using it fails rather than skips.

    result = call_in_netns("tests.support.onvif_scenario:run", workdir=str(tmp_path))
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SETUP = "ip link set lo up && ip route add 239.0.0.0/8 dev lo"
RESULT_MARK = "NETNS-RESULT:"


class NetnsError(RuntimeError):
    """The namespace could not be made, or the code inside it failed."""


def _require_tools() -> None:
    missing = [tool for tool in ("unshare", "ip") if shutil.which(tool) is None]
    if missing:
        raise NetnsError(f"missing tools for network namespaces: {', '.join(missing)} (install util-linux, iproute2)")


def run_in_netns(argv: list[str], timeout: float = 120.0, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` in a new network namespace (loopback up, multicast routed to lo); capture output."""
    _require_tools()
    script = f"{SETUP} && exec {shlex.join(argv)}"
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH", "")]))
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", script],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd or REPO_ROOT,
    )


def call_in_netns(target: str, timeout: float = 120.0, env: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """Call `module:function(**kwargs)` in a subprocess inside a new netns; return its JSON-able result."""
    module, _, func = target.partition(":")
    code = (
        "import importlib, json, sys\n"
        f"fn = getattr(importlib.import_module({module!r}), {func!r})\n"
        "res = fn(**json.loads(sys.argv[1]))\n"
        f"print({RESULT_MARK!r} + json.dumps(res), flush=True)\n"
    )
    proc = run_in_netns([sys.executable, "-c", code, json.dumps(kwargs)], timeout=timeout, env=env)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise NetnsError(
        f"{target} in netns exited {proc.returncode} without a result\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
