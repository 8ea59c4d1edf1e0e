"""Build a real, tiny five-model bundle (32 px, random backbone weights) for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES: tuple[str, ...] = ("glioma", "meningioma", "notumor", "pituitary")


def synthetic_images(per_class: int = 8, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return uint8 [N,S,S,3] images and int labels; each class has its own bright blob position."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    centres = [(0.3, 0.3), (0.3, 0.7), (0.7, 0.3), (0.7, 0.7)]
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    for label, (cy, cx) in enumerate(centres):
        for _ in range(per_class):
            blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)) * 200
            noise = rng.normal(0, 12, size=(image_size, image_size))
            gray = np.clip(30 + blob + noise, 0, 255).astype(np.uint8)
            images.append(np.repeat(gray[:, :, None], 3, axis=2))
            labels.append(label)
    return np.stack(images), np.array(labels)


def make_tiny_bundle(out_dir: Path, image_size: int = 32, models: tuple[str, ...] | None = None) -> Path:
    """Build the five models at `image_size` with backbone weights 'none', fit SVM/RF on real
    ResNet50 features of synthetic scans, save with save_bundle; return the bundle folder."""
    import keras
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import LabelEncoder
    from sklearn.svm import SVC

    from models.architectures import FEATURES_LAYER, build_custom_cnn, build_transfer_model
    from models.backbones import BackboneWeights
    from models.bundle import save_bundle
    from models.preprocess import preprocess_for

    wanted = models or ("resnet50", "vgg16", "custom_cnn", "svm", "random_forest")
    keras.utils.set_random_seed(7)
    weights = BackboneWeights(mode="none")
    networks: dict[str, keras.Model] = {}
    if "resnet50" in wanted:
        networks["resnet50"] = build_transfer_model("resnet50", image_size, weights, len(CLASSES))
    if "vgg16" in wanted:
        networks["vgg16"] = build_transfer_model("vgg16", image_size, weights, len(CLASSES))
    if "custom_cnn" in wanted:
        networks["custom_cnn"] = build_custom_cnn(image_size, len(CLASSES), "improved")
    encoder = LabelEncoder().fit(list(CLASSES))
    estimators = {}
    if {"svm", "random_forest"} & set(wanted):
        images, labels = synthetic_images(image_size=image_size)
        resnet = networks["resnet50"]
        extractor = keras.Model(resnet.inputs, resnet.get_layer(FEATURES_LAYER).output)
        features = np.asarray(extractor.predict(preprocess_for("resnet50", images), verbose=0))
        if "svm" in wanted:
            estimators["svm"] = SVC(kernel="rbf", gamma="scale", C=1.0, probability=True, random_state=0).fit(
                features, labels
            )
        if "random_forest" in wanted:
            estimators["random_forest"] = RandomForestClassifier(n_estimators=10, random_state=42).fit(
                features, labels
            )
    out = Path(out_dir)
    save_bundle(
        out,
        networks=networks,
        estimators=estimators,
        label_encoder=encoder,
        manifest={
            "classes": list(encoder.classes_),
            "image_size": image_size,
            "backbone_weights": {"resnet50": weights.to_manifest(), "vgg16": weights.to_manifest()},
            "custom_cnn_variant": "improved",
            "training_data_sha256": "synthetic",
            "validation_metrics": {},
            "ensemble_weights": {name: 1.0 for name in wanted},
            "epochs": 0,
            "seed": 7,
        },
    )
    return out
