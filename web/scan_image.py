"""A stored scan as a PNG for the scan page: DICOM in its own window, or a window/level the viewer picks.

The default picture is exactly what the decoder hands the models (training.decode: a DICOM's
WindowCenter/WindowWidth, else its 0.5-99.5 percentile range, which 16-bit and float PNG/TIFF
get too). A chosen window of a grayscale DICOM is applied to the rescaled stored values
(RescaleSlope/Intercept), and of a deep PNG/TIFF to its samples, not to the 8-bit picture, so
widening it shows detail the default window clipped; 8-bit images are windowed on 0-255.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from config.storage import blob_path
from training.decode import (DecodeError, decode_bytes, dicom_number, percentile_window, sniff_format,
                             window_to_uint8)


@dataclass(frozen=True)
class Picture:
    """One scan's pixels for display: grayscale DICOM values or an 8-bit RGB image, and its window."""

    values: np.ndarray  # float64, HxW (DICOM grayscale) or HxWx3 (anything else, 0..255)
    default_image: np.ndarray  # uint8 HxWx3: what the models saw before resizing
    center: float  # the default window
    width: float
    low: float  # the value range, for the page's sliders
    high: float
    invert: bool = False  # MONOCHROME1: low values are white
    source: str = ""  # "DICOM", "PNG, 16-bit", "JPEG", ... for the page
    stored_values: bool = False  # windowed in the file's own sample values, not 0-255

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.default_image.shape[1]), int(self.default_image.shape[0])


def load_picture(uploads_dir: Path, sha256: str, frame: int, max_pixels: int | None) -> Picture:
    """Decode a stored blob's frame; FileNotFoundError when the blob is gone, DecodeError when unreadable."""
    data = blob_path(uploads_dir, sha256).read_bytes()
    scans = decode_bytes(data, max_pixels=max_pixels)
    image = scans[frame].image if 0 <= frame < len(scans) else scans[0].image
    kind = sniff_format(data)
    # No known magic: decode_bytes read it as a DICOM without its preamble.
    invert = _gray_dicom(data, force=kind is None) if kind in (None, "dicom") else None
    if invert is not None:
        return _dicom_picture(data, frame, image, invert=invert)
    if kind in ("png", "tiff"):
        deep = _deep_picture(data, image, kind)
        if deep is not None:
            return deep
    values = image.astype(np.float64)
    return Picture(values=values, default_image=image, center=127.5, width=255.0, low=0.0, high=255.0,
                   source=(kind or "image").upper())


def _gray_dicom(data: bytes, force: bool) -> bool | None:
    """For a grayscale DICOM: whether it is MONOCHROME1 (inverted); None for anything else."""
    import pydicom  # noqa: PLC0415 - only when a DICOM is shown

    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=force)
    except Exception:  # not DICOM after all: decode_bytes already read it as something else
        return None
    if "Rows" not in ds or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    return photometric == "MONOCHROME1"


def _dicom_picture(data: bytes, frame: int, image: np.ndarray, invert: bool) -> Picture:
    import pydicom  # noqa: PLC0415

    # decode_bytes has already checked this file's size limits and that its pixels decode.
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    pixels = ds.pixel_array
    frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    if frames > 1:
        pixels = pixels[min(max(frame, 0), frames - 1)]
    slope = dicom_number(ds, frame, "PixelValueTransformationSequence", "RescaleSlope", 1.0)
    intercept = dicom_number(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept", 0.0)
    values = pixels.astype(np.float64) * slope + intercept
    low, high = float(values.min()), float(values.max())
    center = dicom_number(ds, frame, "FrameVOILUTSequence", "WindowCenter", None)
    width = dicom_number(ds, frame, "FrameVOILUTSequence", "WindowWidth", None)
    if center is None or width is None or width <= 0:
        p_low, p_high = percentile_window(values)
        center, width = (p_low + p_high) / 2.0, max(p_high - p_low, 1.0)
    return Picture(values=values, default_image=image, center=center, width=width, low=low,
                   high=max(high, low + 1.0), invert=invert, source="DICOM", stored_values=True)


def _deep_picture(data: bytes, image: np.ndarray, kind: str) -> Picture | None:
    """A 16-bit or float PNG/TIFF in its own sample values (the decoder windowed it by percentiles)."""
    raw = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype == np.uint8:
        return None
    if raw.ndim == 3:
        # gray + alpha, or BGR(A): drop alpha like the decoder, and show colour in RGB order
        raw = raw[..., 0] if raw.shape[2] == 2 else cv2.cvtColor(np.ascontiguousarray(raw[..., :3]), cv2.COLOR_BGR2RGB)
    values = raw.astype(np.float64)
    p_low, p_high = percentile_window(values)
    low, high = float(values.min()), float(values.max())
    return Picture(values=values, default_image=image, center=(p_low + p_high) / 2.0,
                   width=max(p_high - p_low, 1.0), low=low, high=max(high, low + 1.0),
                   source=f"{kind.upper()}, {'float' if raw.dtype.kind == 'f' else f'{raw.dtype.itemsize * 8}-bit'}",
                   stored_values=True)


def windowed(picture: Picture, center: float | None, width: float | None) -> np.ndarray:
    """uint8 pixels: the default picture when no window is given, else values mapped through it."""
    if center is None and width is None:
        return picture.default_image
    center = picture.center if center is None else center
    width = max(picture.width if width is None else width, 1e-6)
    out = window_to_uint8(picture.values, center, width)
    return 255 - out if picture.invert else out


def png_bytes(pixels: np.ndarray) -> bytes:
    """PNG of a uint8 grayscale (HxW) or RGB (HxWx3) array; grayscale when the channels agree."""
    if pixels.ndim == 3 and np.array_equal(pixels[..., 0], pixels[..., 1]) \
            and np.array_equal(pixels[..., 1], pixels[..., 2]):
        pixels = pixels[..., 0]
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:  # cv2 fails only on shapes it cannot write; the decoder never produces those
        raise DecodeError("could not encode the picture as PNG")
    return encoded.tobytes()
