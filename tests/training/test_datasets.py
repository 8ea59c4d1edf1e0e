"""Labelled folders and zips, the content-hash stratified split, fingerprints and bulk loading."""
from __future__ import annotations

import hashlib
import io
import zipfile
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.datasets import (
    DatasetError,
    LabelledImage,
    dataset_fingerprint,
    fit_label_encoder,
    list_labelled,
    load_image_array,
    read_bytes,
    stratified_hash_split,
)
from training.decode import DecodeError


def _encode(ext: str, value: int, size: int = 40) -> bytes:
    """A solid-colour image with a small marker so different values give different bytes."""
    image = np.full((size, size, 3), value, np.uint8)
    image[:4, :4] = 255 - value
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


@pytest.fixture()
def labelled_dir(tmp_path: Path) -> Path:
    """glioma/ (3 JPEG + 1 nested PNG) and notumor/ (2 PNG), plus files that must be ignored."""
    root = tmp_path / "data"
    (root / "glioma" / "sub").mkdir(parents=True)
    (root / "notumor").mkdir()
    for i, value in enumerate((10, 60, 110)):
        (root / "glioma" / f"g{i}.jpg").write_bytes(_encode(".jpg", value))
    (root / "glioma" / "sub" / "deep.png").write_bytes(_encode(".png", 160))
    (root / "notumor" / "n0.png").write_bytes(_encode(".png", 200))
    (root / "notumor" / "n1.png").write_bytes(_encode(".png", 230))
    (root / "notumor" / ".hidden.png").write_bytes(b"not listed")
    (root / "notumor" / "readme.txt").write_text("not a scan")
    (root / "stray.jpg").write_bytes(_encode(".jpg", 5))  # not inside a class folder
    return root


def _zip_of(folder: Path, target: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + path.relative_to(folder).as_posix())
    return target


def test_list_folder(labelled_dir: Path) -> None:
    items = list_labelled(labelled_dir)
    names = [(Path(i.source).name, i.label) for i in items]
    assert names == [("g0.jpg", "glioma"), ("g1.jpg", "glioma"), ("g2.jpg", "glioma"), ("deep.png", "glioma"),
                     ("n0.png", "notumor"), ("n1.png", "notumor")]
    for item in items:
        assert item.sha256 == hashlib.sha256(Path(item.source).read_bytes()).hexdigest()
        assert read_bytes(item) == Path(item.source).read_bytes()
    assert list_labelled(labelled_dir) == items  # deterministic


@pytest.mark.parametrize("prefix", ["", "Training/"])
def test_list_zip_matches_folder(labelled_dir: Path, tmp_path: Path, prefix: str) -> None:
    archive = _zip_of(labelled_dir, tmp_path / "data.zip", prefix)
    folder_items = list_labelled(labelled_dir)
    zip_items = list_labelled(archive)
    assert [(i.label, i.sha256) for i in zip_items] == [(i.label, i.sha256) for i in folder_items]
    assert dataset_fingerprint(zip_items) == dataset_fingerprint(folder_items)
    assert all(i.source.startswith(f"{archive}::{prefix}") for i in zip_items)
    for item in zip_items:
        assert hashlib.sha256(read_bytes(item)).hexdigest() == item.sha256
    images, kept = load_image_array(zip_items, 16, workers=2)
    assert images.shape == (6, 16, 16, 3) and kept == list(range(6))


@pytest.mark.parametrize("evil", ["../escape.jpg", "glioma/../../escape.jpg", "/etc/escape.jpg",
                                  "C:/escape.jpg", "glioma\\..\\..\\escape.jpg"])
