"""Jinja filters of the pages: times people read, and figures with a fixed number of places."""
from __future__ import annotations

import zlib
from datetime import datetime, timezone
from typing import Any

# Class colours: CSS classes c0-c7 in style.css (Okabe-Ito). The four classes of the data set keep
# one colour each on every page; any other class name gets one of c4-c7 from a hash of its name,
# never from the order it happened to appear in.
CLASS_COLOURS = {"glioma": "c0", "meningioma": "c1", "notumor": "c2", "pituitary": "c3"}


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


def class_colour(label: str | None) -> str:
    """The CSS colour class of a class label: fixed for the known four, a stable hash of the name otherwise."""
    if label in CLASS_COLOURS:
        return CLASS_COLOURS[label]
    return f"c{4 + zlib.crc32((label or '').encode('utf-8')) % 4}"


def class_colours(labels: Any = ()) -> dict[str, str]:
    """Label -> colour class for the known four and `labels`: what a page's script colours by."""
    return {label: class_colour(label) for label in [*CLASS_COLOURS, *labels]}
