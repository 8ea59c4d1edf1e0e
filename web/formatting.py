"""Jinja filters of the pages: times people read, and figures with a fixed number of places."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def _moment(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def when(value: str | None) -> str:
    """'2026-11-29 08:11 UTC' from an ISO time (the API's form), '' for none; the exact time goes in a title."""
    if not value:
        return ""
    moment = _moment(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else value


def exact(value: str | None) -> str:
    """'2026-11-29 08:11:05 UTC': the time to the second, for a title beside a relative time."""
    moment = _moment(value) if value else None
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else (value or "")


def ago(value: str | None, now: datetime | None = None) -> str:
    """'just now', '3 min ago', '2 h ago', 'yesterday', '5 days ago', else the date (static/times.js
    keeps these current in the browser with the same wording)."""
    moment = _moment(value) if value else None
    if moment is None:
        return value or ""
    seconds = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    if seconds < -60:
        return when(value)  # a clock ahead of ours: say the time itself
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    if days == 1:
        return "yesterday"
    if days < 7:
        return f"{days} days ago"
    return moment.strftime("%Y-%m-%d")


def figure(value: Any, places: int = 3) -> str:
    """A metric with `places` decimals, or an en dash when it is missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.{places}f}"
