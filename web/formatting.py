"""Jinja filters of the pages: times people read, and figures with a fixed number of places."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any


def when(value: str | None) -> str:
    """'2026-11-29 08:11 UTC' from an ISO time (the API's form), '' for none; the exact time goes in a title."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def figure(value: Any, places: int = 3) -> str:
    """A metric with `places` decimals, or an en dash when it is missing."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return f"{value:.{places}f}"
