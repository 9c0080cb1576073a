"""Calendar window boundaries: where fixed windows start, in a time zone's local time.

Pure functions; the limiter passes the boundaries around now to the Lua script, and the
server's clock picks the window. Periods that divide a day align to local midnight
(``1000/h @ Europe/Paris`` starts on the local hour); periods of whole days start at
local midnight, counted from 1970-01-01 in local time.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from throttle.errors import ConfigError

DAY_S = 86400


def check_calendar_period(period_s: float) -> None:
    """Raise unless ``period_s`` is a whole number of days or divides a day evenly."""
    whole = float(period_s).is_integer()
    if not whole or (period_s % DAY_S != 0 and DAY_S % period_s != 0):
        raise ConfigError(
            f"calendar window of {period_s:g} s: use a period that divides a day or is whole days"
        )


def _local_midnight_ms(day: date, zone: ZoneInfo) -> int:
    return int(datetime.combine(day, time(0), tzinfo=zone).timestamp() * 1000)


def window_starts_ms(
    period_s: float, timezone: str, around_s: float, before: int = 2, after: int = 8
) -> list[int]:
    """Window starts (ms since the epoch) from ``before`` windows before the one holding
    ``around_s`` to ``after`` windows past it; the last value ends the last window."""
    check_calendar_period(period_s)
    zone = ZoneInfo(timezone)
    today = datetime.fromtimestamp(around_s, zone).date()
    if period_s % DAY_S == 0:
        days = int(period_s // DAY_S)
        epoch_day = (today - date(1970, 1, 1)).days
        first = date(1970, 1, 1) + timedelta(days=epoch_day - epoch_day % days)
        starts = [
            _local_midnight_ms(first + timedelta(days=days * k), zone)
            for k in range(-before - 1, after + 2)
        ]
    else:
        step_ms = int(period_s * 1000)

        def day_starts(offset: int) -> list[int]:
            day = today + timedelta(days=offset)
            begin = _local_midnight_ms(day, zone)
            end = _local_midnight_ms(day + timedelta(days=1), zone)
            return list(range(begin, end, step_ms))

        around_ms = around_s * 1000
        starts = day_starts(0)
        current = int((around_ms - starts[0]) // step_ms)
        back = 0
        while current - before < 0:
            back -= 1
            earlier = day_starts(back)[-(before + 1) :]
            starts = earlier + starts
            current += len(earlier)
        ahead = 0
        while current + after + 2 > len(starts):
            ahead += 1
            starts = starts + day_starts(ahead)[: after + 2]
    around_ms = around_s * 1000
    current = max(i for i, start in enumerate(starts) if start <= around_ms)
    return starts[max(0, current - before) : current + after + 2]
