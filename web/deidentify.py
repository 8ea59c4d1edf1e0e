"""De-identify DICOM files on ingest (PS3.15 Annex E basic profile), so stored blobs hold no patient identity.

dicognito does the pseudonymisation: every person name, patient and order ID,
address, institution and non-class UID is replaced by a value derived from a
keyed hash of the original, so the same input with the same salt always gives
the same output (studies stay grouped, a re-upload is byte-identical and the
content-hash deduplication still works), and dates are shifted into the past.
dicognito 0.19 does not cover the whole basic profile, so this module also
removes private elements, overlays and curves, the free-text and history
elements of Table E.1-1 (descriptions, comments, protocol name, ...), and
empties the birth date that dicognito would only shift. Finally the header it
writes is searched for the original names, IDs, addresses and UIDs: a file where
any survives (a damaged header can hide them in another element's value) is refused.
A deflated data set is inflated in bounded chunks first (pydicom would inflate it
whole, in the web process), and pixel data is never decoded.

Options declared in DeidentificationMethodCodeSequence, beside the basic profile:
  * Retain Longitudinal Temporal Information, Modified Dates: dates are shifted,
    by 62 to 730 days per patient, never kept as they were;
  * Retain Patient Characteristics: PatientAge, PatientSex, PatientSize and
    PatientWeight are kept (the bare profile would remove age and empty sex).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import re
import zlib
from dataclasses import dataclass

import pydicom
from dicognito.anonymizer import Anonymizer
from dicognito.datetimeanonymizer import DateTimeAnonymizer
from dicognito.fixedvalueanonymizer import FixedValueAnonymizer
from dicognito.unwantedelements import UnwantedElementsStripper
from pydicom.dataelem import DataElement
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import _read_file_meta_info
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.valuerep import STR_VR

DEFAULT_MAX_INFLATED_BYTES = 36_000_000 * 8
"""Largest deflated data set inflated: what decode.py allows for its default 36 M pixel limit."""
# A fixed label, so the salt differs from every other use of SECRET_KEY (sessions, CSRF).
SALT_LABEL = b"brain-mri/dicom-deidentify/v1"
# dicognito's own range for the date shift, kept; the shift itself is chosen per patient.
MIN_SHIFT_DAYS = 62
MAX_SHIFT_DAYS = 730
# PS3.16 CID 7050 codes for what is done here.
METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
# Table E.1-1 elements (action X) that dicognito 0.19 leaves as they are: free text
# that often carries a name, history or place, identifying sequences, AE titles.
REMOVED_KEYWORDS = (
    # free text
    "StudyDescription", "SeriesDescription", "ImageComments", "PatientComments",
    "AdditionalPatientHistory", "StudyComments", "AcquisitionComments", "FrameComments",
    "ReasonForStudy", "ReasonForTheRequestedProcedure", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "CommentsOnThePerformedProcedureStep",
    "AdmittingDiagnosesDescription", "DerivationDescription", "ProtocolName",
    "VisitComments", "ServiceEpisodeDescription", "TextComments", "TextString",
    "InterpretationText",
    # dicognito rewrites the address only beside an InstitutionName; alone it would stay
    "InstitutionAddress",
    # patient history beyond the retained characteristics
    "MedicalAlerts", "Allergies", "EthnicGroup", "SmokingStatus", "PregnancyStatus",
    "SpecialNeeds", "PatientState",
    # more of the patient's identity
    "PatientBirthTime", "PatientBirthName", "PatientMotherBirthName", "OtherPatientNames",
    "OtherPatientIDsSequence", "ReferencedPatientSequence", "ReferencedPatientAliasSequence",
    "AdmissionID", "ServiceEpisodeID", "PerformedLocation",
    # other people's contact details
    "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PersonAddress", "PersonTelephoneNumbers",
    "PersonTelecomInformation",
    # device and network identity
    "DeviceSerialNumber", "PerformedStationAETitle", "ScheduledStationAETitle",
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
    # containers of original or unreadable values
    "RequestAttributesSequence", "OriginalAttributesSequence", "EncryptedAttributesSequence",
    "DigitalSignaturesSequence", "MACParametersSequence", "DataSetTrailingPadding",
)
# Overlays (60xx, may be burned-in text) and curves (50xx) are removed whole.
_REMOVED_GROUP_PREFIXES = (0x5000, 0x6000)
# What decode.py accepts as DICOM when the file has no preamble: the same test here,
# so anything the decoder would read as DICOM is de-identified first.
_DICOM_HINTS = ("SOPClassUID", "Modality", "StudyInstanceUID", "Rows")
# The patient's identity and the instance UIDs, searched for in the output: dicognito
# replaces them all, so finding one means it hid in another element (copied there, or
# swallowed by a damaged length). Other names and institutions are left out of the
# search: they legitimately recur (an InstitutionName inside a Manufacturer).
_SEARCHED_KEYWORDS = frozenset({
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
})
_MIN_SEARCHED_CHARS = 4  # shorter ones would match by chance
_INFLATE_IN, _INFLATE_OUT = 64 * 1024, 1024 * 1024
# Bytes no DICOM text holds (TAB, LF, FF, CR and ESC are allowed); a value with them
# has swallowed other elements.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")


class DeidentificationError(ValueError):
    """A DICOM file that cannot be de-identified; str(e) is a plain-English reason."""


class NotDicomError(DeidentificationError):
    """Input that is not DICOM at all (nothing to de-identify)."""


@dataclass(frozen=True)
class DeidResult:
    """The de-identified file and the replaced UIDs to group its scans by."""

    data: bytes
    study_uid: str
    series_uid: str
    frames: int


def deid_salt(secret_key: str) -> bytes:
    """The per-deployment pseudonym salt: HMAC-SHA256 of SECRET_KEY with a fixed label."""
    if not secret_key:
        raise ValueError("SECRET_KEY is empty; pseudonyms would be guessable")
    return hmac.new(secret_key.encode("utf-8"), SALT_LABEL, hashlib.sha256).digest()


def deidentify_dicom(data: bytes, salt: bytes, *,
                     max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES) -> DeidResult:
    """Return the file de-identified by the basic profile; raise NotDicomError or DeidentificationError."""
    if len(salt) < 16:
        raise ValueError("the salt must be at least 16 bytes (use deid_salt)")
    ds = _read(data, max_inflated_bytes)
    try:
        if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
            # The header says the pixels show text (often the name); only pixel cleaning could fix that.
            raise DeidentificationError("DICOM file declares burned-in annotation in its pixels; "
                                        "header changes cannot de-identify it")
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            # Nothing to classify; in a damaged header it is also the sign that an element swallowed the rest.
            raise DeidentificationError("DICOM file has no pixel data")
        originals = _identity_patterns(ds)
        patient_id = str(ds.get("PatientID", "") or "")
        _strip_outside_dicognito(ds)
        _anonymizer(salt, patient_id).anonymize(ds)
        _drop_unknown_and_garbled(ds)
        _mark(ds)
        out = _write(ds)
        header = _header_bytes(ds)
        study, series = (str(ds.get(k, "") or "") for k in ("StudyInstanceUID", "SeriesInstanceUID"))
        frames = _int(ds.get("NumberOfFrames", 1))
    except (DeidentificationError, MemoryError):
        raise
    except Exception as exc:  # pydicom and dicognito raise many types on odd values
        raise DeidentificationError(f"DICOM file cannot be de-identified ({_short(exc)})") from exc
    if any(pattern.search(header) for pattern in originals):
        raise DeidentificationError("identifying values survive de-identification "
                                    "(copied into other elements, or a damaged header)")
    return DeidResult(out, study, series, max(frames, 1))


def _read(data: bytes, max_inflated_bytes: int) -> Dataset:
    has_magic = len(data) >= 132 and data[128:132] == b"DICM"
    _check_inflated_size(data, 132 if has_magic else 0, max_inflated_bytes)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not has_magic)
    except InvalidDicomError as exc:
        raise NotDicomError("not a DICOM file") from exc
    except Exception as exc:  # pydicom raises many types on damaged input
        if not has_magic:
            raise NotDicomError("not a DICOM file") from exc
        raise DeidentificationError(f"corrupt DICOM ({_short(exc)})") from exc
    if not has_magic and not len(ds.file_meta) and not any(tag in ds for tag in _DICOM_HINTS):
        raise NotDicomError("not a DICOM file")
    return ds


def _check_inflated_size(data: bytes, meta_start: int, limit: int) -> None:
    """Refuse a deflated data set that inflates past limit, inflating in chunks and keeping nothing.

    pydicom inflates a Deflated Explicit VR Little Endian data set in one call, so a
    2 MB upload could become gigabytes in the web process before any check.
    """
    fp = io.BytesIO(data)
    fp.seek(meta_start)
    try:
        # pydicom's own file meta reader (pydicom is pinned), so the transfer syntax
        # seen here is the one dcmread acts on, whatever shape the meta is in.
        deflated = _read_file_meta_info(fp).get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # dcmread reads the same meta, fails the same way and says why
        return
    if not deflated:
        return
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    view, total = memoryview(data), 0
    try:
        for offset in range(fp.tell(), len(data), _INFLATE_IN):
            pending: bytes | memoryview = view[offset:offset + _INFLATE_IN]
            while pending and not inflater.eof:
                total += len(inflater.decompress(pending, _INFLATE_OUT))
                if total > limit:
                    raise DeidentificationError(f"deflated DICOM data set inflates past {limit:,} bytes")
                pending = inflater.unconsumed_tail
            if inflater.eof:
                return
    except zlib.error as exc:
        raise DeidentificationError(f"corrupt DICOM (deflated data set: {exc})") from None


def _identity_patterns(ds: Dataset) -> list[re.Pattern[bytes]]:
    """Patterns for the original patient identity and instance UIDs, as whole values."""
    found: set[str] = set()

    def collect(_dataset: Dataset, elem: DataElement) -> None:
        if keyword_for_tag(elem.tag) in _SEARCHED_KEYWORDS:
            values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
            found.update(str(v).strip() for v in values if v is not None)

    ds.walk(collect)
    # Bounded by anything but a letter, digit or dot: "1.2.3" must not match inside "1.2.3.4".
    return [re.compile(rb"(?<![A-Za-z0-9.])" + re.escape(v.encode("utf-8", "replace")) + rb"(?![A-Za-z0-9.])")
            for v in sorted(found) if len(v) >= _MIN_SEARCHED_CHARS]


def _strip_outside_dicognito(ds: Dataset) -> None:
    """Remove what dicognito keeps but the basic profile removes: private elements, overlays, curves."""
    ds.remove_private_tags()  # recursive; the "Retain Safe Private" option is not claimed
    for tag in [t for t in ds.keys() if t.group & 0xFF00 in _REMOVED_GROUP_PREFIXES]:
        del ds[tag]


def _drop_unknown_and_garbled(ds: Dataset) -> None:
    """Remove elements the dictionary does not know and text holding control bytes.

    In a damaged file an element with a wrong length swallows the elements after it as
    its value, or they surface under unknown tags; no handler touches those, so they go.
    Stale group lengths (gggg,0000) go with them.
    """
    def check(dataset: Dataset, elem: DataElement) -> None:
        if not keyword_for_tag(elem.tag) or (elem.VR in STR_VR and _garbled(elem.value)):
            del dataset[elem.tag]

    ds.file_meta.walk(check)
    ds.walk(check)


def _garbled(value: object) -> bool:
    values = value if isinstance(value, (list, MultiValue)) else [value]
    # Trailing NULs are a common writer bug, not swallowed data.
    return any(_CONTROL.search(str(v).rstrip("\x00 ")) for v in values if v is not None)


def _anonymizer(salt: bytes, patient_id: str) -> Anonymizer:
    # The seed keys dicognito's hash of every original value, so it must stay secret.
    anonymizer = Anonymizer(seed=salt.hex())
    # Handlers added later run first; each of these takes its elements away from dicognito's defaults.
    anonymizer.add_element_handler(_DateShifter(_shift_hours(salt, patient_id)))
    anonymizer.add_element_handler(FixedValueAnonymizer("PatientBirthDate", ""))
    anonymizer.add_element_handler(UnwantedElementsStripper(*REMOVED_KEYWORDS))
    return anonymizer


def _shift_hours(salt: bytes, patient_id: str) -> int:
    """A per-patient date shift: one known true date must not reveal every patient's dates."""
    message = b"date-shift\x00" + patient_id.encode("utf-8", "replace")
    digest = hmac.new(salt, message, hashlib.sha256).digest()
    span = (MAX_SHIFT_DAYS - MIN_SHIFT_DAYS) * 24
    return -(MIN_SHIFT_DAYS * 24 + int.from_bytes(digest[:8], "big") % span)


