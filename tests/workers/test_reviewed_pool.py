"""Reviewed scans join a run's training pool: current reviews only, by content, overriding the folder."""
from __future__ import annotations

import hashlib

from config.storage import blob_path
from db.models import ModelVersion
from tasks.reviews import add_review, withdraw_review
from tasks.train import gather_pool
from tests.helpers.split_data import split_png, write_split_folder
from tests.workers.jobdata import make_job


def test_current_reviews_join_the_pool_and_override_folder_labels(factory, settings, tmp_path):
    folder = write_split_folder(tmp_path / "folder", train_per_class=2, evaluation_per_class=1)
    in_folder = (folder / "glioma" / "000.png").read_bytes()
    held_out = (folder / "notumor" / "002.png").read_bytes()
    new, _ = split_png(3, evaluation=False, seed=50_000)
    withdrawn, _ = split_png(1, evaluation=False, seed=60_000)
    lost, _ = split_png(2, evaluation=False, seed=70_000)
    files = {"a/in_folder.png": in_folder, "a/held_out.png": held_out, "a/new.png": new,
             "a/withdrawn.png": withdrawn, "a/lost.png": lost, "b/in_folder_again.png": in_folder}
    with factory() as session:
        session.add(ModelVersion(digest="a" * 64, bundle_path="/nowhere", backbone_weights="none", metrics={},
                                 status="active", manifest={"classes": ["glioma", "meningioma", "notumor",
                                                                        "pituitary"], "image_size": 32}))
        job = make_job(session, settings, files)
        scan = {s.path: s.id for s in job.scans}
        add_review(session, scan["a/in_folder.png"], None, "notumor")
        # The same bytes uploaded again and reviewed later: the later review wins.
        add_review(session, scan["b/in_folder_again.png"], None, "meningioma")
        add_review(session, scan["a/held_out.png"], None, "glioma")
        add_review(session, scan["a/new.png"], None, "pituitary")
        add_review(session, scan["a/withdrawn.png"], None, "meningioma")
        withdraw_review(session, scan["a/withdrawn.png"], None)
        add_review(session, scan["a/lost.png"], None, "notumor")
        session.commit()
    blob_path(settings.uploads_dir, hashlib.sha256(lost).hexdigest()).unlink()

    pool = gather_pool(factory, settings, folder)
    train = {item.sha256: item for item in pool.train}
    sha = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    assert train[sha["a/in_folder.png"]].label == "meningioma", "the reviewed label overrides the folder's"
    assert train[sha["a/in_folder.png"]].source == str(blob_path(settings.uploads_dir, sha["a/in_folder.png"]))
    assert train[sha["a/new.png"]].label == "pituitary" and train[sha["a/new.png"]].frame == 0
    assert sha["a/withdrawn.png"] not in train and sha["a/lost.png"] not in train
    assert [(i.sha256, i.label) for i in pool.evaluation if i.sha256 == sha["a/held_out.png"]] == [
        (sha["a/held_out.png"], "glioma")]
    assert not {i.sha256 for i in pool.train} & {i.sha256 for i in pool.evaluation}
    summary = pool.summary
    assert (summary["folder_listed"], summary["reviewed_scans"], summary["overrides"], summary["relabelled"],
            summary["reviewed_missing"]) == (12, 3, 2, 2, 1)
    assert (summary["folder_files"], summary["train_pool"], summary["evaluation"]) == (10, 9, 4)
