"""The training pool: folder plus reviewed scans by content, reviewed labels win, and a fixed
evaluation split that training refuses to touch."""
from __future__ import annotations

import hashlib

import pytest

from tests.helpers.split_data import write_split_folder
from training.datasets import LabelledImage, list_labelled
from training.pool import EVALUATION_RULE, OverlapError, build_pool, check_disjoint, in_evaluation_split
from training.recipe import TrainOptions, train_bundle


def _sha(evaluation: bool, start: int = 0) -> str:
    """The first SHA-256 of str(n), n >= start, on the wanted side of the evaluation split."""
    n = start
    while True:
        digest = hashlib.sha256(str(n).encode()).hexdigest()
        if in_evaluation_split(digest) == evaluation:
            return digest
        n += 1


def test_the_split_rule_reads_the_hash_as_an_integer():
    assert EVALUATION_RULE == "int(sha256, 16) % 10 == 0"
    assert in_evaluation_split("0" * 63 + "a")  # 10
    assert not in_evaluation_split("0" * 63 + "b")  # 11
    # About a tenth of all content falls in it.
    share = sum(in_evaluation_split(hashlib.sha256(str(n).encode()).hexdigest()) for n in range(5000)) / 5000
    assert 0.08 < share < 0.12


def test_reviewed_labels_override_the_folder_and_the_latest_review_wins():
    kept, relabelled, confirmed = _sha(False, 0), _sha(False, 1000), _sha(False, 2000)
    new, held_out = _sha(False, 3000), _sha(True, 0)
    folder = [LabelledImage("f/glioma/a.png", "glioma", kept),
              LabelledImage("f/glioma/b.png", "glioma", relabelled),
              LabelledImage("f/notumor/b-copy.png", "notumor", relabelled),  # the same bytes twice
              LabelledImage("f/glioma/b-again.png", "glioma", relabelled),
              LabelledImage("f/pituitary/c.png", "pituitary", confirmed),
              LabelledImage("f/notumor/e.png", "notumor", held_out)]
    reviewed = [LabelledImage("blobs/b", "notumor", relabelled, 0),
                LabelledImage("blobs/b", "meningioma", relabelled, 0),  # a later review of the same scan
                LabelledImage("blobs/c", "pituitary", confirmed, 0),
                LabelledImage("blobs/n", "glioma", new, 0),
                LabelledImage("blobs/e", "glioma", held_out, 0)]
    pool = build_pool(folder, reviewed)
    labels = {item.sha256: item.label for item in pool.train}
    assert labels == {kept: "glioma", relabelled: "meningioma", confirmed: "pituitary", new: "glioma"}
    assert {item.source for item in pool.train if item.sha256 == relabelled} == {"blobs/b"}
    assert [(item.sha256, item.label) for item in pool.evaluation] == [(held_out, "glioma")]
    assert pool.summary == {
        "folder_listed": 6, "folder_duplicates": 2, "folder_files": 1, "reviewed_scans": 4, "overrides": 3,
        "relabelled": 2, "train_pool": 4, "evaluation": 1, "evaluation_reviewed": 1,
        "evaluation_rule": EVALUATION_RULE}


def test_folder_copies_under_two_labels_keep_the_majority_then_the_first_name():
    sha = _sha(False)
    folder = [LabelledImage("x/notumor/1.png", "notumor", sha), LabelledImage("x/glioma/1.png", "glioma", sha)]
    assert [i.label for i in build_pool(folder, []).train] == ["glioma"]
    assert [i.label for i in build_pool(folder + folder[:1], []).train] == ["notumor"]


def test_the_split_is_stable_as_the_pool_grows(tmp_path):
    small = list_labelled(write_split_folder(tmp_path / "a", train_per_class=3, evaluation_per_class=1))
    grown = small + [LabelledImage(f"r/{n}", "glioma", _sha(n % 3 == 0, 10_000 * n), 0) for n in range(1, 30)]
    before = {i.sha256 for i in build_pool(small, []).evaluation}
    after = build_pool(grown, [])
    assert len(before) == 4 and before <= {i.sha256 for i in after.evaluation}
    assert not before & {i.sha256 for i in after.train}
    assert all(in_evaluation_split(i.sha256) for i in after.evaluation)
    assert not any(in_evaluation_split(i.sha256) for i in after.train)


def test_training_refuses_items_of_the_evaluation_split(tmp_path):
    data = write_split_folder(tmp_path / "data", train_per_class=3, evaluation_per_class=1)
    items = list_labelled(data)
    with pytest.raises(OverlapError, match="4 training item"):
        check_disjoint(items)
    check_disjoint(build_pool(items, []).train)
    # The recipe checks before it decodes or builds anything.
    options = TrainOptions(data=data, out=tmp_path / "out", image_size=32, epochs=1, backbone_weights="none")
    with pytest.raises(OverlapError):
        train_bundle(options, items=items, evaluation_held_out=True)
    assert not (tmp_path / "out").exists()
