#!/usr/bin/env python3
"""Long schemathesis run against the receiver's API, without a fixed seed, and the counts per role.

    .venv/bin/python scripts/fuzz_api.py                      # admin, regulator, canteen; 60 examples per operation
    .venv/bin/python scripts/fuzz_api.py --examples 200 --roles admin canteen --json

A receiver API runs in this process on a free port of 127.0.0.1 with a seeded database in a
temporary folder (tests/support/api_server.py: canteens C1, C2 in one region, C3 in another, a box,
an alert and a snapshot each, a token per role); schemathesis' CLI runs against its
`/api/v1/openapi.json` once per role, with every check and phase (tests/support/api_fuzz.py says
what is left out and why). Each run starts from the state the previous ones left (a fuzzer's
edits stay), as a long-lived receiver would. Prints, per role: cases generated, passed, distinct
failures, seconds, and the command. Exit code 1 when any run found a failure; its output is printed.
The same setup with a fixed seed and fewer cases is tests/test_api_schemathesis.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the live receiver of the test suite

from support.api_fuzz import ROLE_TOKENS, run_schemathesis  # noqa: E402
from support.api_server import live_api  # noqa: E402

from bk_common.logs import configure_logging  # noqa: E402


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=60, help="schemathesis --max-examples (per operation and phase)")
    ap.add_argument("--roles", nargs="+", default=list(ROLE_TOKENS), choices=list(ROLE_TOKENS))
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    configure_logging("warning", to_stderr=True)  # the receiver's warnings, apart from the figures
    results = []
    with tempfile.TemporaryDirectory(prefix="bk-fuzz-") as tmp, live_api(Path(tmp) / "receiver") as api:
        for role in args.roles:
            run = run_schemathesis(api, role, max_examples=args.examples, seed=None, workdir=Path(tmp) / role,
                                   timeout_s=3600)
            results.append(run)
            if not args.json:
                print(f"{role:10} {run.generated:6} generated {run.passed:6} passed {run.failures:3} failures "
                      f"{run.seconds:7.1f} s", flush=True)
            if not run.ok:
                print(run.output[-8000:], file=sys.stderr)
    if args.json:
        print(json.dumps({"cpu": _cpu(), "examples": args.examples, "runs": [
            {"role": r.role, "generated": r.generated, "passed": r.passed, "failures": r.failures,
             "seconds": round(r.seconds, 1), "exit_code": r.exit_code} for r in results]}, indent=2))
    else:
        print(f"cpu: {_cpu()}; command per role: {' '.join(results[0].command) if results else '-'}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
