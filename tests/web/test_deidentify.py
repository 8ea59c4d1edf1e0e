"""DICOM de-identification: the basic profile's elements go, UIDs are salted and stable, pixels stay."""
from __future__ import annotations

import datetime
import io
import re
import struct

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filereader import data_element_generator
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
    RLELossless,
)

from tests.helpers.bad_inputs import corpus, deflated_dicom_bomb, python_in_subprocess
from training.decode import DecodeError, decode_bytes
from web.deidentify import (
    REMOVED_KEYWORDS,
    DeidentificationError,
    NotDicomError,
    deid_salt,
    deidentify_dicom,
)

SALT = deid_salt("test-secret-key")
ROOT = "1.2.826.0.1.3680043.8.498."
STUDY, SERIES, SOP, FRAME_REF = ROOT + "1001", ROOT + "1002", ROOT + "1003", ROOT + "1004"
# Every identifying value the test files carry; none may survive in the output bytes.
IDENTITY = {
    "PatientName": "Doe^Johnathan",
    "PatientID": "MRN4471123",
    "PatientBirthDate": "19610415",
    "PatientAddress": "12 Acacia Avenue, Springfield",
    "OtherPatientIDs": "ALT9987612",
    "OtherPatientNames": "Roe^Jonny",
    "InstitutionName": "Saint Elsewhere Hospital",
    "InstitutionAddress": "1 Hospital Road, Boston",
    "ReferringPhysicianName": "House^Gregory",
    "PerformingPhysicianName": "Quinn^Michaela",
    "OperatorsName": "Tech^Terry",
    "AccessionNumber": "ACC55512",
    "StudyID": "STUDY8812",
    "StationName": "MRSCANNER7",
    "DeviceSerialNumber": "SN99812345",
    "StudyDescription": "Brain MRI for Johnathan Doe",
    "SeriesDescription": "T1 axial Johnathan",
    "ImageComments": "called Mrs Doe at home",
    "PatientComments": "Lives at Acacia Avenue",
    "AdditionalPatientHistory": "fell at Springfield school",
    "ProtocolName": "DOE_BRAIN_PROTOCOL",
    "PatientTelephoneNumbers": "555-0142-77",
}
KEPT = {"PatientAge": "061Y", "PatientSex": "M", "Modality": "MR", "PatientSize": "1.82",
        "PatientWeight": "84"}


