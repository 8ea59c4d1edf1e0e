"""The first experience of `make run`: the quick first model, then the full run, as the service runs them.

    python bench/first_model.py /tmp/first-model --data ../shared/data/brain-mri/Training [--quick-only]

In one process on SQLite (no broker), the two training runs scripts/run_local.py queues
({"profile": "quick"}, then the full recipe; backbone weights `none`) go through
tasks.train.run_training: pool, training, registration, the gate. Prints one JSON line per run:
wall time, whether it was promoted, and its ensemble figures on the evaluation split.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # run as a script: the repository root is not on sys.path
    sys.path.insert(0, str(REPO))


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="a new folder for the database and bundles")
    parser.add_argument("--data", default=str(REPO.parent / "shared/data/brain-mri/Training"))
    parser.add_argument("--quick-only", action="store_true", help="stop after the quick run")
    args = parser.parse_args()

    from bench.in_process import in_process_service, train_now
    from db.models import ModelVersion, TrainingRun

    settings, factory = in_process_service(args.out, args.data, BACKBONE_WEIGHTS="none")
    # What scripts/run_local.py sends (BACKBONE_WEIGHTS=none: offline).
    runs = [("quick", {"backbone_weights": "none", "profile": "quick"}), ("full", {"backbone_weights": "none"})]
    for name, params in runs[:1] if args.quick_only else runs:
        run_id, seconds = train_now(factory, settings, params)
        with factory() as session:
            run = session.get(TrainingRun, run_id)
            version = session.get(ModelVersion, run.model_version_id) if run.model_version_id else None
            decision = run.decision or {}
            candidate = decision.get("candidate") or {}
            print(json.dumps({
                "run": name, "status": run.status, "error": run.error,
                "wall_s": round(seconds), "promoted": decision.get("promoted"),
                "reason": decision.get("reason"),
                "evaluation": {k: candidate.get(k) for k in ("accuracy", "macro_f1", "size")},
                "profile": version.manifest.get("profile") if version else None,
                "notes": version.manifest.get("notes") if version else None,
                "timings": version.manifest.get("timings") if version else None,
            }), flush=True)


if __name__ == "__main__":
    main()