class _DateShifter(DateTimeAnonymizer):
    """dicognito's date shift, except that a date it cannot parse is emptied (action Z), not fatal."""

    def __call__(self, dataset: Dataset, data_element: DataElement) -> bool:
        try:
            return super().__call__(dataset, data_element)
        except ValueError:
            data_element.value = ""
            return True


def _mark(ds: Dataset) -> None:
    """Record what was done, as PS3.15 E.1.1 asks."""
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    codes = list(ds.get("DeidentificationMethodCodeSequence", []))  # an earlier de-identifier's stay
    present = {(str(i.get("CodingSchemeDesignator", "")), str(i.get("CodeValue", ""))) for i in codes}
    for value, meaning in METHOD_CODES:
        if ("DCM", value) not in present:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)


def _write(ds: Dataset) -> bytes:
    """Encode like the original (preamble, file meta and transfer syntax as they were)."""
    buf = io.BytesIO()
    if "TransferSyntaxUID" in ds.file_meta:
        ds.save_as(buf)
    else:  # a preamble-less file without meta: keep the encoding it was read with
        implicit, little = ds.original_encoding
        ds.save_as(buf, implicit_vr=implicit, little_endian=little)
    return buf.getvalue()


def _header_bytes(ds: Dataset) -> bytes:
    """File meta and dataset without the pixel data, to search for leftovers (never deflated, so searchable).

    Written in the input's byte order, so text swallowed into numeric values comes out as it went in.
    """
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = ds.original_encoding[1] is not False, False
    write_dataset(fp, ds.file_meta)
    write_dataset(fp, Dataset({tag: elem for tag, elem in ds.items() if tag != 0x7FE00010}))
    return fp.getvalue()


def _int(value: object) -> int:
    try:
        return int(value or 1)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
