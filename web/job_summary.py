"""Per-study summary of a job's scans: what came out of each study, where the models disagree, what needs
review, what failed."""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable


def disagreement(scan: dict[str, Any]) -> bool:
    """True for a classified scan where not every model that answered gave the ensemble's label."""
    ensemble = scan.get("ensemble")
    if scan.get("status") != "classified" or not ensemble or ensemble.get("agreement") is None:
        return False
    return ensemble["agreement"] < len(scan.get("predictions") or {})


def study_summaries(scans: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per study (scan JSON as in web.serialize.scan_json), named studies first by name,
    scans without a study last: counts by status, the ensemble's labels, disagreements, scans the
    model version's review rule sent to review."""
    studies: dict[str, dict[str, Any]] = {}
    for scan in scans:
        entry = studies.setdefault(scan.get("study") or "", {"scans": 0, "classified": 0, "failed": 0,
                                                              "pending": 0, "disagree": 0, "needs_review": 0,
                                                              "labels": Counter()})
        entry["scans"] += 1
        status = scan.get("status")
        if status == "classified":
            entry["classified"] += 1
            if scan.get("ensemble"):
                entry["labels"][scan["ensemble"]["label"]] += 1
            entry["disagree"] += disagreement(scan)
            entry["needs_review"] += bool((scan.get("ensemble") or {}).get("needs_review"))
        elif status == "failed":
            entry["failed"] += 1
        else:
            entry["pending"] += 1
    return [{"study": name, **{k: v for k, v in entry.items() if k != "labels"},
             "labels": dict(sorted(entry["labels"].items()))}
            for name, entry in sorted(studies.items(), key=lambda item: (item[0] == "", item[0]))]
