"""Is a rule's schedule active at a given moment (device time zone, ISO weekdays, ranges over midnight)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from edge_agent.config import Schedule


def local_time(now: float, tz: str | ZoneInfo) -> datetime:
    """Epoch seconds as an aware datetime in the device time zone."""
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    return datetime.fromtimestamp(now, zone)


def schedule_active(schedule: Schedule, when: datetime) -> bool:
    """True when `when` (aware, local) falls in a range on one of the schedule's weekdays.

    A range crossing midnight (22:00-06:00) belongs to the weekday it starts on, so its part
    after midnight is checked against the previous day.
    """
    t = when.time().replace(tzinfo=None)
    today = when.isoweekday()
    yesterday = (when - timedelta(days=1)).isoweekday()
    for start, end in schedule.parsed():
        if end is None or end > start:  # same-day range; None = until midnight
            if today in schedule.weekdays and start <= t and (end is None or t < end):
                return True
        elif end == start:  # 00:00-00:00 style: the whole day
            if today in schedule.weekdays:
                return True
        else:  # crosses midnight
            if today in schedule.weekdays and t >= start:
                return True
            if yesterday in schedule.weekdays and t < end:
                return True
    return False


__all__ = ["local_time", "schedule_active"]
