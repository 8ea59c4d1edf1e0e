"""Hostile and malformed inputs for the upload path and the decoders, generated in memory.

Nothing here is a committed binary: every file is built by code, most by hand with
struct and zlib so the bytes say exactly what is being tested. `corpus()` lists the
inputs with what the service must do with each: refuse the request with a 4xx JSON
error, or turn it into scans that the worker either classifies or fails with a reason.
"""
from __future__ import annotations

import io
import json
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
BLOCK = 1 << 20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# --------------------------------------------------------------------------- images


def gray_image(seed: int = 0, size: int = 40) -> np.ndarray:
    """A random uint8 RGB image whose three channels are equal (an MRI-like slice)."""
    gray = np.random.default_rng(seed).integers(0, 255, size=(size, size), dtype=np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def png_bytes(seed: int = 0, size: int = 40) -> bytes:
    """A small valid PNG."""
    import cv2

    ok, data = cv2.imencode(".png", gray_image(seed, size))
    assert ok
    return data.tobytes()


def jpeg_bytes(seed: int = 0, size: int = 40, channels: int = 3) -> bytes:
    """A small valid baseline JPEG (one channel or three)."""
    import cv2

    image = gray_image(seed, size)
    ok, data = cv2.imencode(".jpg", image[:, :, 0] if channels == 1 else image)
    assert ok
    return data.tobytes()


def deflate_zeros(count: int, prefix: bytes = b"", zlib_wrapper: bool = False) -> bytes:
    """A deflate stream of `prefix` then `count` zero bytes, built without compressing them all.

    After a sync flush the compressor's window holds only zeros, so the block that
    encodes the next MiB of zeros decodes the same wherever it is repeated: a 1 GiB
    stream costs 1024 copies of a ~1 KB block instead of a gigabyte of compression.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = min(count, BLOCK)
    parts = [comp.compress(prefix + bytes(first)), comp.flush(zlib.Z_SYNC_FLUSH)]
    left = count - first
    if left >= BLOCK:  # the window is all zeros now (first >= 32 KiB)
        repeats, left = divmod(left, BLOCK)
        parts.append((comp.compress(bytes(BLOCK)) + comp.flush(zlib.Z_SYNC_FLUSH)) * repeats)
    parts.append(comp.compress(bytes(left)) + comp.flush())
    raw = b"".join(parts)
    if not zlib_wrapper:
        return raw
    # Adler-32 over zeros: the low sum stays, the high sum grows by it once per byte.
    checksum = zlib.adler32(prefix)
    low, high = checksum & 0xFFFF, checksum >> 16
    high = (high + count * low) % 65521
    return b"\x78\xda" + raw + struct.pack(">I", (high << 16) | low)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def png_declaring(width: int, height: int, complete: bool = False) -> bytes:
    """An 8-bit grayscale PNG whose header says width x height.

    complete=False: a small IDAT (two rows) after the header, as a bomb's first bytes;
    complete=True: every row present (all zeros), a real decompression bomb.
    """
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    rows = height if complete else min(height, 2)
    idat = deflate_zeros(rows * (width + 1), zlib_wrapper=True)
    return PNG_MAGIC + header + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A valid 16 x 16 JPEG whose frame header (SOF0) is patched to say width x height."""
    data = bytearray(jpeg_bytes(size=16))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP whose header says width x height: complete when small, 64 bytes of pixels when not."""
    row = (width * 3 + 3) // 4 * 4
    pixels = bytes(row * height) if row * height <= BLOCK else bytes(64)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    size = 14 + len(info) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + pixels


def tiff_declaring(width: int, height: int, strip: bytes = b"\0" * 64) -> bytes:
    """A little-endian 8-bit grayscale TIFF whose first directory says width x height."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    data_at = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_at if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip


def tiff_bytes(seed: int = 0, size: int = 24) -> bytes:
    """A small valid TIFF."""
    import cv2

    ok, data = cv2.imencode(".tif", gray_image(seed, size))
    assert ok
    return data.tobytes()


# --------------------------------------------------------------------------- DICOM


def dicom_bytes(pixels: np.ndarray | None = None, *, photometric: str = "MONOCHROME2", frames: int = 1,
                syntax: str = "1.2.840.10008.1.2.1", encapsulated: list[bytes] | None = None,
                rows: int | None = None, columns: int | None = None, study: str = "1.2.826.0.1.9.1",
                **attrs: object) -> bytes:
    """A DICOM file (with preamble) built with pydicom; rows/columns override what the pixels say."""
    with warnings.catch_warnings():  # pydicom warns about the deliberately invalid values
        warnings.simplefilter("ignore")
        return _dicom_bytes(pixels, photometric, frames, syntax, encapsulated, rows, columns, study, attrs)


def _dicom_bytes(pixels: np.ndarray | None, photometric: str, frames: int, syntax: str,
                 encapsulated: list[bytes] | None, rows: int | None, columns: int | None, study: str,
                 attrs: dict[str, object]) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = MR_IMAGE_STORAGE, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, generate_uid(), "MR"
    if pixels is not None or encapsulated is not None:
        shape = pixels.shape[-2:] if pixels is not None else (16, 16)
        ds.Rows = shape[0] if rows is None else rows
        ds.Columns = shape[1] if columns is None else columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        bits = pixels.dtype.itemsize * 8 if pixels is not None else 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
        ds.PixelRepresentation = 0
        if frames > 1:
            ds.NumberOfFrames = frames
    if encapsulated is not None:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate(encapsulated)
        ds["PixelData"].VR = "OB"
    elif pixels is not None:
        ds.PixelData = pixels.tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return out.getvalue()


def ramp16(size: int = 32, frames: int = 1) -> np.ndarray:
    """A 16-bit (12 bits used) ramp, one (size, size) slice per frame."""
    values = np.linspace(0, 4000, frames * size * size).astype(np.uint16)
    return values.reshape((frames, size, size) if frames > 1 else (size, size))


def deflated_dicom_bomb(inflated: int, study: str = "1.2.826.0.1.9.77") -> bytes:
    """A Deflated Explicit VR Little Endian DICOM whose data set inflates to about `inflated` bytes.

    The data set is a small MR header followed by one private OB element of zeros.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MR_IMAGE_STORAGE, generate_uid()
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    ds = Dataset()
    ds.SOPClassUID, ds.StudyInstanceUID, ds.Modality = MR_IMAGE_STORAGE, study, "MR"
    ds.Rows = ds.Columns = 16
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    blob = struct.pack("<HH2sHI", 0x0011, 0x1010, b"OB", 0, inflated)  # (0011,1010) OB, 4-byte length
    return head.getvalue() + deflate_zeros(inflated, prefix=body.getvalue() + blob)


# --------------------------------------------------------------------------- zips


def zip_bytes(members: list[tuple[str | zipfile.ZipInfo, bytes]],
              compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of (name or ZipInfo, content) members."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return out.getvalue()


def symlink_member(name: str, target: str = "/etc/passwd") -> tuple[zipfile.ZipInfo, bytes]:
    """A zip member that unzip would create as a symbolic link (unix mode in external_attr)."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def zip_with_lying_size(real: int = 4 * BLOCK, declared: int = 1000) -> bytes:
    """A zip whose member expands to `real` bytes but whose headers declare `declared`."""
    data = bytearray(zip_bytes([("s/lie.png", bytes(real))]))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size fields
        at = data.find(signature)
        struct.pack_into("<I", data, at + offset, declared)
    return bytes(data)


def zip_with_raw_name(raw_name: bytes, utf8_flag: bool = True) -> bytes:
    """A zip with one member whose name bytes are `raw_name` (same length as the placeholder)."""
    placeholder = "n" * len(raw_name)
    data = bytearray(zip_bytes([(f"{placeholder}", png_bytes(3))]))
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        (flags,) = struct.unpack_from("<H", data, at + flag_at)
        struct.pack_into("<H", data, at + flag_at, flags | 0x800 if utf8_flag else flags)
    return bytes(data).replace(placeholder.encode(), raw_name)


def encrypted_zip() -> bytes:
    """A zip whose only member has the 'encrypted' flag set."""
    data = bytearray(zip_bytes([("s/a.png", png_bytes(4))], compression=zipfile.ZIP_STORED))
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        struct.pack_into("<H", data, at + flag_at, 0x1)
    return bytes(data)


def folder_entries_zip(folders: int) -> bytes:
    """A zip of one scan and `folders` empty folder entries (a cheap central-directory bomb)."""
    return zip_bytes([*((zipfile.ZipInfo(f"d{i}/"), b"") for i in range(folders)), ("s/a.png", png_bytes(5))],
                     compression=zipfile.ZIP_STORED)


# --------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class BadInput:
    """One hostile upload: its files, and either the refusal of the request or each scan's outcome.

    refused: (status, error code) of the whole request; otherwise every scan made from it
    ends failed with `reason` in its error (lowercase match) or, with reason None, classified.
    """

    name: str
    files: tuple[tuple[str, bytes], ...]
    refused: tuple[int, str] | None = None
    reason: str | None = None

    @property
    def classified(self) -> bool:
        """True when every scan of this input must be classified."""
        return self.refused is None and self.reason is None


def _one(name: str, path: str, content: bytes, **kwargs) -> BadInput:
    return BadInput(name, ((path, content),), **kwargs)


def _zip(name: str, members: list, **kwargs) -> BadInput:
    return _one(name, f"{name}.zip", zip_bytes(members), **kwargs)


TOO_LARGE = "image too large"


def corpus() -> list[BadInput]:
    """At least 30 malformed or hostile inputs, each with what the service must do with it."""
    jpeg, png = jpeg_bytes(11), png_bytes(12)
    return [
        # --- files that become scans and fail with a reason
        _one("truncated-jpeg", "t/half.jpg", jpeg[: len(jpeg) // 2], reason="truncated jpeg"),
        _one("jpeg-header-only", "t/head.jpg", jpeg[:40], reason="truncated jpeg"),
        _one("truncated-png", "t/half.png", png[: len(png) // 2], reason="truncated png"),
        _one("png-bad-crc", "t/crc.png", png[:30] + bytes([png[30] ^ 0xFF]) + png[31:], reason="corrupt png"),
        _one("zero-bytes", "t/empty.jpg", b"", reason="empty file"),
        _one("text-named-jpg", "t/notes.jpg", b"a text file, not a scan\n" * 8, reason="not an image"),
        _one("html-named-png", "t/page.png", b"<html><body>hello</body></html>", reason="not an image"),
        _one("gif", "t/anim.gif", b"GIF89a" + bytes(40), reason="not an image"),
        _one("random-bytes", "t/noise.dcm", bytes(np.random.default_rng(7).integers(0, 256, 3000, np.uint8)),
             reason="not an image"),
        _one("png-bomb-40k", "bomb/png40k.png", png_declaring(40_000, 40_000), reason=TOO_LARGE),
        _one("png-bomb-complete", "bomb/png12k.png", png_declaring(12_000, 12_000, complete=True),
             reason=TOO_LARGE),
        _one("jpeg-bomb", "bomb/big.jpg", jpeg_declaring(30_000, 30_000), reason=TOO_LARGE),
        _one("bmp-bomb", "bomb/big.bmp", bmp_declaring(40_000, 40_000), reason=TOO_LARGE),
        _one("tiff-bomb", "bomb/big.tif", tiff_declaring(40_000, 40_000), reason=TOO_LARGE),
        _one("dicom-pixel-bomb", "bomb/big.dcm", dicom_bytes(ramp16(16), rows=20_000, columns=20_000),
             reason=TOO_LARGE),
        _one("dicom-frames-bomb", "bomb/frames.dcm",
             dicom_bytes(ramp16(16, frames=30), frames=30, rows=2_000, columns=2_000), reason=TOO_LARGE),
        _one("dicom-lying-jpeg-frame", "bomb/lying.dcm",
             dicom_bytes(encapsulated=[jpeg_declaring(30_000, 30_000)], syntax=JPEG_BASELINE,
                         rows=16, columns=16), reason="frame 1 is 30000 x 30000"),
        _one("dicom-deflate-bomb", "bomb/deflated.dcm", deflated_dicom_bomb(1 << 30), reason="inflates past"),
        _one("dicom-no-pixels", "d/nopixels.dcm", dicom_bytes(None), reason="no pixel data"),
        _one("dicom-unsupported-syntax", "d/mpeg.dcm",
             dicom_bytes(encapsulated=[b"\x00\x00\x01\xb3" + bytes(60)], syntax="1.2.840.10008.1.2.4.100"),
             reason="cannot be decoded here"),
        _one("dicom-truncated", "d/cut.dcm", dicom_bytes(ramp16(32))[:-300], reason="corrupt dicom"),
        _one("dicom-zero-rows", "d/zero.dcm", dicom_bytes(ramp16(16), rows=0), reason="zero-sized"),
        _one("dicom-short-pixels", "d/short.dcm", dicom_bytes(ramp16(16), rows=64, columns=64),
             reason="corrupt dicom"),
        # --- valid but unusual files: classified
        _one("dicom-16-bit", "good/16bit.dcm", dicom_bytes(ramp16(32))),
        _one("dicom-monochrome1", "good/mono1.dcm", dicom_bytes(ramp16(32), photometric="MONOCHROME1")),
        _one("dicom-multi-frame", "good/multi.dcm", dicom_bytes(ramp16(24, frames=3), frames=3)),
        _one("tiff", "good/scan.tif", tiff_bytes(13)),
        _one("dicom-study-uid-with-nul", "good/nul-study.dcm",
             dicom_bytes(ramp16(16), study="1.2.3\x00\x01.4")),
        # --- names: stored capped and clean, never a database error
        _one("name-1000-chars", "n" * 1500 + ".png", png_bytes(14)),
        _one("folder-600-chars", "f" * 600 + "/scan.png", png_bytes(15)),
        _one("name-unicode", "Ünïcödé/扫描/😀 scan\u202egnp.png", png_bytes(16)),
        _one("name-control-chars", "ctl/a\tb\x01c\x7f.png", png_bytes(17)),
        _one("name-only-dots", "../../..", png_bytes(18)),
        _one("name-traversal", "../../../../etc/cron.d/evil.png", png_bytes(19)),
        _one("name-windows", "C:\\Users\\x\\..\\..\\scan.png", png_bytes(20)),
        _one("zip-long-names", "p" * 900 + "/pack.zip", zip_bytes([("m" * 900 + ".png", png_bytes(21))])),
        _zip("zip-unicode-names", [("Ωmega/scan ✓.png", png_bytes(22)), ("日本/画像.png", png_bytes(23))]),
        _zip("zip-empty-member", [("z/empty.png", b"")], reason="empty file"),
        _zip("zip-text-member", [("z/text.jpg", b"plain text in a zip\n")], reason="not an image"),
        # --- requests refused as a whole
        _zip("zip-slip-parent", [("ok/a.png", png), ("../escape.png", png)], refused=(400, "unsafe_zip")),
        _zip("zip-slip-deep", [("a/../../escape.png", png)], refused=(400, "unsafe_zip")),
        _zip("zip-slip-absolute", [("/tmp/escape.png", png)], refused=(400, "unsafe_zip")),
        _zip("zip-slip-drive", [("C:/escape.png", png)], refused=(400, "unsafe_zip")),
        _zip("zip-symlink", [("ok/a.png", png), symlink_member("ok/link.png")], refused=(400, "unsafe_zip")),
        _zip("zip-bomb", [("ok/a.png", png), ("ok/bomb.dcm", bytes(8 * BLOCK))], refused=(413, "zip_bomb")),
        _one("zip-lying-size", "lie.zip", zip_with_lying_size(), refused=(400, "bad_zip")),
        _zip("zip-nested", [("ok/a.png", png), ("ok/inner.zip", zip_bytes([("x.png", png)]))],
             refused=(400, "nested_zip")),
        _one("zip-folder-entries", "dirs.zip", folder_entries_zip(200), refused=(413, "zip_too_many_files")),
        _one("zip-encrypted", "enc.zip", encrypted_zip(), refused=(400, "bad_zip")),
        _one("zip-invalid-utf8-name", "utf.zip", zip_with_raw_name(b"\xff\xfe\xfd.png"),
             refused=(400, "bad_zip")),
        _one("zip-not-a-zip", "fake.zip", b"PK\x03\x04" + bytes(100), refused=(400, "bad_zip")),
        _one("zip-empty", "empty.zip", zip_bytes([]), refused=(400, "no_files")),
        _zip("zip-only-litter", [("__MACOSX/._a.png", b"x"), (".DS_Store", b"x")], refused=(400, "no_files")),
    ]


# --------------------------------------------------------------------------- measuring


MEASURED = """
import json, resource, sys
sys.path.insert(0, {root!r})


def peak_mb():
    # VmHWM belongs to this process image; ru_maxrss also counts the parent's RSS before exec.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


{code}
print(json.dumps({{"result": result, "peak_mb": peak_mb()}}))
"""

DECODE = """
import importlib.util, time
if sys.argv[1] == "-":
    import training.decode as decode
else:  # another version of the module, e.g. one taken from an older commit with git show
    spec = importlib.util.spec_from_file_location("decode_under_test", sys.argv[1])
    decode = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = decode
    spec.loader.exec_module(decode)
result = {"outcomes": [], "seconds": []}
for path in sys.argv[2:]:
    data = open(path, "rb").read()
    started = time.perf_counter()
    try:
        shape = decode.decode_bytes(data, path, target_size=128)[0].image.shape
        result["outcomes"].append("decoded %d x %d" % (shape[1], shape[0]))
    except decode.DecodeError as exc:
        result["outcomes"].append("DecodeError: %s" % exc)
    result["seconds"].append(time.perf_counter() - started)
    del data
"""


def python_in_subprocess(code: str, *args: object, timeout: float = 120.0) -> dict:
    """Run `code` (which sets `result`) in a fresh Python; return {'result': ..., 'peak_mb': peak RSS}."""
    script = MEASURED.format(root=str(REPO_ROOT), code=code)
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_in_subprocess(paths: list[Path], decoder: Path | None = None) -> dict:
    """decode_bytes(target_size=128) each file in a fresh process (training.decode, or the module at
    `decoder`): {'result': {'outcomes': [...], 'seconds': [...]}, 'peak_mb': peak RSS of the process}."""
    return python_in_subprocess(DECODE, decoder or "-", *paths, timeout=600.0)


def bombs() -> dict[str, bytes]:
    """The decompression bombs measured for the README: small files declaring huge images."""
    return {
        "PNG 30,000 x 30,000 (every row)": png_declaring(30_000, 30_000, complete=True),
        "JPEG declaring 16,000 x 16,000": jpeg_declaring(16_000, 16_000),
        "DICOM, deflated data set of 1 GiB": deflated_dicom_bomb(1 << 30),
        "DICOM 16 x 16 holding a 12,000 x 12,000 JPEG": dicom_bytes(
            encapsulated=[jpeg_declaring(12_000, 12_000)], syntax=JPEG_BASELINE, rows=16, columns=16),
    }


def main(argv: list[str] | None = None) -> None:
    """Print, per bomb, file size, decode time and peak RSS of one decode in a fresh process."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python -m tests.helpers.bad_inputs", description=main.__doc__)
    parser.add_argument("--decoder", type=Path, help="a training/decode.py to measure instead of this one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        for name, data in bombs().items():
            path = Path(folder) / "bomb"
            path.write_bytes(data)
            measured = decode_in_subprocess([path], args.decoder)
            outcome, seconds = measured["result"]["outcomes"][0], measured["result"]["seconds"][0]
            print(f"{name}: {len(data):,} bytes, {seconds:.6f} s, peak RSS {measured['peak_mb']:,.0f} MB; "
                  f"{outcome[:110]}")


if __name__ == "__main__":
    main()
