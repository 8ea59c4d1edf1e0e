"""The training pool: a labelled folder plus reviewed scans, one item per content, and the fixed
evaluation split that no run trains on.

The evaluation split is chosen by content alone (`in_evaluation_split`), so a file is in it or
not whatever else is in the pool: it stays the same as the pool grows, and a reviewed scan
whose bytes fall in it is held out like any folder file.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from training.datasets import LabelledImage

EVALUATION_MODULUS = 10
EVALUATION_RULE = f"int(sha256, 16) % {EVALUATION_MODULUS} == 0"


class OverlapError(ValueError):
    """Items of the evaluation split were about to be trained on."""


def in_evaluation_split(sha256: str) -> bool:
    """True for content in the fixed evaluation split: its SHA-256, read as an integer, mod 10 is 0."""
    return int(sha256, 16) % EVALUATION_MODULUS == 0


@dataclass
class Pool:
    """What a run may train on, the evaluation split, and counts of where the items came from."""

    train: list[LabelledImage]
    evaluation: list[LabelledImage]
    summary: dict[str, object] = field(default_factory=dict)


def _folder_by_content(folder: Sequence[LabelledImage]) -> dict[str, LabelledImage]:
    """One item per SHA-256: the first copy, under the label most of its copies carry."""
    copies: dict[str, list[LabelledImage]] = defaultdict(list)
    for item in folder:
        copies[item.sha256].append(item)
    unique = {}
    for sha, items in copies.items():
        votes = Counter(item.label for item in items)
        # Ties go to the first label in sorted order, so the choice never depends on listing order.
        label = min(votes, key=lambda name: (-votes[name], name))
        first = min(items, key=lambda item: item.source)
        unique[sha] = LabelledImage(first.source, label, sha, first.frame)
    return unique


def build_pool(folder: Sequence[LabelledImage], reviewed: Sequence[LabelledImage]) -> Pool:
    """Merge folder files and reviewed scans (oldest review first), deduplicated by content.

    A reviewed label overrides the folder's for the same bytes, and of several reviews of the
    same bytes and frame the last one wins. Items whose content is in the evaluation split go
    to `evaluation`, every other one to `train`.
    """
    unique_folder = _folder_by_content(folder)
    latest: dict[tuple[str, int | None], LabelledImage] = {}
    for item in reviewed:
        latest.pop((item.sha256, item.frame), None)  # re-insert: order follows the latest review
        latest[(item.sha256, item.frame)] = item
    reviewed_labels: dict[str, set[str]] = defaultdict(set)
    for item in latest.values():
        reviewed_labels[item.sha256].add(item.label)
    overridden = [sha for sha in unique_folder if sha in reviewed_labels]
    relabelled = [sha for sha in overridden if reviewed_labels[sha] != {unique_folder[sha].label}]
    kept_folder = [item for sha, item in unique_folder.items() if sha not in reviewed_labels]
    items = sorted(kept_folder, key=lambda i: (i.label, i.source)) + sorted(
        latest.values(), key=lambda i: (i.label, i.source, i.frame or 0))
    train = [item for item in items if not in_evaluation_split(item.sha256)]
    evaluation = [item for item in items if in_evaluation_split(item.sha256)]
    summary = {
        "folder_listed": len(folder),
        "folder_duplicates": len(folder) - len(unique_folder),
        "folder_files": len(kept_folder),
        "reviewed_scans": len(latest),
        "overrides": len(overridden),
        "relabelled": len(relabelled),
        "train_pool": len(train),
        "evaluation": len(evaluation),
        "evaluation_reviewed": sum(1 for item in latest.values() if in_evaluation_split(item.sha256)),
        "evaluation_rule": EVALUATION_RULE,
    }
    return Pool(train, evaluation, summary)


def check_disjoint(train: Iterable[LabelledImage]) -> None:
    """Raise OverlapError if any training item's content is in the evaluation split."""
    overlap = sorted({item.sha256 for item in train if in_evaluation_split(item.sha256)})
    if overlap:
        raise OverlapError(f"{len(overlap)} training item(s) belong to the evaluation split "
                           f"(first {overlap[0][:12]}); a run must never train on it")
