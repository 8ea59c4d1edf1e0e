"""Which items must stay together in a split, and which must not be trained on at all.

Items are grouped by content hash and by near-copy similarity (training.similarity), so a
picture and its re-encoded copies or neighbouring slices never sit on both sides of the
train/validation split. Items in a group with any held-out item (the fixed evaluation split)
are dropped from training altogether: the evaluation split stays fixed by content hash, and
no run trains on a near copy of it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from training.similarity import near_copy_groups


@dataclass
class Grouping:
    """A group key per kept item, the items dropped as near copies of held-out ones, and counts."""

    keys: list[str]
    kept: list[int]
    dropped: list[int]
    summary: dict = field(default_factory=dict)


def group_items(shas: Sequence[str], thumbs: dict[str, np.ndarray], held_out_thumbs: np.ndarray,
                threshold: float | None) -> Grouping:
    """Group items (by content hash `shas[i]`) with one thumbnail per hash in `thumbs`.

    Hashes without a thumbnail (undecodable) form their own groups. With `threshold` None or
    0, only byte-identical items group and nothing is dropped.
    """
    unique = sorted({sha for sha in shas if sha in thumbs})
    if not threshold or not unique:
        keys = list(shas)
        return Grouping(keys, list(range(len(shas))), [], {"near_copy_threshold": None,
                                                           "groups": len(set(keys))})
    own = np.stack([thumbs[sha] for sha in unique])
    held = np.asarray(held_out_thumbs, dtype=np.float32).reshape(-1, own.shape[1])
    groups = near_copy_groups(np.concatenate([own, held]), threshold)
    # A group's key is the smallest content hash in it: stable as long as the group is.
    members: dict[int, list[str]] = {}
    for row, sha in enumerate(unique):
        members.setdefault(int(groups[row]), []).append(sha)
    key_of_group = {gid: min(shas_) for gid, shas_ in members.items()}
    touched = {int(g) for g in groups[len(unique):]}
    key_by_sha = {sha: key_of_group[int(groups[row])] for row, sha in enumerate(unique)}
    near_held = {sha for row, sha in enumerate(unique) if int(groups[row]) in touched}
    kept = [i for i, sha in enumerate(shas) if sha not in near_held]
    dropped = [i for i, sha in enumerate(shas) if sha in near_held]
    keys = [key_by_sha.get(shas[i], shas[i]) for i in kept]
    sizes = Counter(keys)
    return Grouping(keys, kept, dropped, {
        "near_copy_threshold": threshold,
        "groups": len(sizes),
        "largest_group": max(sizes.values()) if sizes else 0,
        "items_in_shared_groups": sum(n for n in sizes.values() if n > 1),
        "near_copies_of_held_out_dropped": len(dropped),
    })