def make_dataset(frames: int = 1, size: int = 64, photometric: str = "MONOCHROME2", **values: str) -> Dataset:
    """A 16-bit MR image with every value of IDENTITY, private elements, an overlay and nested sequences."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = values.get("SOPInstanceUID", SOP)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.SourceApplicationEntityTitle = "ELSEWHERE_MR1"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = values.get("SOPInstanceUID", SOP)
    ds.StudyInstanceUID = values.get("StudyInstanceUID", STUDY)
    ds.SeriesInstanceUID = values.get("SeriesInstanceUID", SERIES)
    ds.FrameOfReferenceUID = FRAME_REF
    for keyword, value in {**IDENTITY, **KEPT}.items():
        setattr(ds, keyword, values.get(keyword, value))
    ds.StudyDate, ds.StudyTime = values.get("StudyDate", "20230105"), "101500"
    ds.SeriesDate, ds.SeriesTime = "20230105", "102000"
    ds.BurnedInAnnotation = "NO"
    ds.add_new(0x00091010, "LO", "private Doe record")
    ds.private_block(0x0029, "ACME MR", create=True).add_new(0x01, "LO", "ACME hidden note")
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = MRImageStorage
    referenced.ReferencedSOPInstanceUID = ROOT + "1005"
    referenced.add_new(0x00111010, "LO", "nested private text")
    ds.ReferencedImageSequence = Sequence([referenced])
    request = Dataset()
    request.RequestedProcedureDescription = "Requested by Dr Wilson"
    ds.RequestAttributesSequence = Sequence([request])
    ds.add_new(0x60000010, "US", size)  # an overlay plane (OverlayRows)
    ds.add_new(0x60004000, "LT", "Overlay note: Doe")  # OverlayComments
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = "2", "-100"
    ds.WindowCenter, ds.WindowWidth = "3000", "5000"
    # Values below 4096: every high byte is < 0x10, so no printable text can hide in the pixels
    # and the "original string absent from the bytes" checks cannot be fooled by chance.
    ramp = np.arange(frames * size * size, dtype=np.uint32).reshape(frames, size, size)
    pixels = ((ramp * 37) % 4096).astype(np.uint16)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    return ds


def encode(ds: Dataset, syntax: UID = ExplicitVRLittleEndian, preamble: bool = True) -> bytes:
    """The dataset as file bytes in the given transfer syntax, with or without preamble and file meta."""
    buf = io.BytesIO()
    if not preamble:
        del ds.file_meta
        ds.save_as(buf, implicit_vr=syntax == ImplicitVRLittleEndian,
                   little_endian=syntax != ExplicitVRBigEndian)
        return buf.getvalue()
    if syntax == RLELossless:
        ds.compress(RLELossless)
    elif syntax == ExplicitVRBigEndian:
        ds.PixelData = np.frombuffer(ds.PixelData, dtype="<u2").astype(">u2").tobytes()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def jpeg_dicom() -> bytes:
    """An 8-bit JPEG-baseline encoded MR file (pydicom has no JPEG encoder; OpenCV makes the stream)."""
    ds = make_dataset(size=64)
    del ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth
    image = (np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)
    ok, stream = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([stream.tobytes()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def read(data: bytes) -> Dataset:
    """Parse file bytes (with or without preamble)."""
    return pydicom.dcmread(io.BytesIO(data), force=True)


def all_uids(ds: Dataset) -> list[str]:
    """Every UID value in the file meta and the data set, nested sequences included."""
    found: list[str] = []
    for container in (ds.file_meta, ds):
        container.walk(lambda _d, e: found.extend(
            [str(v) for v in (e.value if e.VM > 1 else [e.value])] if e.VR == "UI" and e.value else []))
    return found


def test_identifying_elements_are_gone_from_the_output_bytes() -> None:
    original = encode(make_dataset())
    for value in IDENTITY.values():  # the test file really carries them
        assert value.encode() in original
    out = deidentify_dicom(original, SALT).data
    for text in [*IDENTITY.values(), "ELSEWHERE_MR1", "private Doe record", "ACME hidden note",
                 "nested private text", "Requested by Dr Wilson", "Overlay note", "Springfield",
                 STUDY, SERIES, SOP, FRAME_REF, ROOT + "1005"]:
        assert text.encode() not in out, text
    for part in ("Doe", "Johnathan", "Acacia"):
        assert part.encode() not in out, part


def test_each_basic_profile_element_is_removed_or_replaced() -> None:
    ds = read(deidentify_dicom(encode(make_dataset()), SALT).data)
    for keyword in ("PatientName", "PatientID", "PatientAddress", "OtherPatientIDs", "InstitutionName",
                    "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "AccessionNumber",
                    "StudyID", "StationName"):
        assert keyword in ds and str(ds.data_element(keyword).value) != IDENTITY[keyword], keyword
    assert ds.PatientBirthDate == ""
    for keyword in ("InstitutionAddress", "OtherPatientNames", "DeviceSerialNumber", "StudyDescription",
                    "SeriesDescription", "ImageComments", "PatientComments", "AdditionalPatientHistory",
                    "ProtocolName", "PatientTelephoneNumbers", "RequestAttributesSequence"):
        assert keyword not in ds, keyword
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert not [t for t in ds.keys() if t.group & 0xFF00 == 0x6000], "overlay kept"
    private: list[int] = []
    ds.walk(lambda _d, e: private.append(e.tag) if e.tag.is_private else None)
    assert private == []
    for old, new in ((STUDY, ds.StudyInstanceUID), (SERIES, ds.SeriesInstanceUID), (SOP, ds.SOPInstanceUID),
                     (FRAME_REF, ds.FrameOfReferenceUID), (SOP, ds.file_meta.MediaStorageSOPInstanceUID),
                     (ROOT + "1005", ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID)):
        assert new and new != old
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.SOPClassUID == MRImageStorage
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == MRImageStorage


def test_the_removal_list_names_real_elements() -> None:
    from pydicom.datadict import keyword_dict

    assert [k for k in REMOVED_KEYWORDS if k not in keyword_dict] == []


def test_deidentification_is_recorded() -> None:
    source = make_dataset()
    del source.BurnedInAnnotation  # MR files rarely say; dicognito alone would then not mark the file
    ds = read(deidentify_dicom(encode(source), SALT).data)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod
    codes = {item.CodeValue for item in ds.DeidentificationMethodCodeSequence}
    assert codes == {"113100", "113107", "113108"}
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uids_are_deterministic_salted_and_valid() -> None:
    first = make_dataset(SOPInstanceUID=ROOT + "2001")
    second = make_dataset(SOPInstanceUID=ROOT + "2002", SeriesInstanceUID=ROOT + "2003")
    a, b = (deidentify_dicom(encode(ds), SALT) for ds in (first, second))
    assert a.study_uid == b.study_uid  # one study stays one study
    assert a.series_uid != b.series_uid
    assert read(a.data).SOPInstanceUID != read(b.data).SOPInstanceUID
    again = deidentify_dicom(encode(make_dataset(SOPInstanceUID=ROOT + "2001")), SALT)
    assert again.data == a.data  # a re-upload hashes the same, so deduplication still works
    other = deidentify_dicom(encode(make_dataset(SOPInstanceUID=ROOT + "2001")), deid_salt("another-key"))
    assert other.study_uid != a.study_uid and other.series_uid != a.series_uid
    kept = set(all_uids(read(encode(make_dataset()))))  # class, transfer syntax, implementation UIDs
    assert set(all_uids(read(other.data))) - kept
    assert (set(all_uids(read(other.data))) - kept).isdisjoint(set(all_uids(read(a.data))) - kept)
    ds = read(a.data)
    assert a.study_uid == ds.StudyInstanceUID and a.series_uid == ds.SeriesInstanceUID
    for uid in all_uids(ds):
        assert len(uid) <= 64 and re.fullmatch(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+", uid), uid
        assert UID(uid).is_valid


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                                    DeflatedExplicitVRLittleEndian, RLELossless])
@pytest.mark.parametrize("frames,photometric", [(1, "MONOCHROME2"), (3, "MONOCHROME1")])
def test_pixels_and_display_attributes_are_unchanged(syntax: UID, frames: int, photometric: str) -> None:
    original = encode(make_dataset(frames=frames, photometric=photometric), syntax)
    result = deidentify_dicom(original, SALT)
    before, after = read(original), read(result.data)
    assert after.file_meta.TransferSyntaxUID == syntax
    assert after.PixelData == before.PixelData
    for keyword in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PhotometricInterpretation",
                    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "PixelRepresentation"):
        assert after.get(keyword) == before.get(keyword), keyword
    assert result.frames == frames == int(after.get("NumberOfFrames", 1))
    images_before, images_after = decode_bytes(original), decode_bytes(result.data)
    assert len(images_after) == frames
    for x, y in zip(images_before, images_after):
        assert np.array_equal(x.image, y.image)
        assert y.study_uid == result.study_uid and y.series_uid == result.series_uid
    assert images_after[0].image.std() > 0  # a real picture, not a flat one that would match anything
    shown = str(after)  # deflated files hide their text from a byte search, so look at the values too
    for value in IDENTITY.values():
        assert value.encode() not in result.data and value not in shown, value


def test_jpeg_baseline_keeps_its_compressed_stream() -> None:
    original = jpeg_dicom()
    result = deidentify_dicom(original, SALT)
    assert read(result.data).PixelData == read(original).PixelData
    assert np.array_equal(decode_bytes(original)[0].image, decode_bytes(result.data)[0].image)
    for value in IDENTITY.values():
        assert value.encode() not in result.data


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_file_without_preamble(syntax: UID) -> None:
    original = encode(make_dataset(), syntax, preamble=False)
    assert original[128:132] != b"DICM" and IDENTITY["PatientName"].encode() in original
    result = deidentify_dicom(original, SALT)
    for value in IDENTITY.values():
        assert value.encode() not in result.data
    assert np.array_equal(decode_bytes(original)[0].image, decode_bytes(result.data)[0].image)
    assert read(result.data).PatientIdentityRemoved == "YES"
    # The same content with a preamble groups into the same pseudonymous study.
    assert result.study_uid == deidentify_dicom(encode(make_dataset()), SALT).study_uid


# Real scanner and toolkit files that ship with pydicom: MR in five encodings (its preamble
# is a TIFF header), lossy JPEG, JPEG 2000, deflated, big endian, overlay, palette,
# enhanced multi-frame CT, multi-frame RT dose.
PYDICOM_FILES = ("MR_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
                 "MR_small_jp2klossless.dcm", "JPEG-lossy.dcm", "693_J2KI.dcm", "image_dfl.dcm",
                 "ExplVR_BigEnd.dcm", "examples_overlay.dcm", "examples_palette.dcm", "liver_1frame.dcm",
                 "rtdose.dcm", "SC_rgb_rle_2frame.dcm")


def decoded_or_reason(data: bytes) -> list[np.ndarray] | str:
    """The decoded images, or the decoder's reason for refusing the file."""
    try:
        return [scan.image for scan in decode_bytes(data)]
    except DecodeError as exc:
        return str(exc)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_real_files(name: str) -> None:
    from pydicom.data import get_testdata_file

    original = open(get_testdata_file(name), "rb").read()
    before = read(original)
    result = deidentify_dicom(original, SALT)
    after = read(result.data)
    shown = str(after)
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = str(before.get(keyword, "") or "")
        if len(value) >= 3:
            assert value.encode() not in result.data and value not in shown, (keyword, value)
    assert after.PatientIdentityRemoved == "YES"
    assert not [e.tag for e in after.iterall() if e.tag.is_private or e.tag.group & 0xFF00 == 0x6000]
    assert after.PixelData == before.PixelData
    was, now = decoded_or_reason(original), decoded_or_reason(result.data)
    if isinstance(was, str):
        assert now == was  # refused for the same reason (MR_small's TIFF preamble fools the sniffer)
    else:
        assert len(now) == len(was) and all(np.array_equal(x, y) for x, y in zip(was, now))


