"""A PACS over DICOMweb (dicomweb-client): a series read with WADO-RS, studies and series listed
with QIDO-RS, a SEG or RT-STRUCT stored with STOW-RS.

A series is named ``dicomweb://HOST:PORT/PATH/studies/UID/series/UID`` (``dicomwebs://`` for
https); ``PATH`` is the server's DICOMweb root (``/dicom-web`` on Orthanc). Credentials never go in
the URL (it is printed and logged): HTTP basic from ``MEDSAM2_DICOMWEB_USER`` and
``MEDSAM2_DICOMWEB_PASSWORD``, a bearer token from ``MEDSAM2_DICOMWEB_TOKEN``, or else the user's
``~/.netrc`` (requests reads it). A retrieved series is written to a folder and read by
:func:`medsam2.io.readers.load_volume` like any DICOM folder, with every check that has.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from medsam2.errors import InputError, UsageError

USER_VARIABLE, PASSWORD_VARIABLE, TOKEN_VARIABLE = "MEDSAM2_DICOMWEB_USER", "MEDSAM2_DICOMWEB_PASSWORD", "MEDSAM2_DICOMWEB_TOKEN"
SCHEMES = {"dicomweb": "http", "dicomwebs": "https", "http": "http", "https": "https"}
#: seconds to wait for the server to connect and to answer each read
TIMEOUT_SECONDS = (10.0, 120.0)
_SERIES_PATH = re.compile(r"^(?P<root>.*?)/studies/(?P<study>[0-9.]+)/series/(?P<series>[0-9.]+)/?$")


def is_dicomweb(text: str) -> bool:
    """Whether an input names a series on a DICOMweb server (``dicomweb://`` or ``dicomwebs://``)."""
    return isinstance(text, str) and text.lower().startswith(("dicomweb://", "dicomwebs://"))


@dataclass(frozen=True)
class SeriesAddress:
    """A series on a DICOMweb server: the server's DICOMweb root URL (http or https) and the UIDs."""

    root: str
    study_uid: str
    series_uid: str

    def __str__(self) -> str:
        return f"{self.root}/studies/{self.study_uid}/series/{self.series_uid}"


def server_root(text: str) -> str:
    """``dicomweb://HOST:PORT/PATH`` (or http(s)://...) -> ``http://HOST:PORT/PATH``, credentials refused.

    Raises:
        UsageError: another scheme, no host, or a user name or password in the URL.
    """
    parts = urlsplit(text)
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise UsageError(f"{text!r} is not a DICOMweb URL; write dicomweb://HOST:PORT/PATH (dicomwebs:// for https)")
    if parts.username or parts.password:
        raise UsageError(
            f"put the DICOMweb credentials in {USER_VARIABLE}/{PASSWORD_VARIABLE}, {TOKEN_VARIABLE} or ~/.netrc, "
            "not in the URL (it is printed and logged)"
        )
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def parse_series_url(text: str) -> SeriesAddress:
    """``dicomweb://HOST:PORT/PATH/studies/UID/series/UID`` -> its server root and UIDs.

    Raises:
        UsageError: not such a URL (see :func:`server_root`), or no studies/UID/series/UID path.
    """
    root = server_root(text)
    parts = urlsplit(root)
    match = _SERIES_PATH.match(parts.path)
    if match is None:
        raise UsageError(f"{text!r} names no series; write dicomweb://HOST:PORT/PATH/studies/STUDY_UID/series/SERIES_UID")
    return SeriesAddress(f"{parts.scheme}://{parts.netloc}{match.group('root')}", match.group("study"), match.group("series"))


def client(root: str):
    """A DICOMweb client for ``root`` with the credentials of the environment (see the module)."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()  # trust_env: ~/.netrc applies where no other credentials are set
    headers = {}
    user, password, token = os.environ.get(USER_VARIABLE), os.environ.get(PASSWORD_VARIABLE), os.environ.get(TOKEN_VARIABLE)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user:
        session.auth = (user, password or "")
    return DICOMwebClient(root, session=session, headers=headers, timeout=TIMEOUT_SECONDS)


def _failure(error: Exception, root: str, what: str) -> InputError:
    """One line for what went wrong talking to the server (never the credentials)."""
    import requests

    if isinstance(error, requests.HTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return InputError(
                f"the DICOMweb server at {root} refused {what} (HTTP {status}): set {USER_VARIABLE} and {PASSWORD_VARIABLE}, "
                f"{TOKEN_VARIABLE}, or a ~/.netrc entry for it"
            )
        if status == 404:
            return InputError(f"the DICOMweb server at {root} has no such {what.split()[-1]} (HTTP 404)")
        return InputError(f"the DICOMweb server at {root} answered HTTP {status} to {what}")
    if isinstance(error, requests.ConnectionError):
        return InputError(f"cannot reach the DICOMweb server at {root} ({type(error).__name__}); check the host, port and network")
    if isinstance(error, requests.Timeout):
        return InputError(f"the DICOMweb server at {root} did not answer {what} in time")
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return InputError(f"the DICOMweb server at {root} did not answer {what} with DICOM: {first}")


#: what a DICOM UID is: digits and dots, up to 64 characters
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def find_series(root: str, series_uid: str) -> SeriesAddress:
    """The address of the series with this SeriesInstanceUID on the server (QIDO-RS across studies:
    what a viewer that names a series by its UID alone, as OHIF does, needs).

    Raises:
        InputError: not a UID, the server is unreachable or refuses, or it holds no such series.
    """
    if len(series_uid) > 64 or not _UID.fullmatch(series_uid):
        raise InputError(f"{series_uid[:70]!r} is not a DICOM series UID (digits and dots, up to 64)")
    try:
        found = client(root).search_for_series(search_filters={"SeriesInstanceUID": series_uid}, limit=2)
    except Exception as error:  # noqa: BLE001 - requests and dicomweb-client raise many kinds
        raise _failure(error, root, "the series search") from None
    studies = {_value(item, "0020000D") for item in found if _value(item, "0020000E") == series_uid}
    if not studies or "" in studies:
        raise InputError(f"the DICOMweb server at {root} holds no series {series_uid}")
    return SeriesAddress(root, sorted(studies)[0], series_uid)


@contextmanager
def fetched_series(address: SeriesAddress, folder: Path) -> Iterator[Path]:
    """Retrieve the series (WADO-RS) into ``folder`` (one file per instance) and yield the folder.

    Raises:
        InputError: the server is unreachable, refuses, has no such series, answers with something
            that is not DICOM, or sends no instance.
    """
    import pydicom

    connection = client(address.root)
    count = 0
    try:
        for count, dataset in enumerate(connection.iter_series(address.study_uid, address.series_uid), start=1):
            if not isinstance(dataset, pydicom.Dataset) or "SOPInstanceUID" not in dataset:
                raise InputError(f"the DICOMweb server at {address.root} sent something that is not a DICOM instance")
            if str(dataset.get("SeriesInstanceUID", "")) != address.series_uid:
                raise InputError(f"the DICOMweb server at {address.root} sent an instance of another series")
            dataset.save_as(folder / f"{count:06d}.dcm", enforce_file_format=True)
    except InputError:
        raise
    except Exception as error:  # noqa: BLE001 - requests, dicomweb-client and pydicom raise many kinds
        raise _failure(error, address.root, "the series") from None
    if count == 0:
        raise InputError(f"the DICOMweb server at {address.root} sent no instance of series {address.series_uid}")
    yield folder


def store(root: str, path: Path) -> str:
    """Store one DICOM file (STOW-RS); returns its SOP Instance UID.

    Raises:
        InputError: the server is unreachable, refuses, or reports the instance as failed.
    """
    import pydicom

    dataset = pydicom.dcmread(path)
    try:
        answer = client(root).store_instances([dataset])
    except Exception as error:  # noqa: BLE001
        raise _failure(error, root, "the store") from None
    failed = answer.get("FailedSOPSequence", []) if answer is not None else []
    if failed:
        reason = failed[0].get("FailureReason", "unknown")
        raise InputError(f"the DICOMweb server at {root} did not store {path.name} (failure reason {reason})")
    return str(dataset.SOPInstanceUID)


@dataclass(frozen=True)
class SeriesEntry:
    """One image series on the server, as QIDO-RS lists it."""

    study_uid: str
    series_uid: str
    patient: str
    study_date: str
    study_description: str
    modality: str
    series_description: str
    instances: int | None


def _value(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # a person name
        return str(value.get("Alphabetic", ""))
    return str(value)


#: modalities that are not images medsam2 segments
_NOT_IMAGES = {"SEG", "RTSTRUCT", "SR", "PR", "KO", "RTPLAN", "RTDOSE", "REG"}


def list_series(root: str, limit: int = 200) -> list[SeriesEntry]:
    """Every image series of up to ``limit`` studies on the server (QIDO-RS), newest study first.

    Raises:
        InputError: the server is unreachable, refuses, or does not answer with DICOM JSON.
    """
    connection = client(root)
    try:
        studies = connection.search_for_studies(limit=limit)
        entries = []
        for study in studies:
            study_uid = _value(study, "0020000D")
            for series in connection.search_for_series(study_uid):
                modality = _value(series, "00080060")
                if modality in _NOT_IMAGES:
                    continue
                count = _value(series, "00201209")
                entries.append(SeriesEntry(
                    study_uid, _value(series, "0020000E"), _value(study, "00100010"), _value(study, "00080020"),
                    _value(study, "00081030"), modality, _value(series, "0008103E"), int(count) if count.isdigit() else None,
                ))
    except Exception as error:  # noqa: BLE001
        raise _failure(error, root, "the study search") from None
    return sorted(entries, key=lambda e: (e.study_date, e.study_uid), reverse=True)
