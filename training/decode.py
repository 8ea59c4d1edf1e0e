"""Decode scan files (JPEG, PNG, BMP, TIFF, DICOM) into uint8 RGB arrays, refusing anything partial.

Every decoder here either returns the whole image or raises DecodeError with a
plain-English reason. OpenCV silently fills a truncated JPEG with gray and
decodes it "successfully", so the byte structure (JPEG EOI after the scan
data, PNG chunk lengths/CRCs/IEND, BMP declared size) is checked first.

One resampling chain: every format decodes at full size and, when target_size is given, is
resized to target_size x target_size by models.preprocess.resize_image (INTER_AREA when
shrinking), the engine's own resize. JPEGs used to be shrunk inside libjpeg first (DCT scaling,
IMREAD_REDUCED_COLOR_2/4/8): on 300 real slices of the shared folder the same pixels then came
out up to 114 grey levels apart (0.28 on average) from a PNG of them. Full decoding costs about
0.9 ms more per 512 px JPEG (0.6 vs 1.5 ms, one thread), under 3% of a scan's time at 128 px.

Pixel limit: a small file can declare a huge image (an 875 KB PNG of 30,000 x 30,000
zeros decodes to 2.7 GB, 5.2 GB peak RSS), so every format's declared size is read
from its header (JPEG SOF, PNG IHDR, BMP info header, TIFF first IFD, DICOM Rows x
Columns x NumberOfFrames and each compressed frame's own header) and checked against
max_pixels before any pixel is decoded. A deflated DICOM data set is inflated in
bounded chunks first, since pydicom inflates it whole before reading any attribute.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from models.preprocess import resize_image

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".dcm", ".dicom", ".bmp", ".tif", ".tiff",
)
"""File suffixes accepted as scans; a file with no suffix is also accepted (DICOM often has none)."""

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*")
# SOF markers carrying frame dimensions (C4 = DHT, C8 = JPG extension, CC = DAC are not SOFs;
# F7 is JPEG-LS's SOF55, same layout, found in compressed DICOM frames).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
# Robust display window when a DICOM carries no WindowCenter/WindowWidth.
_PERCENTILE_WINDOW = (0.5, 99.5)

DEFAULT_MAX_IMAGE_PIXELS = 36_000_000
"""Default pixel limit of decode_bytes, all frames together (the MAX_IMAGE_PIXELS setting's default)."""
# A deflated DICOM data set may inflate to this many bytes per allowed pixel (three 16-bit
# samples plus room for the other attributes) before pydicom is let to inflate it whole.
_DEFLATED_BYTES_PER_PIXEL = 8
_DEFLATED_SYNTAX = "1.2.840.10008.1.2.1.99"
_INFLATE_IN, _INFLATE_OUT = 64 * 1024, 1024 * 1024
# File meta elements whose explicit-VR length field is 4 bytes (after 2 reserved bytes).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                       b"UV"})
_TIFF_WIDTH, _TIFF_LENGTH = 256, 257
_J2K_SIZ = b"\xff\x4f\xff\x51"  # JPEG 2000 start of codestream + image and tile size marker


class DecodeError(ValueError):
    """A file that cannot be fully decoded; str(e) is a plain-English reason."""


@dataclass(frozen=True, eq=False)
class DecodedScan:
    """One decoded image (uint8 HxWx3 RGB) plus where it came from inside its file."""

    image: np.ndarray
    frame: int | None = None
    study_uid: str | None = None
    series_uid: str | None = None


def sniff_format(data: bytes) -> str | None:
    """Return "jpeg", "png", "bmp", "tiff", "dicom" from the leading bytes, or None."""
    # First: the standard lets a DICOM file's 128-byte preamble be a TIFF header (dual-format files).
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    return None


def decode_bytes(data: bytes, filename: str = "", target_size: int | None = None,
                 max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> list[DecodedScan]:
    """Decode one file's bytes into scans (one per DICOM frame); raise DecodeError if impossible.

    An image declaring more than `max_pixels` pixels (all frames together; None: no limit)
    is refused from its header, before any pixel is decoded. With `target_size`, each image
    comes back resized to target_size x target_size through the one resampling chain every
    format shares. Nothing but DecodeError escapes.
    """
    if not data:
        raise DecodeError("empty file")
    kind = sniff_format(data)
    try:
        scans = _decode(data, kind, max_pixels)
        if target_size:
            scans = [replace(scan, image=resize_image(scan.image, target_size)) for scan in scans]
        return scans
    except DecodeError:
        raise
    except MemoryError as exc:
        raise DecodeError("not enough memory to decode this image") from exc
    except Exception as exc:  # a decoder library failing in a way not foreseen below
        logger.warning("unexpected %s while decoding %r", type(exc).__name__, filename, exc_info=True)
        # Files of no known image format only get this far when pydicom read them as DICOM.
        raise DecodeError(f"corrupt {(kind or 'dicom').upper()} ({_short(exc)})") from exc


def decode_file(path: str | Path, target_size: int | None = None,
                max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> list[DecodedScan]:
    """Read a file and decode it with decode_bytes; unreadable files raise DecodeError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"cannot read file ({exc.strerror or exc})") from exc
    return decode_bytes(data, filename=path.name, target_size=target_size, max_pixels=max_pixels)


def check_pixel_limit(width: int, height: int, frames: int, max_pixels: int | None) -> None:
    """Raise DecodeError when width x height x frames exceeds max_pixels (None: no limit)."""
    total = width * height * frames
    if max_pixels is None or total <= max_pixels:
        return
    size = f"{width} x {height}" + (f" x {frames} frames" if frames != 1 else "")
    raise DecodeError(f"image too large: it declares {size} = {total:,} pixels, "
                      f"over the limit of {max_pixels:,} pixels")


def _decode(data: bytes, kind: str | None, max_pixels: int | None) -> list[DecodedScan]:
    """decode_bytes for non-empty data of a sniffed kind: check the declared size, then decode."""
    if kind == "jpeg":
        height, width = _check_jpeg(data)
        check_pixel_limit(width, height, 1, max_pixels)
        return [DecodedScan(_imdecode(data, cv2.IMREAD_COLOR, "JPEG"))]
    if kind == "png":
        _check_png(data, max_pixels)
        return [DecodedScan(_imdecode_deep(data, "PNG"))]
    if kind == "bmp":
        check_pixel_limit(*_bmp_size(data), 1, max_pixels)
        _check_bmp(data)
        return [DecodedScan(_imdecode(data, cv2.IMREAD_COLOR, "BMP"))]
    if kind == "tiff":
        # OpenCV decodes only the first page of a multi-page TIFF, so only its size counts.
        check_pixel_limit(*_tiff_size(data), 1, max_pixels)
        return [DecodedScan(_imdecode_deep(data, "TIFF"))]
    # DICOM without the 128-byte preamble + "DICM" is legal (old files); try it last.
    return _decode_dicom(data, has_magic=(kind == "dicom"), max_pixels=max_pixels)


def _check_jpeg(data: bytes) -> tuple[int, int]:
    """Walk the JPEG header to its first scan; return (height, width) or raise on truncation."""
    height, width, pos = _jpeg_header(data)
    # Entropy-coded data stuffs every 0xFF as FF 00, so FF D9 after the first scan can
    # only be the real end-of-image marker; trailing junk after it is tolerated.
    if data.rfind(b"\xff\xd9") < pos:
        raise DecodeError("truncated JPEG (no end-of-image marker)")
    return height, width


def _jpeg_header(data: bytes) -> tuple[int, int, int]:
    """(height, width, offset of the first scan's header) from a JPEG's markers; raise on damage."""
    pos, size = 2, len(data)
    height = width = None
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes.
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            raise DecodeError("truncated JPEG (ends inside the header)")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            raise DecodeError("JPEG has no image data")
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue  # standalone markers carry no length
        if pos + 2 > size:
            raise DecodeError("truncated JPEG (ends inside the header)")
        (length,) = struct.unpack(">H", data[pos:pos + 2])
        if length < 2 or pos + length > size:
            raise DecodeError("truncated JPEG (ends inside the header)")
        if marker in _SOF_MARKERS:
            if length < 7:
                raise DecodeError("corrupt JPEG (bad frame header)")
            height, width = struct.unpack(">HH", data[pos + 3:pos + 7])
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        pos += length
    if height is None or width is None:
        raise DecodeError("corrupt JPEG (no frame header)")
    if height == 0 or width == 0:
        raise DecodeError("zero-sized image")
    return height, width, pos


def _check_png(data: bytes, max_pixels: int | None) -> None:
    """Walk PNG chunks verifying the header's size, lengths and CRCs up to IEND; raise on damage."""
    pos, size, first = 8, len(data), True
    while True:
        if pos + 8 > size:
            raise DecodeError("truncated PNG")
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 8 + length + 4
        if end > size:
            raise DecodeError("truncated PNG")
        body = data[pos + 4:pos + 8 + length]  # chunk type + data, what the CRC covers
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(body) & 0xFFFFFFFF != crc:
            raise DecodeError(f"corrupt PNG (bad checksum in {ctype.decode('latin-1')} chunk)")
        if first:
            if ctype != b"IHDR" or length < 8:
                raise DecodeError("corrupt PNG (missing header)")
            width, height = struct.unpack(">II", data[pos + 8:pos + 16])
            if width == 0 or height == 0:
                raise DecodeError("zero-sized image")
            check_pixel_limit(width, height, 1, max_pixels)
            first = False
        if ctype == b"IEND":
            return
        pos = end


def _check_bmp(data: bytes) -> None:
    """Refuse a BMP shorter than the size its header declares."""
    (declared,) = struct.unpack("<I", data[2:6])
    if declared and len(data) < declared:
        raise DecodeError("truncated BMP")


def _bmp_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a BMP's info header (sniff_format guarantees 26 bytes)."""
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 core header: unsigned 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    else:  # a negative height means rows stored top-down
        width, height = struct.unpack_from("<ii", data, 18)
    if width < 0:
        raise DecodeError("corrupt BMP (negative width)")
    if width == 0 or height == 0:
        raise DecodeError("zero-sized image")
    return width, abs(height)


def _tiff_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a TIFF's first page, read from its first image file directory."""
    order = "<" if data[:2] == b"II" else ">"
    sizes: dict[int, int] = {}
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, n = struct.unpack_from(order + "HHI", data, entry)
            if tag in (_TIFF_WIDTH, _TIFF_LENGTH) and n == 1 and kind in (3, 4):  # SHORT or LONG
                (sizes[tag],) = struct.unpack_from(order + ("H" if kind == 3 else "I"), data, entry + 8)
    except struct.error:
        raise DecodeError("truncated TIFF (ends inside the header)") from None
    if _TIFF_WIDTH not in sizes or _TIFF_LENGTH not in sizes:
        raise DecodeError("corrupt TIFF (no image size in its header)")
    if sizes[_TIFF_WIDTH] == 0 or sizes[_TIFF_LENGTH] == 0:
        raise DecodeError("zero-sized image")
    return sizes[_TIFF_WIDTH], sizes[_TIFF_LENGTH]


def _imdecode(data: bytes, flag: int, kind: str) -> np.ndarray:
    """Decode with OpenCV into an RGB uint8 array; None or an empty result raises DecodeError."""
    bgr = _imdecode_raw(data, flag, kind)
    if bgr.dtype != np.uint8:  # IMREAD_COLOR already converts to 8 bit; guard anyway
        bgr = cv2.convertScaleAbs(bgr, alpha=255.0 / max(float(bgr.max()), 1.0))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _imdecode_raw(data: bytes, flag: int, kind: str) -> np.ndarray:
    """cv2.imdecode with `flag`; None, an OpenCV error or an empty result raises DecodeError."""
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buf, flag)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE" in (exc.err or ""):  # OpenCV's own size limits
            raise DecodeError(f"image too large for the {kind} decoder ({exc.err})") from exc
        raise DecodeError(f"corrupt {kind} ({exc.err or 'decoder error'})") from exc
    if bgr is None:
        raise DecodeError(f"corrupt {kind} (decoder could not read it)")
    if bgr.size == 0:
        raise DecodeError("zero-sized image")
    return bgr


def _imdecode_deep(data: bytes, kind: str) -> np.ndarray:
    """Decode a PNG or TIFF keeping its depth; 16-bit and float images are windowed like DICOM.

    IMREAD_COLOR would shift 16-bit samples right by 8 bits, so a 12-bit image stored in 16
    bits (values up to 4,095) came out nearly black (0-15) and was classified anyway.
    """
    image = _imdecode_raw(data, cv2.IMREAD_UNCHANGED, kind)
    if image.ndim == 3 and image.shape[2] == 2:  # gray + alpha
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[2] == 4:  # BGRA: drop alpha, as IMREAD_COLOR does
        image = image[..., :3]
    elif image.ndim == 3 and image.shape[2] != 3:
        raise DecodeError(f"unsupported {kind} with {image.shape[2]} channels")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_:
            raise DecodeError(f"unsupported {kind} sample type {image.dtype}")
        image = window_to_uint8(image.astype(np.float64), None, None)
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    """(low, high) of the display window used when a file names none: the 0.5-99.5 percentiles."""
    low, high = np.percentile(values, _PERCENTILE_WINDOW)
    return float(low), float(high)


def window_to_uint8(values: np.ndarray, center: float | None, width: float | None) -> np.ndarray:
    """Map values through a display window to uint8; without one, the 0.5-99.5 percentile range.

    Shared by DICOM (whose window comes from the file) and deep PNG/TIFF (which carry none),
    so a 16-bit image looks the same whichever of those formats it arrives in.
    """
    if not np.isfinite(values).all():
        raise DecodeError("image holds NaN or infinite samples")
    if center is not None and width is not None and width > 0:
        low, high = center - width / 2.0, center + width / 2.0
    else:
        low, high = percentile_window(values)
    if high <= low:  # a flat frame: keep it flat rather than dividing by zero
        high = low + 1.0
    scaled = np.clip((values - low) * (255.0 / (high - low)), 0.0, 255.0)
    return np.rint(scaled).astype(np.uint8)


def _decode_dicom(data: bytes, has_magic: bool, max_pixels: int | None) -> list[DecodedScan]:
    """Decode a DICOM file into one display-ready RGB scan per frame."""
    import pydicom  # noqa: PLC0415 - heavy import, only paid when a DICOM shows up
    from pydicom.errors import InvalidDicomError  # noqa: PLC0415

    _check_deflated_size(data, 132 if has_magic else 0, max_pixels)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_magic)
    except InvalidDicomError as exc:
        raise DecodeError("not an image (unrecognised format)") from exc
    except Exception as exc:  # pydicom raises many types on damaged input
        if not has_magic:
            raise DecodeError("not an image (unrecognised format)") from exc
        raise DecodeError(f"corrupt DICOM ({_short(exc)})") from exc
    looks_dicom = has_magic or bool(getattr(ds, "file_meta", None)) or any(
        tag in ds for tag in ("SOPClassUID", "Modality", "StudyInstanceUID", "Rows")
    )
    if not looks_dicom:
        raise DecodeError("not an image (unrecognised format)")
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DecodeError("DICOM file has no pixel data")
    rows, columns, frames = _dicom_int(ds, "Rows", 0), _dicom_int(ds, "Columns", 0), \
        max(_dicom_int(ds, "NumberOfFrames", 1), 1)
    if rows == 0 or columns == 0:
        raise DecodeError("zero-sized image")
    check_pixel_limit(columns, rows, frames, max_pixels)
    _ensure_transfer_syntax(ds)
    _check_compressed_frames(ds, rows, columns, frames)
    try:
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        failed = _plugin_failures(exc)
        if failed:  # a decoder exists and refused this data (damaged, or past its own size limit)
            raise DecodeError(f"corrupt DICOM (compressed pixel data: {failed})") from exc
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax or "an unknown transfer syntax")
        reason = f"DICOM pixel data uses {name}, which cannot be decoded here ({_short(exc)})"
        raise DecodeError(reason) from exc
    except Exception as exc:  # short pixel data, bad attributes, ...
        raise DecodeError(f"corrupt DICOM ({_short(exc)})") from exc

    samples = _dicom_int(ds, "SamplesPerPixel", 1)
    if frames == 1:
        pixels = pixels[None]
    expected_ndim = 4 if samples > 1 else 3
    if pixels.ndim != expected_ndim or pixels.shape[0] != frames or pixels.size == 0:
        raise DecodeError(f"corrupt DICOM (pixel array shape {pixels.shape} does not match its header)")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    study = _uid(ds, "StudyInstanceUID")
    series = _uid(ds, "SeriesInstanceUID")
    scans = []
    for index in range(frames):
        if samples > 1 or photometric == "PALETTE COLOR":
            image = _dicom_color(ds, pixels[index], photometric)
        else:
            gray = _dicom_gray(ds, pixels[index], index, photometric == "MONOCHROME1")
            image = np.repeat(gray[:, :, None], 3, axis=2)
        scans.append(DecodedScan(image, index if frames > 1 else None, study, series))
    return scans


def _plugin_failures(exc: BaseException) -> str:
    """The decoders' own reasons when pydicom says every available plugin raised; '' otherwise."""
    first, *rest = str(exc).splitlines() or [""]
    if "raised by all available plugins" not in first:
        return ""
    return "; ".join(line.strip() for line in rest if line.strip())[:160] or "decoder error"


def _dicom_int(ds, keyword: str, default: int) -> int:
    """A non-negative integer attribute (Rows, NumberOfFrames, ...); a malformed one is a DecodeError."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DecodeError(f"corrupt DICOM ({keyword} is {str(value)[:40]!r})") from None
    if number < 0:
        raise DecodeError(f"corrupt DICOM ({keyword} is {number})")
    return number


def _check_deflated_size(data: bytes, start: int, max_pixels: int | None) -> None:
    """Refuse a deflated data set that inflates past what max_pixels can need, inflating in chunks.

    pydicom inflates a Deflated Explicit VR Little Endian data set in one call, so a 2 MB
    file could become gigabytes before any attribute is read.
    """
    syntax, dataset_start = _file_meta_syntax(data, start)
    if max_pixels is None or syntax != _DEFLATED_SYNTAX:
        return
    limit = max_pixels * _DEFLATED_BYTES_PER_PIXEL
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view, total = memoryview(data), 0
    try:
        for offset in range(dataset_start, len(data), _INFLATE_IN):
            pending: bytes | memoryview = view[offset:offset + _INFLATE_IN]
            while pending and not inflater.eof:
                total += len(inflater.decompress(pending, _INFLATE_OUT))
                if total > limit:
                    raise DecodeError(f"deflated DICOM data set inflates past {limit:,} bytes, more than "
                                      f"an image within the limit of {max_pixels:,} pixels needs")
                pending = inflater.unconsumed_tail
            if inflater.eof:
                return
    except zlib.error as exc:
        raise DecodeError(f"corrupt DICOM (deflated data set: {exc})") from None


def _file_meta_syntax(data: bytes, pos: int) -> tuple[str | None, int]:
    """(TransferSyntaxUID, end offset) of the file meta group (0002) starting at pos, if any."""
    syntax = None
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        if data[pos + 4:pos + 6] in _LONG_VRS:
            if pos + 12 > len(data):
                break
            (length,) = struct.unpack_from("<I", data, pos + 8)
            value_at = pos + 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            value_at = pos + 8
        if element == 0x0010:
            syntax = data[value_at:value_at + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = value_at + length
    return syntax, pos


def _check_compressed_frames(ds, rows: int, columns: int, frames: int) -> None:
    """Refuse compressed frames whose own header declares another size than Rows x Columns.

    The JPEG and JPEG 2000 decoders size their output from the codestream, not from
    the DICOM header, so a small Rows x Columns could otherwise hide a huge frame.
    """
    from pydicom.encaps import generate_frames  # noqa: PLC0415

    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None or not syntax.is_transfer_syntax or not syntax.is_encapsulated or "PixelData" not in ds:
        return  # an unknown syntax is refused by pydicom with its name
    try:
        for index, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            if index >= frames:
                break
            size = _codestream_size(frame)
            if size is not None and size != (columns, rows):
                raise DecodeError(f"corrupt DICOM (frame {index + 1} is {size[0]} x {size[1]} pixels, "
                                  f"its header says {columns} x {rows})")
    except DecodeError:
        raise
    except Exception as exc:  # pydicom's fragment parser on damaged data
        raise DecodeError(f"corrupt DICOM ({_short(exc)})") from exc


def _codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a JPEG or JPEG 2000 codestream; None for other encodings."""
    if frame.startswith(b"\xff\xd8"):
        try:
            height, width, _ = _jpeg_header(frame)
        except DecodeError as exc:
            raise DecodeError(f"corrupt DICOM (compressed frame: {exc})") from None
        return width, height
    at = frame.find(_J2K_SIZ, 0, 4096)  # a raw codestream, or one inside a JP2 wrapper
    if at >= 0 and at + 24 <= len(frame):
        x_size, y_size, x_origin, y_origin = struct.unpack_from(">IIII", frame, at + 8)
        return x_size - x_origin, y_size - y_origin
    return None


def _ensure_transfer_syntax(ds) -> None:
    """Give a preamble-less (raw) dataset the transfer syntax it was actually read with."""
    from pydicom.dataset import FileMetaDataset  # noqa: PLC0415
    from pydicom.uid import (  # noqa: PLC0415
        ExplicitVRBigEndian,
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    )

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _dicom_gray(ds, frame: np.ndarray, index: int, invert: bool) -> np.ndarray:
    """Rescale (slope/intercept), window and scale one grayscale frame to uint8."""
    slope = dicom_number(ds, index, "PixelValueTransformationSequence", "RescaleSlope", 1.0)
    intercept = dicom_number(ds, index, "PixelValueTransformationSequence", "RescaleIntercept", 0.0)
    values = frame.astype(np.float64) * slope + intercept
    center = dicom_number(ds, index, "FrameVOILUTSequence", "WindowCenter", None)
    width = dicom_number(ds, index, "FrameVOILUTSequence", "WindowWidth", None)
    gray = window_to_uint8(values, center, width)
    # MONOCHROME1 means the lowest value is displayed white.
    return 255 - gray if invert else gray


def _dicom_color(ds, frame: np.ndarray, photometric: str) -> np.ndarray:
    """Turn an RGB (or palette) DICOM frame into uint8 RGB."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut  # noqa: PLC0415

        frame = apply_color_lut(frame, ds)
        bits = 16 if frame.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored", 8) or 8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise DecodeError(f"corrupt DICOM (colour frame has shape {frame.shape})")
    if frame.dtype == np.uint8 and bits <= 8:
        return np.ascontiguousarray(frame)
    top = float(2 ** bits - 1)
    return np.rint(np.clip(frame.astype(np.float64) * (255.0 / top), 0, 255)).astype(np.uint8)


def dicom_number(ds, index: int, group: str, keyword: str, default: float | None) -> float | None:
    """A numeric attribute of frame `index`: the top level, else the per-frame or shared functional
    group; the first of several values; `default` when absent, not a number or not finite."""
    value = ds.get(keyword)
    if value is None:
        places = (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0))
        for container, item in places:
            seq = ds.get(container)
            if seq is not None and len(seq) > item and group in seq[item] and len(seq[item][group]) > 0:
                value = seq[item][group][0].get(keyword)
                if value is not None:
                    break
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return default
        value = value[0]  # several windows offered: the first is the primary one
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    # NaN or infinity would turn the whole frame into garbage: treat it as absent, like text.
    return number if math.isfinite(number) else default


def _uid(ds, keyword: str) -> str | None:
    """A UID attribute as a plain string, or None when absent/empty."""
    value = ds.get(keyword)
    return str(value) if value else None


def _short(exc: BaseException) -> str:
    """A one-line, length-capped description of an exception for user-facing reasons."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
