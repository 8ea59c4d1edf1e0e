"""How long one Grad-CAM explanation takes per model: `python -m bench.explain [--bundle DIR] [--data DIR]`.

Without --bundle the three networks are built at --image-size with random weights (the time
does not depend on the weights) and an SVM is fitted on random features; scans come from
--data (the first --scans files) or are random 512 px images. Prints one JSON line: per model
the first explanation (cutting the network included) and the median of the next --repeats,
each from the decoded scan to the overlay PNG, as a worker's task computes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence


def _random_bundle(image_size: int):
    import numpy as np
    from sklearn.svm import SVC

    from models.architectures import build_custom_cnn, build_transfer_model
    from models.backbones import BackboneWeights
    from models.bundle import Bundle

    rng = np.random.default_rng(0)
    networks = {name: build_transfer_model(name, image_size, BackboneWeights("none"))
                for name in ("resnet50", "vgg16")}
    networks["custom_cnn"] = build_custom_cnn(image_size)
    svm = SVC(probability=True, random_state=0).fit(rng.normal(size=(40, 256)), np.arange(40) % 4)
    return Bundle(path=Path("."), manifest={}, classes=["glioma", "meningioma", "notumor", "pituitary"],
                  image_size=image_size, networks=networks, estimators={"svm": svm}, label_encoder=None)


def _scans(data: str | None, count: int) -> list:
    import numpy as np

    if data is None:
        rng = np.random.default_rng(1)
        return [rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8) for _ in range(count)]
    from training.decode import decode_file
    from training.predict import expand_paths

    files, _ = expand_paths([data])
    return [decode_file(path)[0].image for path in files[:count]]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    parser.add_argument("--bundle", help="a bundle folder (default: random networks at --image-size)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--data", help="a folder of scans (default: random 512 px images)")
    parser.add_argument("--scans", type=int, default=4,
                        help="scans explained per model (the first, then the median of the rest)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from models.bundle import load_bundle
    from models.explain import Explainer, overlay_png

    bundle = load_bundle(args.bundle) if args.bundle else _random_bundle(args.image_size)
    explainer = Explainer(bundle)
    scans = _scans(args.data, max(args.scans, 2))
    results = {}
    for model in explainer.model_names:
        seconds = []
        for image in scans:
            started = time.perf_counter()
            explanation = explainer.explain(image, model)
            overlay_png(image, explanation)
            seconds.append(time.perf_counter() - started)
        results[model] = {"first_s": round(seconds[0], 3),
                          "median_s": round(statistics.median(seconds[1:]), 3),
                          "map": list(explanation.heatmap.shape), "layer": explanation.layer}
    print(json.dumps({"backend": keras.backend.backend(), "image_size": explainer.image_size,
                      "scan_shape": list(scans[0].shape), "scans": len(scans), "cpus": os.cpu_count(),
                      "load_average": round(os.getloadavg()[0], 2), "machine": platform.machine(),
                      "bundle": args.bundle or "random", "models": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
