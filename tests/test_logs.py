"""One logging setup for both programs: whole lines, never interleaved, JSON when not a TTY."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import pytest
import structlog

from bk_common.logs import configure_logging, say

pytestmark = pytest.mark.unit


class _ChunkyStdout(io.StringIO):
    """A stdout that yields the GIL inside every write, as a pipe to journald can: interleaving shows at once."""

    def write(self, text: str) -> int:
        n = 0
        for ch in text:  # one character at a time, with a thread switch chance between them
            n += super().write(ch)
        return n


def test_log_lines_from_threads_never_mix_with_printed_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four threads log (structlog and stdlib) while the main thread prints with say(): every line parses."""
    out = _ChunkyStdout()
    monkeypatch.setattr(sys, "stdout", out)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        configure_logging("info", "json")
        log = structlog.get_logger("test")
        std = logging.getLogger("some.library")

        def worker(n: int) -> None:
            for i in range(200):
                (log.info("event", worker=n, i=i, text="中文") if i % 2 else std.warning("stdlib %d %d", n, i))

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for i in range(200):
            say(json.dumps({"printed": i}))
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    lines = out.getvalue().splitlines()
    parsed = [json.loads(line) for line in lines]  # raises on any interleaved line
    assert len(parsed) == 4 * 200 + 200
    assert sum("printed" in p for p in parsed) == 200
    assert sum(p.get("event") == "event" for p in parsed) == 400
    stdlib = [p for p in parsed if str(p.get("event", "")).startswith("stdlib")]
    assert len(stdlib) == 400 and all(p["level"] == "warning" and p["logger"] == "some.library" for p in stdlib)
    assert any("中文" in line for line in lines)  # UTF-8, not \u escapes


def test_one_shot_commands_log_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """to_stderr keeps stdout for a command's result (detect, token create); services log to stdout."""
    configure_logging("info", "json", to_stderr=True)
    structlog.get_logger().info("to stderr")
    say("result")
    cap = capsys.readouterr()
    assert cap.out == "result\n" and json.loads(cap.err)["event"] == "to stderr"
    configure_logging("info", "json")
    structlog.get_logger().info("to stdout")
    assert json.loads(capsys.readouterr().out)["event"] == "to stdout"


def test_unknown_level_is_named() -> None:
    """A wrong level in config names the value."""
    with pytest.raises(ValueError, match="'loud'"):
        configure_logging("loud")
