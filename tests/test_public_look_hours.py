"""The pure parts of 看看后厨 (cloud_receiver/web/public_look.py): opening hours in Beijing time, the
per-address window, and boxes found in a turned frame mapped back."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

import pytest
from PIL import Image

from cloud_receiver.config import PublicLookConfig, parse_config
from cloud_receiver.errors import ConfigError
from cloud_receiver.privacy.blur import Box
from cloud_receiver.web.public_look import is_open, parse_hours, retry_after, unturned

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("utc", "hours", "expected"), [
    ("2026-05-05T22:00:00", "06:00-20:00", True),  # 06:00 Beijing: the first minute
    ("2026-05-05T21:59:00", "06:00-20:00", False),  # 05:59
    ("2026-05-06T11:59:00", "06:00-20:00", True),  # 19:59
    ("2026-05-06T12:00:00", "06:00-20:00", False),  # 20:00: closed
    ("2026-05-06T15:59:00", "00:00-24:00", True),  # 23:59 with a day-long opening
    ("2026-05-06T15:00:00", "22:00-02:00", True),  # 23:00: over midnight
    ("2026-05-06T17:30:00", "22:00-02:00", True),  # 01:30
    ("2026-05-06T04:00:00", "22:00-02:00", False),  # 12:00
])
def test_opening_hours_are_beijing_time(utc: str, hours: str, expected: bool):
    """A UTC instant is open when its Beijing (UTC+8) minute lies in [start, end); an end before the start runs over midnight."""
    assert is_open(datetime.fromisoformat(utc).replace(tzinfo=UTC), hours, 8) is expected


def test_hours_parse_to_minutes_and_bad_hours_are_refused():
    """`06:30-24:00` is minutes 390 to 1440; a malformed value is a config error naming the key."""
    assert parse_hours("06:30-24:00") == (390, 1440)
    assert PublicLookConfig().hours == "06:00-20:00"
    with pytest.raises(ConfigError, match="public_look.hours"):
        parse_config("public_look:\n  hours: 6-20\n")


def test_the_window_allows_limit_starts_then_says_when_the_next_may_come():
    """Two starts per 600 s: the third waits until the oldest leaves the window; old starts are dropped."""
    starts: deque[float] = deque([100.0, 400.0])
    assert retry_after(starts, 450.0, 2, 600.0) == pytest.approx(250.0)
    assert retry_after(starts, 700.0, 2, 600.0) is None and list(starts) == [400.0]
    assert retry_after(deque(), 0.0, 2, 600.0) is None


@pytest.mark.parametrize("angle", [-20.0, 20.0, 45.0, 90.0])
def test_a_box_found_in_the_turned_frame_lands_where_it_was(angle: float):
    """A bright square turned by PIL and found in the turned image maps back onto the square it was."""
    image = Image.new("L", (320, 180), 0)
    image.paste(255, (200, 40, 230, 70))
    turned = image.rotate(angle, expand=True)
    x1, y1, x2, y2 = turned.point(lambda v: 255 if v > 128 else 0).getbbox()
    back = unturned(Box(x1, y1, x2, y2), angle, turned.size, image.size)
    centre = ((back.x1 + back.x2) / 2, (back.y1 + back.y2) / 2)
    assert centre == pytest.approx((215, 55), abs=2.5)
    assert back.x1 <= 202 and back.y1 <= 42 and back.x2 >= 228 and back.y2 >= 68
