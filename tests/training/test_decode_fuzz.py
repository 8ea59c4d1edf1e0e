"""Bounded fuzzing of the decoders: random bytes and mutated valid headers raise DecodeError or decode.

Derandomized and without an example database, so every run tries the same inputs.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.bad_inputs import (
    bmp_declaring,
    dicom_bytes,
    jpeg_bytes,
    png_bytes,
    png_declaring,
    ramp16,
    tiff_bytes,
)
from training.decode import DecodeError, DecodedScan, decode_bytes

pytest.importorskip("pydicom")
# A mutated header may declare any size up to this, so each example stays small and fast.
FUZZ_MAX_PIXELS = 2_000_000
FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# One RLE segment (header: 1 segment at offset 64) of eight "repeat the next byte 8 times" runs: 8 x 8 zeros.
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
RLE_FRAME = b"\x01\x00\x00\x00" + b"\x40\x00\x00\x00" + bytes(56) + b"\xf9\x00" * 8
SEEDS = {
    "png": png_bytes(1, 24),
    "jpeg": jpeg_bytes(2, 24),
    "png bomb header": png_declaring(3000, 3000),
    "bmp": bmp_declaring(8, 8),
    "tiff": tiff_bytes(3, 16),
    "dicom": dicom_bytes(ramp16(16)),
    "dicom multi-frame": dicom_bytes(ramp16(8, frames=3), frames=3),
    "dicom jpeg": dicom_bytes(encapsulated=[jpeg_bytes(4, 16, channels=1)], syntax="1.2.840.10008.1.2.4.50"),
    "dicom deflated": dicom_bytes(ramp16(16), syntax="1.2.840.10008.1.2.1.99"),
    "dicom rle": dicom_bytes(np.zeros((8, 8), np.uint8), syntax=RLE_LOSSLESS, encapsulated=[RLE_FRAME]),
}
MAGICS = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"\0" * 128 + b"DICM",
          b"PK\x03\x04", b"\x02\x00\x10\x00UI"]


def decode_only_decode_error(data: bytes) -> None:
    """decode_bytes either returns RGB uint8 scans or raises DecodeError; anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about each invalid value it meets
        try:
            scans = decode_bytes(data, "fuzz", target_size=32, max_pixels=FUZZ_MAX_PIXELS)
        except DecodeError as exc:
            assert str(exc)
            return
    assert scans and all(isinstance(s, DecodedScan) for s in scans)
    for scan in scans:
        assert scan.image.dtype == np.uint8 and scan.image.ndim == 3 and scan.image.shape[2] == 3


@FUZZ
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=2048))
def test_random_bytes_behind_any_magic(magic: bytes, tail: bytes) -> None:
    decode_only_decode_error(magic + tail)


@st.composite
def mutated(draw) -> bytes:
    """A valid seed file with a few bytes of its header changed, and maybe cut short."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    span = min(len(data), 700)  # headers, file meta and the first DICOM attributes
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, span - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@FUZZ
@given(data=mutated())
def test_mutated_valid_files(data: bytes) -> None:
    decode_only_decode_error(data)


def test_every_seed_decodes() -> None:
    """The fuzz starts from files that decode, so mutations reach past the first check."""
    for name, data in SEEDS.items():
        if "bomb" in name:
            with pytest.raises(DecodeError, match="image too large"):
                decode_bytes(data, max_pixels=FUZZ_MAX_PIXELS)
        else:
            assert decode_bytes(data, max_pixels=FUZZ_MAX_PIXELS), name


def test_unknown_value_representation_is_a_decode_error() -> None:
    """Found by this fuzz: pydicom raises NotImplementedError when an attribute with a damaged VR is read."""
    data = dicom_bytes(ramp16(16))
    damaged = data.replace(b"\x20\x00\x0e\x00UI", b"\x20\x00\x0e\x00U\x00", 1)  # SeriesInstanceUID
    assert damaged != data
    with pytest.raises(DecodeError, match=r"corrupt DICOM \(Unknown Value Representation"):
        decode_bytes(damaged)