def test_dates_shift_per_patient_and_characteristics_stay() -> None:
    a1 = read(deidentify_dicom(encode(make_dataset()), SALT).data)
    later = make_dataset(SOPInstanceUID=ROOT + "3001", StudyDate="20230301")
    a2 = read(deidentify_dicom(encode(later), SALT).data)
    b = read(deidentify_dicom(encode(make_dataset(PatientID="OTHER0001")), SALT).data)

    def day(value: str) -> datetime.date:
        return datetime.datetime.strptime(value, "%Y%m%d").date()

    shift = day("20230105") - day(a1.StudyDate)
    assert datetime.timedelta(days=62) <= shift <= datetime.timedelta(days=730)
    assert day("20230301") - day(a2.StudyDate) == shift  # intervals within one patient are kept
    assert day("20230105") - day(b.StudyDate) != shift  # another patient, another shift
    assert a1.StudyTime == a1.SeriesTime[:2] + "1500"  # times move with their dates
    for keyword, value in KEPT.items():
        assert str(a1.data_element(keyword).value) == value


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the invalid date
def test_unparseable_date_is_emptied_not_fatal() -> None:
    ds = read(deidentify_dicom(encode(make_dataset(StudyDate="2023-01-05")), SALT).data)
    assert ds.StudyDate == ""


