"""A version activated while a classify task runs takes over at the next engine batch: no batch
mixes versions and every prediction records the version that made it."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import ModelVersion, Prediction, Scan
from tasks import runtime
from tasks.classify import classify_scans
from tasks.versions import activate_version, register_bundle
from tests.helpers.tiny_bundle import make_tiny_bundle
from tests.workers.jobdata import good_paths, make_job, scan_files


@pytest.fixture(scope="module")
def cnn_bundle(tmp_path_factory) -> Path:
    """A second real bundle (the custom CNN alone)."""
    return make_tiny_bundle(tmp_path_factory.mktemp("cnn") / "cnn", image_size=32, models=("custom_cnn",))


class RollbackDuringFirstBatch:
    """The worker's own engine loader; while the first batch computes, a reviewer activates `older`."""

    def __init__(self, factory, older: int) -> None:
        self.factory, self.older, self.batches = factory, older, 0

    def __call__(self, version_id: int, bundle_path: str, settings):
        engine = runtime.engine_for(version_id, bundle_path, settings)
        loader = self

        class Engine:
            def classify(self, images):
                loader.batches += 1
                if loader.batches == 1:
                    with loader.factory() as session:
                        activate_version(session, session.get(ModelVersion, loader.older))
                        session.commit()
                return engine.classify(images)

        return Engine()


def test_an_older_version_activated_mid_task_takes_over_at_the_next_batch(factory, settings, tiny_bundle,
                                                                           cnn_bundle):
    files = {path: data for path, data in scan_files(good=12).items() if not path.startswith("bad/")}
    with factory() as session:
        older = register_bundle(session, tiny_bundle)
        newer = register_bundle(session, cnn_bundle)
        activate_version(session, newer)
        session.commit()
        older_id, newer_id = older.id, newer.id
        scan_ids = [s.id for s in make_job(session, settings, files).scans]
    assert settings.inference_batch_size == 4 and len(scan_ids) == 12  # three engine batches in one task
    outcome = classify_scans(factory, settings, scan_ids, newer_id,
                             engine_loader=RollbackDuringFirstBatch(factory, older_id))
    assert sorted(outcome.classified) == sorted(scan_ids)
    with factory() as session:
        scans = {s.id: s for s in session.execute(select(Scan).where(Scan.id.in_(scan_ids))).scalars()}
        made_by: dict[int, set[int]] = defaultdict(set)
        for prediction in session.execute(select(Prediction).where(Prediction.scan_id.in_(scan_ids))).scalars():
            made_by[prediction.scan_id].add(prediction.model_version_id)
    assert sorted(scans) == sorted(scan_ids) and good_paths(files) == sorted(s.path for s in scans.values())
    # Every prediction of a scan comes from one version, the one the scan records.
    assert all(made_by[i] == {scans[i].model_version_id} for i in scan_ids)
    batches = [sorted(scan_ids)[k:k + 4] for k in range(0, 12, 4)]
    per_batch = [{scans[i].model_version_id for i in batch} for batch in batches]
    assert all(len(versions) == 1 for versions in per_batch), f"a batch mixed versions: {per_batch}"
    # The batch running when the older version was activated finished on the newer one; the rest switched.
    assert per_batch == [{newer_id}, {older_id}, {older_id}]
