"""The promotion gate: a trained candidate and the active version, scored through the inference
engine on the very same evaluation scans, each metric within PROMOTION_TOLERANCE."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

logger = logging.getLogger(__name__)

# The ensemble figures the gate compares; each must hold on its own.
GATE_METRICS = ("accuracy", "macro_f1")
# Float noise (0.9 - 0.005 is not exactly 0.895) must not decide a tie.
_EPSILON = 1e-9


@dataclass
class Decision:
    """What GET /api/v1/training-runs/<id> shows as "decision"."""

    promoted: bool
    reason: str
    candidate: dict[str, Any] | None
    active: dict[str, Any] | None
    evaluation_size: int
    tolerance: float
    rule: str = ""

    def as_json(self) -> dict[str, Any]:
        """The decision as stored on the training run."""
        return asdict(self)


def figures(scored: dict[str, Any] | None, version_id: int | None) -> dict[str, Any] | None:
    """A version's gate figures from a score_bundles entry: ensemble accuracy and macro-F1 on top,
    every model's beside them, the ensemble's per-class figures and confusion matrix; or the error."""
    if scored is None:
        return None
    if "error" in scored:
        return {"version": version_id, "error": scored["error"]}
    models = scored["models"]
    ensemble = models["ensemble"]
    return {
        "version": version_id, "size": scored["size"],
        **{name: ensemble[name] for name in GATE_METRICS},
        "per_model": {name: {m: value[m] for m in GATE_METRICS} for name, value in models.items()},
        "per_class": ensemble["per_class"], "confusion_matrix": ensemble["confusion_matrix"],
    }


def decide(candidate: dict[str, Any] | None, active: dict[str, Any] | None, active_id: int | None,
           tolerance: float, evaluation_size: int, rule: str = "") -> Decision:
    """Promote when there is no active version, or when the candidate's ensemble accuracy and
    macro-F1 are each no more than `tolerance` below the active version's on the same scans."""

    def verdict(promoted: bool, reason: str) -> Decision:
        return Decision(promoted, reason, candidate, active, evaluation_size, tolerance, rule)

    if active_id is None:
        return verdict(True, "no active version: the candidate is promoted")
    if evaluation_size == 0:
        return verdict(False, "the evaluation split is empty, so the candidate cannot be compared with "
                              f"active version {active_id}; activate it by hand if wanted")
    if candidate is None or "error" in candidate:
        error = candidate["error"] if candidate else "not scored"
        return verdict(False, f"the candidate could not be scored on the evaluation split ({error})")
    if active is None or "error" in active:
        error = active["error"] if active else "not scored"
        return verdict(False, f"active version {active_id} could not be scored on the same scans ({error}); "
                              "activate the candidate by hand if wanted")
    shortfalls = [f"{name} {candidate[name]:.4f} is {active[name] - candidate[name]:.4f} below "
                  f"{active[name]:.4f}" for name in GATE_METRICS
                  if candidate[name] < active[name] - tolerance - _EPSILON]
    both = ", ".join(f"{name} {candidate[name]:.4f} vs {active[name]:.4f}" for name in GATE_METRICS)
    where = f"on {evaluation_size} evaluation scans, tolerance {tolerance:g}"
    if shortfalls:
        return verdict(False, f"kept active version {active_id}: candidate's ensemble "
                              f"{'; '.join(shortfalls)} ({where})")
    lower = [name for name in GATE_METRICS if candidate[name] < active[name]]
    within = f" ({' and '.join(lower)} lower, within the tolerance)" if lower else ""
    return verdict(True, f"promoted over version {active_id}{within}: ensemble {both} ({where})")


def evaluate_and_decide(candidate: tuple[int, str | Path], active: tuple[int, str | Path] | None,
                        items: Sequence[Any], tolerance: float, precision: str = "float32",
                        batch_size: int = 32, rule: str = "",
                        progress: Callable[[str, float, str], None] | None = None) -> Decision:
    """Score the candidate and the active version (id, bundle folder) on the same evaluation
    items through the inference engine as served, then decide."""
    from training.evaluate import score_bundles

    bundles = {"candidate": candidate[1]}
    if active is not None:
        bundles["active"] = active[1]
    scored = score_bundles(bundles, list(items), precision=precision, batch_size=batch_size,
                           progress=progress) if items else {}
    new = figures(scored.get("candidate"), candidate[0])
    old = figures(scored.get("active"), active[0]) if active is not None else None
    sizes = {entry["size"] for entry in (new, old) if entry is not None and "size" in entry}
    # score_bundles scores every bundle on the same decodable scans, so there is one size
    # (the number of items when neither could be scored).
    size = max(sizes) if sizes else len(items)
    decision = decide(new, old, active[0] if active is not None else None, tolerance, size, rule)
    logger.info("gate for candidate version %s: %s", candidate[0], decision.reason)
    return decision