def test_deflated_data_set_is_inflated_only_within_the_limit() -> None:
    big = make_dataset(size=256)  # 128 KiB of pixels that deflate to a few KiB
    data = encode(big, DeflatedExplicitVRLittleEndian)
    assert len(data) < 64 * 1024
    with pytest.raises(DeidentificationError, match="inflates past"):
        deidentify_dicom(data, SALT, max_inflated_bytes=100_000)
    assert deidentify_dicom(data, SALT, max_inflated_bytes=200_000).frames == 1


DEIDENTIFY_BOMB = """
from web.deidentify import DeidentificationError, deidentify_dicom
try:
    deidentify_dicom(open(sys.argv[1], "rb").read(), bytes(32))
    result = "de-identified"
except DeidentificationError as exc:
    result = str(exc)
"""


def test_deflated_bomb_stays_small(tmp_path) -> None:
    """1 MB that pydicom alone would inflate to 1 GiB in the web process: refused, memory bounded."""
    path = tmp_path / "bomb.dcm"
    path.write_bytes(deflated_dicom_bomb(1 << 30))
    measured = python_in_subprocess(DEIDENTIFY_BOMB, path)
    assert "inflates past" in measured["result"], measured
    assert measured["peak_mb"] < 300, measured


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the deliberately bad values
def test_hostile_corpus_is_deidentified_or_refused() -> None:
    """Each lone file of the hostile corpus: de-identified, NotDicomError or DeidentificationError."""
    outcomes = {}
    for item in corpus():
        for path, content in item.files:
            if path.endswith(".zip"):
                continue
            try:
                deidentify_dicom(content, SALT)
                outcomes[item.name] = "ok"
            except NotDicomError:
                outcomes[item.name] = "not dicom"
            except DeidentificationError as exc:
                outcomes[item.name] = str(exc)
    assert outcomes["png-bomb-40k"] == outcomes["random-bytes"] == "not dicom"
    assert "inflates past" in outcomes["dicom-deflate-bomb"]
    assert "no pixel data" in outcomes["dicom-no-pixels"]
    for name in ("dicom-16-bit", "dicom-monochrome1", "dicom-multi-frame", "dicom-study-uid-with-nul",
                 "dicom-pixel-bomb", "dicom-unsupported-syntax"):  # header work only: pixels stay as sent
        assert outcomes[name] == "ok", (name, outcomes[name])


