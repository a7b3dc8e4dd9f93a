"""Budget windows: parsing budget_duration, and the period containing an instant (calendar months clamped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from lockgate.limits import Ask, Limit, Window


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def bounds(window: Window, now: datetime) -> tuple[datetime, datetime]:
    start, end = window.bounds(now.timestamp())
    return datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)


@pytest.mark.parametrize(
    ("text", "seconds", "months"),
    [
        ("30s", 30, 0),
        ("10m", 600, 0),
        ("1h", 3600, 0),
        ("1d", 86_400, 0),
        ("7d", 604_800, 0),
        ("30d", 2_592_000, 0),
        ("2w", 1_209_600, 0),
        ("1mo", 0, 1),
        ("3mo", 0, 3),
        (" 12h ", 43_200, 0),
    ],
)
def test_parse(text: str, seconds: int, months: int) -> None:
    window = Window.parse(text, utc(2026, 1, 1))
    assert (window.seconds, window.months) == (seconds, months)
    assert window.id == f"{text.strip()}@1767225600000"


@pytest.mark.parametrize("text", ["", "1", "0d", "-1d", "1y", "1.5h", "h", "1 month", "1M", "d1"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="budget duration"):
        Window.parse(text, utc(2026, 1, 1))


def test_naive_anchor_is_utc_and_aware_anchors_convert() -> None:
    assert Window.parse("1d", datetime(2026, 1, 1)).anchor == utc(2026, 1, 1).timestamp()
    paris = datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    assert Window.parse("1d", paris).anchor == utc(2026, 1, 1).timestamp()


def test_fixed_windows_tile_time_from_the_anchor() -> None:
    window = Window.parse("1h", utc(2026, 1, 1, 0, 30))
    assert bounds(window, utc(2026, 1, 1, 5, 29, 59)) == (utc(2026, 1, 1, 4, 30), utc(2026, 1, 1, 5, 30))
    assert bounds(window, utc(2026, 1, 1, 5, 30)) == (utc(2026, 1, 1, 5, 30), utc(2026, 1, 1, 6, 30))
    assert bounds(window, utc(2025, 12, 31, 23)) == (utc(2025, 12, 31, 22, 30), utc(2025, 12, 31, 23, 30))


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        (utc(2026, 1, 31, 10), utc(2026, 1, 31, 10), utc(2026, 2, 28, 10)),
        (utc(2026, 2, 28, 9, 59), utc(2026, 1, 31, 10), utc(2026, 2, 28, 10)),
        (utc(2026, 2, 28, 10), utc(2026, 2, 28, 10), utc(2026, 3, 31, 10)),
        (utc(2026, 4, 15), utc(2026, 3, 31, 10), utc(2026, 4, 30, 10)),
        (utc(2028, 2, 29, 12), utc(2028, 2, 29, 10), utc(2028, 3, 31, 10)),  # a leap year
        (utc(2027, 1, 1), utc(2026, 12, 31, 10), utc(2027, 1, 31, 10)),  # across a year end
        (utc(2026, 1, 15), utc(2025, 12, 31, 10), utc(2026, 1, 31, 10)),  # before the anchor
    ],
)
def test_months_count_from_the_anchors_day_clamped(now: datetime, start: datetime, end: datetime) -> None:
    window = Window.parse("1mo", utc(2026, 1, 31, 10))
    assert bounds(window, now) == (start, end)


def test_several_months() -> None:
    window = Window.parse("3mo", utc(2025, 11, 30))
    assert bounds(window, utc(2026, 3, 1)) == (utc(2026, 2, 28), utc(2026, 5, 30))


def test_limits_and_asks_refuse_nonsense() -> None:
    with pytest.raises(ValueError):
        Limit("key:a", "rpm", 10, Window.parse("1d", utc(2026, 1, 1)))
    with pytest.raises(ValueError):
        Limit("key:a", "rpm", float("nan"))
    with pytest.raises(ValueError):
        Limit("key:a", "weekly", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Ask("r", (Limit("key:a", "rpm", 1), Limit("key:a", "rpm", 2)), 0, 0.0)
    with pytest.raises(ValueError):
        Ask("r", (), -1, 0.0)