def test_zip_members_escaping_the_archive_are_refused(labelled_dir: Path, tmp_path: Path, evil: str) -> None:
    archive = _zip_of(labelled_dir, tmp_path / "evil.zip")
    with zipfile.ZipFile(archive, "a") as handle:
        handle.writestr(zipfile.ZipInfo(evil), _encode(".jpg", 1))
    with pytest.raises(DatasetError, match="outside the archive"):
        list_labelled(archive)


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list_labelled(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="neither a folder nor a zip"):
        list_labelled(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no labelled images"):
        list_labelled(tmp_path / "empty")


def _synthetic_items(seed: int = 0) -> list[LabelledImage]:
    """600 items over 3 unbalanced classes, with duplicate groups of 2-4 identical files."""
    rng = np.random.default_rng(seed)
    items = []
    for label, count in (("a", 300), ("b", 200), ("c", 100)):
        made = 0
        while made < count:
            copies = int(min(rng.choice([1, 1, 1, 2, 3, 4]), count - made))
            digest = hashlib.sha256(f"{label}{made}".encode()).hexdigest()
            items += [LabelledImage(f"/x/{label}/{made + k}.jpg", label, digest) for k in range(copies)]
            made += copies
    return items


def _check_split(items: list[LabelledImage], train: list[LabelledImage], val: list[LabelledImage],
                 fraction: float, tolerance: float) -> None:
    assert sorted(train + val, key=lambda i: i.source) == sorted(items, key=lambda i: i.source)
    assert not {i.sha256 for i in train} & {i.sha256 for i in val}
    assert abs(len(val) / len(items) - fraction) <= tolerance
    overall, held = Counter(i.label for i in items), Counter(i.label for i in val)
    for label in overall:
        assert abs(held[label] / len(val) - overall[label] / len(items)) <= tolerance, label


def test_split_groups_duplicates_and_stratifies() -> None:
    items = _synthetic_items()
    assert len({i.sha256 for i in items}) < len(items)
    train, val = stratified_hash_split(items, val_fraction=0.2, seed=1)
    _check_split(items, train, val, 0.2, 0.02)
    assert stratified_hash_split(items, 0.2, seed=1) == (train, val)
    assert stratified_hash_split(items, 0.2, seed=2)[1] != val
    with pytest.raises(DatasetError):
        stratified_hash_split(items, val_fraction=1.0)


def test_split_keeps_cross_class_copies_together() -> None:
    items = [LabelledImage(f"/x/{n}", label, f"h{n // 2}") for n, label in enumerate("aabbaabbaabbaabb" * 4)]
    items += [LabelledImage("/y/1", "a", "shared"), LabelledImage("/y/2", "b", "shared")]
    for seed in range(5):
        train, val = stratified_hash_split(items, 0.25, seed=seed)
        assert not {i.sha256 for i in train} & {i.sha256 for i in val}


def test_split_on_the_real_shared_folder(shared_training_dir: Path) -> None:
    items = list_labelled(shared_training_dir)
    assert len(items) == 5712
    assert len({i.sha256 for i in items}) == 5521  # 191 byte-identical duplicates
    train, val = stratified_hash_split(items, val_fraction=0.1, seed=42)
    _check_split(items, train, val, 0.1, 0.01)
    assert fit_label_encoder(i.label for i in items).classes_.tolist() == [
        "glioma", "meningioma", "notumor", "pituitary"]


def test_label_encoder_and_fingerprint() -> None:
    encoder = fit_label_encoder(["pituitary", "glioma", "notumor", "glioma"])
    assert encoder.classes_.tolist() == ["glioma", "notumor", "pituitary"]
    assert encoder.transform(["notumor"]).tolist() == [1]
    items = _synthetic_items()
    fingerprint = dataset_fingerprint(items)
    assert len(fingerprint) == 64
    assert dataset_fingerprint(list(reversed(items))) == fingerprint  # order does not matter
    relabelled = [LabelledImage(items[0].source, "b", items[0].sha256), *items[1:]]
    assert dataset_fingerprint(relabelled) != fingerprint
    assert dataset_fingerprint(items[1:]) != fingerprint


def test_load_image_array_resizes_and_handles_bad_files(labelled_dir: Path) -> None:
    (labelled_dir / "notumor" / "broken.jpg").write_bytes(_encode(".jpg", 90)[:300])
    items = list_labelled(labelled_dir)
    bad = next(i for i, item in enumerate(items) if item.source.endswith("broken.jpg"))
    with pytest.raises(DecodeError, match="broken.jpg: truncated JPEG"):
        load_image_array(items, 24, workers=2)
    images, kept = load_image_array(items, 24, workers=2, on_error="skip")
    assert images.shape == (len(items) - 1, 24, 24, 3) and images.dtype == np.uint8
    assert kept == [i for i in range(len(items)) if i != bad]
    # A solid image (marker aside) keeps its value through decode + resize.
    n0 = kept.index(next(i for i, item in enumerate(items) if item.source.endswith("n0.png")))
    assert abs(int(images[n0, 20, 20, 0]) - 200) <= 2


def test_load_image_array_multi_frame_dicom_repeats_its_index(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = 2
    ds.PixelData = np.arange(128, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "series.dcm").write_bytes(buffer.getvalue())
    (tmp_path / "a" / "z.png").write_bytes(_encode(".png", 50))
    assert pydicom.__version__
    images, kept = load_image_array(list_labelled(tmp_path), 8, workers=1)
    assert images.shape == (3, 8, 8, 3) and kept == [0, 0, 1]


def test_load_real_scans(shared_training_dir: Path) -> None:
    items = list_labelled(shared_training_dir)[::1000]
    images, kept = load_image_array(items, 64, workers=2)
    assert images.shape == (len(items), 64, 64, 3) and kept == list(range(len(items)))
    assert all(images[i].std() > 5 for i in range(len(items)))