def test_burned_in_annotation_is_refused() -> None:
    ds = make_dataset()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentificationError, match="burned-in"):
        deidentify_dicom(encode(ds), SALT)


@pytest.mark.parametrize("data", [b"", b"hello, not a scan", b"\x89PNG\r\n\x1a\n" + bytes(200),
                                  b"\xff\xd8\xff\xe0" + bytes(300), bytes(range(256)) * 8])
def test_not_dicom_is_refused(data: bytes) -> None:
    with pytest.raises(NotDicomError):
        deidentify_dicom(data, SALT)


def test_institution_address_goes_without_an_institution_name() -> None:
    ds = make_dataset()
    del ds.InstitutionName  # dicognito only rewrites the address beside a name
    out = deidentify_dicom(encode(ds), SALT).data
    assert IDENTITY["InstitutionAddress"].encode() not in out and "InstitutionAddress" not in read(out)


def test_identity_copied_into_a_kept_element_is_refused() -> None:
    ds = make_dataset()
    ds.Manufacturer = IDENTITY["PatientName"]  # no profile rule covers this element
    with pytest.raises(DeidentificationError, match="identifying values survive"):
        deidentify_dicom(encode(ds), SALT)


def test_file_without_pixel_data_is_refused() -> None:
    ds = make_dataset()
    del ds.PixelData
    with pytest.raises(DeidentificationError, match="no pixel data"):
        deidentify_dicom(encode(ds), SALT)


def assert_safe(data: bytes) -> bool:
    """De-identified with no identity left, or refused with DeidentificationError; True when de-identified."""
    try:
        out = deidentify_dicom(data, SALT).data
    except DeidentificationError:
        return False
    for value in [*IDENTITY.values(), "ACME hidden note", "Requested by Dr Wilson", "Overlay note",
                  SOP, STUDY]:
        assert value.encode() not in out, value
    return True


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each damaged value
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_truncated_files_never_leak(syntax: UID) -> None:
    original = encode(make_dataset(size=16), syntax)
    outcomes = [assert_safe(original[:n]) for n in range(0, len(original), 17)]
    assert not all(outcomes) and any(outcomes)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each damaged value
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_wrong_element_lengths_never_leak(syntax: UID) -> None:
    """A wrong length makes an element swallow the ones after it, or puts the parser out of step."""
    original = encode(make_dataset(size=16), syntax)
    parsed = read(original)
    long_form = {"OB", "OW", "SQ", "UN", "UT", "UC", "UR", "OF", "OD", "OL", "OV"}
    outcomes = []
    meta = io.BytesIO(original)
    meta.seek(132)  # after the preamble; the file meta is always explicit VR little endian
    elements = [(raw, True) for raw in data_element_generator(
        meta, False, True, stop_when=lambda tag, _vr, _length: tag.group != 2)]
    elements += [(parsed.get_item(tag), syntax == ExplicitVRLittleEndian) for tag in parsed.keys()]
    for raw, explicit in elements:
        if raw.length == 0xFFFFFFFF or raw.value_tell is None:
            continue
        short = explicit and raw.VR not in long_form
        width, fmt = (2, "<H") if short else (4, "<I")
        for length in (raw.length + 2, raw.length + 8, raw.length + 300, max(raw.length - 2, 0)):
            damaged = bytearray(original)
            damaged[raw.value_tell - width:raw.value_tell] = struct.pack(fmt, length)
            outcomes.append(assert_safe(bytes(damaged)))
    assert len(outcomes) > 100 and any(outcomes) and not all(outcomes)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about each damaged value
def test_flipped_bytes_fail_cleanly() -> None:
    """Random header damage: de-identified or DeidentificationError, never another exception type."""
    original = encode(make_dataset(size=16))
    rng = np.random.default_rng(8)
    outcomes = []
    for _ in range(100):
        damaged = bytearray(original)
        for pos in rng.integers(0, len(original) - 512, size=3):  # the header, not the pixels
            damaged[pos] = int(rng.integers(0, 256))
        try:
            deidentify_dicom(bytes(damaged), SALT)
            outcomes.append(True)
        except DeidentificationError:
            outcomes.append(False)
    assert any(outcomes) and not all(outcomes)


def test_salt_is_a_keyed_stable_secret() -> None:
    assert deid_salt("k1") == deid_salt("k1") and len(deid_salt("k1")) == 32
    assert deid_salt("k1") != deid_salt("k2")
    with pytest.raises(ValueError):
        deid_salt("")
    with pytest.raises(ValueError):
        deidentify_dicom(encode(make_dataset()), b"short")
