"""Decoding every supported format, and refusing every kind of bad input with a plain reason."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.preprocess import resize_image
from training.decode import DecodeError, DecodedScan, decode_bytes, decode_file

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402


def _pattern(height: int = 64, width: int = 64) -> np.ndarray:
    """A smooth RGB test pattern (JPEG-friendly) with distinct channels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                     np.full_like(x, 60)], axis=2).astype(np.uint8)


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- JPEG / PNG / BMP


def test_jpeg_decodes_to_rgb_not_bgr() -> None:
    red = np.zeros((32, 48, 3), np.uint8)
    red[..., 0] = 250
    [scan] = decode_bytes(_jpeg(red))
    assert isinstance(scan, DecodedScan) and scan.frame is None and scan.study_uid is None
    assert scan.image.shape == (32, 48, 3) and scan.image.dtype == np.uint8
    assert scan.image[..., 0].mean() > 240 and scan.image[..., 2].mean() < 15


def test_grayscale_jpeg_and_png_become_three_channels() -> None:
    gray = _pattern()[..., 0]
    ok, buf = cv2.imencode(".jpg", gray)
    for data in (buf.tobytes(), _png(gray)):
        [scan] = decode_bytes(data)
        assert scan.image.shape == (64, 64, 3)
        assert np.array_equal(scan.image[..., 0], scan.image[..., 1])
        assert np.array_equal(scan.image[..., 1], scan.image[..., 2])
    assert np.array_equal(decode_bytes(_png(gray))[0].image[..., 0], gray)


