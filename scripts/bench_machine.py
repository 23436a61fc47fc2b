"""What a benchmark ran on, for the header of its output (no benchmark here).

`cpu_line()`: the CPU model, the cores this process may use, and the ISA flags that matter for our
figures (SIMD for inference and hashing: SSE4, AVX, AVX2, FMA, AVX-512 and its VNNI, AMX). Figures
from a machine without avx512_vnni are not comparable with one that has it for the int8 detector,
and fsync-bound figures depend on the disk more than on the CPU: see `disk_line()`.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

ISA_OF_INTEREST = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                   "amx_int8", "sha_ni")


def cpu_facts() -> dict[str, object]:
    """Model name, usable cores, and which of ISA_OF_INTEREST the first CPU's flags list."""
    model, flags = "?", set()
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        model = m.group(1).strip() if m else "?"
        f = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        flags = set(f.group(1).split()) if f else set()
    return {"model": model, "cores": len(os.sched_getaffinity(0)),
            "isa": [name for name in ISA_OF_INTEREST if name in flags],
            "avx512_vnni": "avx512_vnni" in flags}


def cpu_line() -> str:
    c = cpu_facts()
    return (f"cpu: {c['model']}, {c['cores']} cores usable; ISA: {' '.join(c['isa']) or 'none of interest'}; "  # type: ignore[arg-type]
            f"avx512_vnni: {'yes' if c['avx512_vnni'] else 'no'}")


def fs_type(path: Path) -> str:
    """File system type of the mount holding `path` (longest mount-point prefix in /proc/mounts)."""
    best, kind = "", "?"
    resolved = str(Path(path).resolve())
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            mnt, typ = line.split()[1:3]
            if (resolved == mnt or resolved.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, typ
    return kind


def disk_line(path: Path) -> str:
    return f"disk: {path} on {fs_type(path)}"


def refresh_rollups(url: str, tz_hours: int = 8) -> str:
    """Bring the alert count rollups of a generated database up to date (what a receiver does at start), timed."""
    from cloud_receiver.storage.db import Db
    from cloud_receiver.workflow import rollup

    db = Db.postgresql(url) if url.startswith("postgresql") else Db.sqlite(url.removeprefix("sqlite:///"))
    try:
        t0 = time.perf_counter()
        done = rollup.refresh(db, tz_hours)
        took = time.perf_counter() - t0
    finally:
        db.engine.dispose()
    what = "rebuilt from every alert" if done["full"] else f"{done['days']} changed days counted again"
    return f"alert count rollups {what} in {took:.1f} s"
