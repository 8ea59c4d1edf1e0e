"""`python -m training explain`: one Grad-CAM overlay PNG per file and model, on the tiny bundle (32 px)."""

from __future__ import annotations

import cv2
import pytest

from tests.helpers.tiny_bundle import synthetic_images
from training.cli import main


@pytest.fixture()
def scans(tmp_path):
    """Two scans with the same name in two folders (48x48 and 40x60) and one file that is not an image."""
    images, _ = synthetic_images(per_class=1, image_size=48, seed=4)
    for folder, image in (("a", images[0]), ("b", cv2.resize(images[1], (60, 40)))):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "slice.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.png").write_bytes(b"not an image")
    return [tmp_path / "a" / "slice.png", tmp_path / "b" / "slice.png", tmp_path / "notes.png"]


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


def test_one_overlay_per_file_and_model(tiny_bundle, scans, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", "--models", str(tiny_bundle), *map(str, scans), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    models = ["custom_cnn", "random_forest", "resnet50", "svm", "vgg16"]
    assert sorted(p.name for p in out.iterdir()) == [f"slice-2-{m}.png" for m in models] + [f"slice-{m}.png" for m in models]
    assert _read(out / "slice-svm.png").shape == (48, 48, 3)  # each scan at its own size
    assert _read(out / "slice-2-custom_cnn.png").shape == (40, 60, 3)
    assert "svm (via resnet50)" in printed and "random_forest (via resnet50)" in printed
    assert f"skipped {scans[2]}" in printed and "10 overlays in" in printed and "1 files skipped" in printed


def test_only_the_chosen_models_and_exit_1_when_nothing_could_be_read(tiny_bundle, scans, tmp_path, capsys):
    out = tmp_path / "chosen"
    assert main(["explain", "--models", str(tiny_bundle), str(scans[1]), "--out", str(out),
                 "--model", "svm", "--model", "custom_cnn"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["slice-custom_cnn.png", "slice-svm.png"]
    capsys.readouterr()
    assert main(["explain", "--models", str(tiny_bundle), str(scans[2]), "--out", str(tmp_path / "none")]) == 1
    assert "0 overlays" in capsys.readouterr().out


def test_the_ensemble_and_a_missing_bundle_are_refused(tmp_path, scans, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["explain", "--models", str(tmp_path), str(scans[0]), "--out", str(tmp_path), "--model", "ensemble"])
    assert exited.value.code == 2 and "invalid choice: 'ensemble'" in capsys.readouterr().err
    assert main(["explain", "--models", str(tmp_path / "nowhere"), str(scans[0]), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bundle" in err and "Traceback" not in err
