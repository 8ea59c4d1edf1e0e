"""The Random Forest's predict_proba at the serving batch size: n_jobs as trained (-1) against 1.

    python bench/forest_threads.py [--batch-size 32] [--rounds 50] [--trees 100]

Training fits the forest with n_jobs=-1 (training.transfer.train_estimators); the engine serves
a single-threaded copy (models.engine). This times both on one fitted forest, alternating, in one
run: 100 fully grown trees on 4,500 synthetic 256-d feature vectors of four overlapping classes
(the shape of the ResNet50 features the recipe fits it on). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Fit once, then time predict_proba per batch with each n_jobs, alternating."""
    from sklearn.ensemble import RandomForestClassifier

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--trees", type=int, default=100)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 4500)
    features = (rng.normal(0, 1, (4, 256))[labels] + rng.normal(0, 2.0, (4500, 256))).astype(np.float32)
    forest = RandomForestClassifier(n_estimators=args.trees, n_jobs=-1, random_state=0).fit(features, labels)
    batch = features[:args.batch_size]
    ms: dict[int, list[float]] = {-1: [], 1: []}
    for _ in range(3):  # alternate, so a busy spell does not favour one setting
        for jobs in ms:
            forest.n_jobs = jobs
            forest.predict_proba(batch)
            started = time.perf_counter()
            for _ in range(args.rounds):
                forest.predict_proba(batch)
            ms[jobs].append((time.perf_counter() - started) / args.rounds * 1000)
    record = {"trees": args.trees, "batch_size": args.batch_size, "cpus": os.cpu_count(),
              "ms_per_batch_n_jobs_all": [round(v, 2) for v in ms[-1]],
              "ms_per_batch_n_jobs_1": [round(v, 2) for v in ms[1]],
              "speedup": round(min(ms[-1]) / min(ms[1]), 2)}
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
