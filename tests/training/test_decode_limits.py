"""The pixel limit: every format's declared size is checked from its header, before any decoding."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.bad_inputs import (
    bmp_declaring,
    decode_in_subprocess,
    deflated_dicom_bomb,
    dicom_bytes,
    jpeg_bytes,
    jpeg_declaring,
    png_bytes,
    png_declaring,
    ramp16,
    tiff_bytes,
    tiff_declaring,
)
from training.decode import DEFAULT_MAX_IMAGE_PIXELS, DecodeError, decode_bytes

pytest.importorskip("pydicom")
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
DEFLATED = "1.2.840.10008.1.2.1.99"


def test_default_limit_is_the_settings_default() -> None:
    from config.settings import load_settings

    default = load_settings(environ={"APP_ENV": "test"}).max_image_pixels
    assert DEFAULT_MAX_IMAGE_PIXELS == default == 36_000_000


@pytest.mark.parametrize("build", [
    lambda: png_declaring(40_000, 40_000),
    lambda: jpeg_declaring(40_000, 40_000),
    lambda: bmp_declaring(40_000, 40_000),
    lambda: tiff_declaring(40_000, 40_000),
    lambda: dicom_bytes(ramp16(16), rows=40_000, columns=40_000),
], ids=["png", "jpeg", "bmp", "tiff", "dicom"])
def test_declared_size_over_the_default_limit_is_refused_from_the_header(build) -> None:
    data = build()
    started = time.perf_counter()
    with pytest.raises(DecodeError) as refused:
        decode_bytes(data, "bomb", target_size=128)
    assert time.perf_counter() - started < 1.0
    assert str(refused.value) == ("image too large: it declares 40000 x 40000 = 1,600,000,000 pixels, "
                                  "over the limit of 36,000,000 pixels")


@pytest.mark.parametrize("build", [
    lambda: png_bytes(size=40), lambda: jpeg_bytes(size=40), lambda: tiff_bytes(size=40),
    lambda: bmp_declaring(40, 40), lambda: dicom_bytes(ramp16(40)),
], ids=["png", "jpeg", "tiff", "bmp", "dicom"])
def test_max_pixels_is_inclusive_and_none_turns_it_off(build) -> None:
    data = build()
    assert decode_bytes(data, max_pixels=40 * 40)[0].image.shape == (40, 40, 3)
    with pytest.raises(DecodeError, match="40 x 40 = 1,600 pixels, over the limit of 1,599"):
        decode_bytes(data, max_pixels=40 * 40 - 1)


def test_no_limit_decodes_an_image_larger_than_the_default() -> None:
    data = png_declaring(6_100, 6_000, complete=True)  # 36.6 M pixels
    with pytest.raises(DecodeError, match="image too large"):
        decode_bytes(data, target_size=32)
    assert decode_bytes(data, target_size=32, max_pixels=None)[0].image.shape == (32, 32, 3)
    assert decode_bytes(data, max_pixels=None)[0].image.shape == (6_000, 6_100, 3)


def test_multi_frame_dicom_counts_every_frame() -> None:
    data = dicom_bytes(ramp16(24, frames=3), frames=3)
    assert len(decode_bytes(data, max_pixels=3 * 24 * 24)) == 3
    with pytest.raises(DecodeError, match=r"24 x 24 x 3 frames = 1,728 pixels, over the limit of 1,727"):
        decode_bytes(data, max_pixels=3 * 24 * 24 - 1)


def test_compressed_dicom_frame_must_match_its_header() -> None:
    """Pillow sizes a JPEG frame from the JPEG, so a 16 x 16 header could hide a 30,000 x 30,000 frame."""
    lying = dicom_bytes(encapsulated=[jpeg_declaring(30_000, 30_000)], syntax=JPEG_BASELINE, rows=16,
                        columns=16)
    with pytest.raises(DecodeError, match="frame 1 is 30000 x 30000 pixels, its header says 16 x 16"):
        decode_bytes(lying)
    honest = dicom_bytes(encapsulated=[jpeg_bytes(size=16, channels=1)], syntax=JPEG_BASELINE, rows=16,
                         columns=16)
    assert decode_bytes(honest)[0].image.shape == (16, 16, 3)


def test_deflated_dicom_is_inflated_with_a_cap() -> None:
    with pytest.raises(DecodeError, match="deflated DICOM data set inflates past 8,000,000 bytes"):
        decode_bytes(deflated_dicom_bomb(64 << 20), max_pixels=1_000_000)
    small = dicom_bytes(ramp16(32), syntax=DEFLATED)
    assert decode_bytes(small, max_pixels=32 * 32)[0].image.shape == (32, 32, 3)


def test_opencv_own_limit_is_a_plain_decode_error() -> None:
    with pytest.raises(DecodeError, match="image too large for the PNG decoder"):
        decode_bytes(png_declaring(40_000, 40_000), max_pixels=None)


@pytest.mark.parametrize("warnings_as", ["default", "error"])
def test_pillow_bomb_check_inside_pydicom_is_a_decode_error(warnings_as: str) -> None:
    """Without a limit of ours, Pillow's own (error past 179 M pixels, warning past 89 M) still ends
    as a DecodeError saying why, also when warnings are errors."""
    side = 15_000 if warnings_as == "default" else 10_000
    data = dicom_bytes(encapsulated=[jpeg_declaring(side, side)], syntax=JPEG_BASELINE, rows=side,
                       columns=side)
    with warnings.catch_warnings():
        warnings.simplefilter(warnings_as)
        with pytest.raises(DecodeError, match=r"corrupt DICOM \(compressed pixel data: pillow: Image size"):
            decode_bytes(data, max_pixels=None)


def test_palette_dicom_without_its_lookup_table_is_a_decode_error() -> None:
    """pydicom raises a bare ValueError here; only DecodeError may leave decode_bytes."""
    with pytest.raises(DecodeError, match=r"corrupt DICOM \(No suitable Palette Color Lookup Table"):
        decode_bytes(dicom_bytes(np.zeros((8, 8), np.uint8), photometric="PALETTE COLOR"))


def test_non_finite_rescale_is_ignored_not_turned_into_garbage() -> None:
    plain = decode_bytes(dicom_bytes(ramp16(16)))[0].image
    for value in ("nan", "inf"):
        assert np.array_equal(decode_bytes(dicom_bytes(ramp16(16), RescaleSlope=value))[0].image, plain)


def test_bombs_decode_in_bounded_memory(tmp_path: Path) -> None:
    """Complete bombs (every row present) in a fresh process: refused, peak RSS far below their size."""
    bombs = {
        "png.png": png_declaring(12_000, 12_000, complete=True),  # 144 M pixels: 864 MB decoded
        "jpeg.jpg": jpeg_declaring(16_000, 16_000),  # libjpeg would fill 768 MB with gray
        "deflated.dcm": deflated_dicom_bomb(1 << 30),  # 1 MB that pydicom would inflate to 1 GiB
    }
    paths = []
    for name, data in bombs.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    measured = decode_in_subprocess(paths)
    assert [o.split(":")[0] for o in measured["result"]["outcomes"]] == ["DecodeError"] * 3, measured
    assert measured["peak_mb"] < 300, measured