def test_png_rgb_rgba_and_16_bit() -> None:
    rgb = _pattern()
    assert np.array_equal(decode_bytes(_png(rgb))[0].image, rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    assert np.array_equal(decode_bytes(_png(rgba))[0].image, rgb)
    deep = (rgb[..., 0].astype(np.uint16) * 257)
    ok, buf = cv2.imencode(".png", deep)
    [scan] = decode_bytes(buf.tobytes())
    # Deep images are windowed on their own percentiles, so contrast may stretch slightly,
    # but the grey order and the full range survive.
    gray = scan.image[..., 0].astype(int)
    assert scan.image.dtype == np.uint8 and gray.min() == 0 and gray.max() == 255
    assert np.corrcoef(gray.ravel(), rgb[..., 0].ravel())[0, 1] > 0.99


def _ramp12(height: int = 48, width: int = 64) -> np.ndarray:
    """A 12-bit horizontal ramp (0-4,095) stored in 16 bits, as scanners export it."""
    return np.tile(np.linspace(0, 4095, width), (height, 1)).astype(np.uint16)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_12_and_16_bit_png_and_tiff_are_windowed_not_shifted_to_black(ext) -> None:
    """IMREAD_COLOR shifted 16-bit samples by 8 bits: a 12-bit scan came out 0-15 (issue 13)."""
    for stored in (_ramp12(), (_ramp12().astype(np.uint32) * 16).astype(np.uint16)):
        ok, buf = cv2.imencode(ext, stored)
        assert ok
        [scan] = decode_bytes(buf.tobytes(), filename="x" + ext)
        gray = scan.image[..., 0]
        assert scan.image.shape == (48, 64, 3)
        assert gray[:, 0].max() <= 2 and gray[:, -1].min() >= 253  # the full display range
        assert 110 < gray[10, 32] < 145  # mid-ramp stays mid-grey


def test_deep_png_and_dicom_of_the_same_samples_decode_alike() -> None:
    """A 16-bit image looks the same whether it arrives as PNG or as DICOM without a window."""
    stored = _ramp12()
    ok, buf = cv2.imencode(".png", stored)
    from_png = decode_bytes(buf.tobytes())[0].image
    from_dicom = decode_bytes(_dicom(stored))[0].image
    assert np.array_equal(from_png, from_dicom)


def test_16_bit_colour_png_keeps_its_colours() -> None:
    rgb = _pattern()
    deep = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 16  # 12-bit colour
    ok, buf = cv2.imencode(".png", deep)
    image = decode_bytes(buf.tobytes())[0].image.astype(int)
    for channel in (0, 1):  # the two ramps; the third channel is constant
        assert np.corrcoef(image[..., channel].ravel(), rgb[..., channel].ravel())[0, 1] > 0.99
    assert image[..., 2].std() == 0 and 0 < image[0, 0, 2] < image[-1, -1, 1]


def test_bmp_and_tiff() -> None:
    rgb = _pattern()
    for ext in (".bmp", ".tiff"):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert np.array_equal(decode_bytes(buf.tobytes())[0].image, rgb), ext


def _edges(height: int, width: int) -> np.ndarray:
    """Hard-edged RGB blocks and thin lines: where two resampling chains differ most."""
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    image = np.repeat(np.repeat(blocks, 16, 0), 16, 1)[:height, :width].copy()
    image[::23] = 255
    image[:, ::31] = 0
    return image


@pytest.mark.parametrize("shape", [(512, 512), (630, 630), (300, 800), (97, 131)])
def test_every_format_goes_through_one_resampling_chain(shape) -> None:
    """The same pixels as JPEG, PNG, BMP or TIFF come out identical at the model size (issue 13).

    JPEGs were shrunk inside libjpeg (DCT scaling) before the area resize the other formats
    got: on real slices the two chains differed by up to 114 grey levels.
    """
    jpeg = _jpeg(_edges(*shape), quality=90)
    pixels = decode_bytes(jpeg)[0].image  # what the JPEG holds, at full size
    assert pixels.shape == (*shape, 3)
    expected = resize_image(pixels, 128)
    assert np.array_equal(decode_bytes(jpeg, target_size=128)[0].image, expected)
    for ext in (".png", ".bmp", ".tiff"):
        ok, buf = cv2.imencode(ext, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        assert np.array_equal(decode_bytes(buf.tobytes(), target_size=128)[0].image, expected), ext
    assert decode_bytes(jpeg, target_size=224)[0].image.shape == (224, 224, 3)


@pytest.mark.parametrize("fraction", [0.95, 0.7, 0.5, 0.2])
def test_truncated_jpeg_is_refused_not_gray_filled(fraction: float) -> None:
    data = _jpeg(_pattern(128, 128))
    with pytest.raises(DecodeError, match="truncated JPEG"):
        decode_bytes(data[: int(len(data) * fraction)])


def test_jpeg_truncated_inside_header_and_just_before_eoi() -> None:
    data = _jpeg(_pattern())
    for cut in (3, 20, len(data) - 2):
        with pytest.raises(DecodeError, match="truncated JPEG"):
            decode_bytes(data[:cut])


def test_jpeg_with_trailing_bytes_after_eoi_is_accepted() -> None:
    data = _jpeg(_pattern())
    assert decode_bytes(data + b"\x00" * 16 + b"junk")[0].image.shape == (64, 64, 3)


def test_truncated_and_corrupt_png() -> None:
    data = _png(_pattern())
    for cut in (10, 40, len(data) // 2, len(data) - 4):
        with pytest.raises(DecodeError, match="truncated PNG"):
            decode_bytes(data[:cut])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    with pytest.raises(DecodeError, match="corrupt PNG"):
        decode_bytes(bytes(flipped))


def test_truncated_bmp() -> None:
    ok, buf = cv2.imencode(".bmp", _pattern())
    with pytest.raises(DecodeError, match="truncated BMP"):
        decode_bytes(buf.tobytes()[:-100])


def _chunk(ctype: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(ctype + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", crc)


def test_zero_sized_png_and_jpeg() -> None:
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)) + _chunk(
        b"IEND", b"")
    with pytest.raises(DecodeError, match="zero-sized image"):
        decode_bytes(png)
    jpeg = bytearray(_jpeg(_pattern()))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5:sof + 9] = b"\x00\x00\x00\x00"
    with pytest.raises(DecodeError, match="zero-sized image"):
        decode_bytes(bytes(jpeg))


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"just some text, not a scan\n" * 20, "not an image"),
    (bytes(range(256)) * 4, "not an image"),
    (b"\x00" * 300, "not an image"),
])
def test_empty_and_garbage(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_bytes(data, filename="x.jpg")


def test_decode_file_reads_and_reports_missing(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(_png(_pattern()))
    assert decode_file(path)[0].image.shape == (64, 64, 3)
    with pytest.raises(DecodeError, match="cannot read file"):
        decode_file(tmp_path / "missing.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty file"):
        decode_file(tmp_path / "empty.jpg")


# --------------------------------------------------------------------------- DICOM


def _dicom(pixels: np.ndarray | None, *, photometric: str = "MONOCHROME2", frames: int = 1,
           preamble: bool = True, implicit: bool = False, **attrs) -> bytes:
    """Build a small uncompressed DICOM file in memory."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = "1.2.3.4.100"
    ds.SeriesInstanceUID = "1.2.3.4.100.1"
    ds.Modality = "MR"
    if pixels is not None:
        rgb = pixels.ndim == (4 if frames > 1 else 3)
        shape = pixels.shape[1:] if frames > 1 else pixels.shape
        ds.Rows, ds.Columns = shape[0], shape[1]
        ds.SamplesPerPixel = 3 if rgb else 1
        if rgb:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = "RGB" if rgb else photometric
        ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = pixels.tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    if preamble:
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out, enforce_file_format=True)
    else:
        ds.save_as(out, implicit_vr=implicit, little_endian=True)
    return out.getvalue()


def _ramp16(height: int = 32, width: int = 32, top: int = 4000) -> np.ndarray:
    return np.linspace(0, top, height * width).reshape(height, width).astype(np.uint16)


def test_dicom_16_bit_window_and_uids() -> None:
    stored = _ramp16()
    [scan] = decode_bytes(_dicom(stored, WindowCenter=2000, WindowWidth=4000))
    assert scan.image.shape == (32, 32, 3) and scan.image.dtype == np.uint8
    expected = np.rint(np.clip(stored / 4000.0 * 255, 0, 255)).astype(np.uint8)
    assert np.abs(scan.image[..., 0].astype(int) - expected).max() <= 1
    assert scan.study_uid == "1.2.3.4.100" and scan.series_uid == "1.2.3.4.100.1" and scan.frame is None


def test_dicom_first_window_of_several_is_used() -> None:
    stored = _ramp16()
    [scan] = decode_bytes(_dicom(stored, WindowCenter=[1000, 3000], WindowWidth=[2000, 500]))
    expected = np.rint(np.clip(stored / 2000.0 * 255, 0, 255)).astype(np.uint8)
    assert np.abs(scan.image[..., 0].astype(int) - expected).max() <= 1


def test_dicom_without_window_uses_robust_percentiles() -> None:
    stored = _ramp16(top=4000)
    stored[0, 0] = 65000  # one hot pixel must not squash the rest of the image to black
    [scan] = decode_bytes(_dicom(stored))
    gray = scan.image[..., 0]
    assert gray.min() == 0 and gray.max() == 255
    assert 100 < gray[16, 16] < 155  # mid-ramp stays mid-gray
    assert np.all(np.diff(gray.ravel()[1:].astype(int)) >= 0)


def test_dicom_monochrome1_is_inverted() -> None:
    stored = _ramp16()
    mono2 = decode_bytes(_dicom(stored, WindowCenter=2000, WindowWidth=4000))[0].image
    data = _dicom(stored, photometric="MONOCHROME1", WindowCenter=2000, WindowWidth=4000)
    mono1 = decode_bytes(data)[0].image
    assert np.array_equal(mono1, 255 - mono2)
    assert mono1[0, 0, 0] == 255 and mono1[-1, -1, 0] == 0


def test_dicom_rescale_slope_and_intercept_applied_before_window() -> None:
    stored = np.linspace(0, 1000, 32 * 32).reshape(32, 32).astype(np.uint16)
    # Modality values 2*v - 1000 span -1000..1000; a window over exactly that range
    # maps stored 0 -> 0 and 1000 -> 255; without the rescale most pixels would be white.
    [scan] = decode_bytes(_dicom(stored, RescaleSlope=2, RescaleIntercept=-1000,
                                 WindowCenter=0, WindowWidth=2000))
    expected = np.rint(stored / 1000.0 * 255).astype(np.uint8)
    assert np.abs(scan.image[..., 0].astype(int) - expected).max() <= 1


def test_dicom_signed_pixels() -> None:
    stored = np.linspace(-1000, 1000, 32 * 32).reshape(32, 32).astype(np.int16)
    [scan] = decode_bytes(_dicom(stored, WindowCenter=0, WindowWidth=2000))
    assert scan.image[0, 0, 0] == 0 and scan.image[-1, -1, 0] == 255


def test_dicom_multi_frame_yields_one_scan_per_frame() -> None:
    frames = np.stack([np.full((16, 24), v, np.uint16) for v in (0, 2000, 4000)])
    frames[:, 0, 0] = 4000  # give each frame some contrast
    scans = decode_bytes(_dicom(frames, frames=3, WindowCenter=2000, WindowWidth=4000))
    assert [s.frame for s in scans] == [0, 1, 2]
    assert all(s.image.shape == (16, 24, 3) and s.series_uid == "1.2.3.4.100.1" for s in scans)
    assert [int(s.image[5, 5, 0]) for s in scans] == [0, 128, 255]


def test_dicom_rgb() -> None:
    rgb = _pattern(20, 30)
    [scan] = decode_bytes(_dicom(rgb))
    assert np.array_equal(scan.image, rgb)
    frames = np.stack([rgb, 255 - rgb])
    scans = decode_bytes(_dicom(frames, frames=2))
    assert len(scans) == 2 and np.array_equal(scans[1].image, 255 - rgb)


@pytest.mark.parametrize("implicit", [False, True])
def test_dicom_without_preamble_is_sniffed(implicit: bool) -> None:
    stored = _ramp16()
    data = _dicom(stored, preamble=False, implicit=implicit, WindowCenter=2000, WindowWidth=4000)
    assert data[128:132] != b"DICM"
    [scan] = decode_bytes(data, "IM0001")
    assert scan.image[-1, -1, 0] == 255 and scan.study_uid == "1.2.3.4.100"


def test_dicom_whose_preamble_is_a_tiff_header_is_read_as_dicom() -> None:
    """The standard allows a TIFF header in the 128-byte preamble (dual-format files)."""
    stored = _ramp16()
    data = bytearray(_dicom(stored, WindowCenter=2000, WindowWidth=4000))
    data[:8] = b"II*\x00\x08\x00\x00\x00"
    [scan] = decode_bytes(bytes(data), "IM0002")
    assert scan.image[-1, -1, 0] == 255 and scan.study_uid == "1.2.3.4.100"


def test_dicom_without_pixel_data() -> None:
    with pytest.raises(DecodeError, match="DICOM file has no pixel data"):
        decode_bytes(_dicom(None))


def test_truncated_and_corrupt_dicom() -> None:
    data = _dicom(_ramp16(64, 64))
    with pytest.raises(DecodeError):
        decode_bytes(data[: len(data) - 3000])
    with pytest.raises(DecodeError, match="DICOM"):
        decode_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 3)


def test_dicom_zero_rows() -> None:
    with pytest.raises(DecodeError, match="zero-sized image"):
        decode_bytes(_dicom(np.zeros((0, 8), np.uint16)))


# --------------------------------------------------------------------------- real scans


def test_real_scans_decode(shared_training_dir: Path) -> None:
    for class_dir in sorted(p for p in shared_training_dir.iterdir() if p.is_dir()):
        path = sorted(class_dir.iterdir())[0]
        [scan] = decode_file(path)
        assert scan.image.ndim == 3 and scan.image.shape[2] == 3 and scan.image.std() > 5
        data = path.read_bytes()
        with pytest.raises(DecodeError, match="truncated"):
            decode_bytes(data[: len(data) * 3 // 4])
        if min(scan.image.shape[:2]) >= 256:
            small = decode_bytes(data, target_size=128)[0].image
            assert min(small.shape[:2]) >= 128 and min(small.shape[:2]) < min(scan.image.shape[:2])
