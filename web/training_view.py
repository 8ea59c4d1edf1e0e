"""What the models and training-runs pages show beyond the API's JSON: evaluation reports, progress
messages, who queued a run, and the fields of the "queue a run" form."""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import User

LOG_TAIL_LINES = 20
SHADES = 5  # confusion-matrix cells are shaded in this many steps (style.css .cm-0 .. .cm-5)
# "08:11:02 [features] resnet50 features 120/541": the progress writer's line (tasks.train)
_LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d \[([^\]]*)\] (.*)$")
# Open suggestions (backbone_weights also takes a weights file's path); closed lists come from training.
_SUGGESTIONS = {"backbone_weights": ("imagenet", "none")}
# Parameters tasks.train reads itself rather than as TrainOptions fields of the same type.
_KINDS = {"warm_start": "checkbox"}


def run_view(run: dict[str, Any]) -> dict[str, Any]:
    """A training run's JSON plus what the page shows: its latest message and the last lines of its log."""
    lines = [line for line in (run.get("log") or "").splitlines() if line.strip()]
    message = ""
    if lines:
        match = _LOG_LINE.match(lines[-1])
        message = match.group(2) if match else lines[-1]
    return {**run, "message": message, "log_tail": "\n".join(lines[-LOG_TAIL_LINES:]),
            "active": run["status"] in ("queued", "running")}


def user_names(session: Session, user_ids: Iterable[int | None]) -> dict[int, str]:
    """{user id: name} for the given ids (None skipped)."""
    wanted = {i for i in user_ids if i is not None}
    if not wanted:
        return {}
    return dict(session.execute(select(User.id, User.name).where(User.id.in_(wanted))).all())


def param_fields(allowed: Iterable[str]) -> list[dict[str, Any]]:
    """One form field per training parameter a run accepts: name, input kind, default as a hint, choices."""
    from training import recipe
    from training.cnn_variants import CNN_VARIANTS

    options = {f.name: f for f in dataclasses.fields(recipe.TrainOptions)}
    closed = {"cnn_variant": tuple(CNN_VARIANTS), "profile": tuple(getattr(recipe, "PROFILES", ()))}
    out = []
    for name in allowed:
        spec = options.get(name)
        kind = str(spec.type) if spec is not None else "str"
        default = spec.default if spec is not None and spec.default is not dataclasses.MISSING else None
        if isinstance(default, tuple):
            default = ",".join(default)
        input_kind = _KINDS.get(name) or ("checkbox" if "bool" in kind else "int" if kind.startswith("int") else
                                          "float" if kind.startswith("float") else "text")
        choices = closed.get(name) or _SUGGESTIONS.get(name, ())
        out.append({"name": name, "label": name.replace("_", " ").capitalize(), "kind": input_kind,
                    "default": "" if default is None else default, "choices": choices,
                    "closed": bool(closed.get(name))})
    return out


def _classes(version: dict[str, Any], figures: dict[str, Any]) -> list[str]:
    per_class = list((figures.get("per_class") or {}).keys())
    classes = [str(c) for c in version.get("classes") or []]
    matrix = figures.get("confusion_matrix") or []
    # The gate's confusion matrix follows the bundle's class order (JSONB may reorder per_class keys).
    if classes and len(matrix) in (0, len(classes)):
        return classes
    return sorted(per_class)


def evaluation_report(version: dict[str, Any]) -> dict[str, Any] | None:
    """A version's figures on the evaluation split as the page lays them out, or None when never scored."""
    figures = version.get("evaluation")
    if not figures or "error" in figures:
        return None
    classes = _classes(version, figures)
    per_class = figures.get("per_class") or {}
    matrix = figures.get("confusion_matrix") or []
    cells = []
    for row_index, row in enumerate(matrix):
        total = sum(row) or 1
        cells.append([{"count": count, "diagonal": row_index == col,
                       # any count at all is tinted, so a single confusion is not lost in white
                       "shade": math.ceil(SHADES * count / total)} for col, count in enumerate(row)])
    return {
        "version": version["id"], "status": version["status"], "classes": classes,
        "accuracy": figures.get("accuracy"), "macro_f1": figures.get("macro_f1"),
        "size": figures.get("size"), "run": figures.get("run"), "at": figures.get("at"),
        "per_model": figures.get("per_model") or {},
        "per_class": [{"name": c, **(per_class.get(c) or {})} for c in classes],
        "matrix": cells,
    }
