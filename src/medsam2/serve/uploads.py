"""Uploads streamed to the session's folder under a size cap, and DICOM series sent as a zip.

Nothing of an upload is held in memory beyond one network chunk, and nothing is written outside
the folder given (the multipart parser of Starlette would spool large files to the system's
temporary folder, and learn their size only after storing them: hence this one).
"""

from __future__ import annotations

import asyncio
import re
import stat
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from medsam2.io.volume import suffix_of
from medsam2.serve.errors import ApiError

#: a form field other than the file may be this long
MAX_FIELD_BYTES = 4096


@dataclass
class Upload:
    """What a multipart upload held.

    Attributes:
        file: the uploaded file, saved as ``upload<suffix>`` in the folder; None when none was sent.
        filename: the name the client gave it (its last component), or None.
        fields: the other form fields (``axis``, ``window``), as text.
    """

    file: Path | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"the upload is larger than the server's limit of {max_bytes / 2**20:.0f} MB (--max-upload-mb)")


@dataclass(frozen=True)
class UploadPace:
    """How slowly an upload may arrive: after ``grace_seconds``, ``min_bytes_per_second`` on
    average since it began (a client that sends a byte now and then holds a connection and a
    folder, not the server). A slower upload is dropped with 408."""

    min_bytes_per_second: float = 32 * 1024
    grace_seconds: float = 10.0

    def deadline(self, started: float, received: int) -> float:
        """The monotonic time by which more than ``received`` bytes must have arrived."""
        return started + self.grace_seconds + received / self.min_bytes_per_second


def too_slow(pace: UploadPace) -> ApiError:
    return ApiError(408, f"the upload arrived slower than the server's minimum of {pace.min_bytes_per_second / 1024:g} kB/s "
                         "(--upload-min-kbps); send it again over a faster link")


def _safe_suffix(filename: str) -> str:
    suffix = suffix_of(Path(filename)).lower()
    return suffix if re.fullmatch(r"(\.[a-z0-9]{1,8}){1,2}", suffix) else ""


async def receive_upload(
    request: Request, folder: Path, max_bytes: int, pace: UploadPace | None = None, file_field: str = "file",
    max_field_bytes: int = MAX_FIELD_BYTES,
) -> Upload:
    """Parse a ``multipart/form-data`` request as it arrives, writing its ``file_field`` part to
    ``folder``; every other field is kept as text up to ``max_field_bytes``.

    Raises:
        ApiError: 400 (not multipart, no boundary, a second file, a field too long), 408 (slower
            than ``pace``), 413 (larger than ``max_bytes``, by its Content-Length or as it
            streams). The caller removes the folder.
    """
    pace = pace or UploadPace()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large(max_bytes)
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise ApiError(400, "send the scan as multipart/form-data with a field 'file', or JSON {\"path\": \"name under --data\"}")
    receiver = _PartReceiver(Upload(), folder, file_field, max_field_bytes)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    started = time.monotonic()
    chunks = request.stream().__aiter__()
    try:
        while True:
            try:
                wait = max(0.0, pace.deadline(started, received) - time.monotonic())
                chunk = await asyncio.wait_for(chunks.__anext__(), timeout=wait)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise too_slow(pace) from None
            received += len(chunk)
            if received > max_bytes:
                raise too_large(max_bytes)
            parser.write(chunk)
            if receiver.error is not None:
                raise receiver.error
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # the parser's own errors: a malformed body
        raise ApiError(400, f"the upload is not a well-formed multipart body ({type(exc).__name__})") from None
    finally:
        receiver.close()
    return receiver.upload


class _PartReceiver:
    """The multipart parser's callbacks: the file part written to ``folder`` as it arrives, the
    other fields kept as text; the first error found is kept in ``error`` (the caller raises it)."""

    def __init__(self, upload: Upload, folder: Path, file_field: str, max_field_bytes: int) -> None:
        self.upload, self.folder, self.file_field, self.max_field_bytes = upload, folder, file_field, max_field_bytes
        self.error: ApiError | None = None
        self._headers: dict[str, bytes] = {}
        self._field, self._value = b"", b""
        self._name: str | None = None
        self._handle = None
        self._data = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data, "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._headers, self._name, self._handle, self._data = {}, None, None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get("content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        self._name = name
        filename = disposition.get(b"filename")
        if filename is not None and name != self.file_field:
            self.error = ApiError(400, f"the form field {name[:40]!r} holds a file; "
                                       f"send the file in the multipart field '{self.file_field}'")
            return
        if name == self.file_field and filename is not None:
            if self.upload.file is not None:
                self.error = ApiError(400, "send one file per session (a DICOM series as one zip)")
                return
            given = PurePosixPath(filename.decode("utf-8", "replace").replace("\\", "/")).name[:200]
            self.upload.filename = given
            self.upload.file = self.folder / f"upload{_safe_suffix(given)}"
            self._handle = self.upload.file.open("xb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._handle is not None:
            self._handle.write(data[start:end])
        else:
            self._data += data[start:end]
            if len(self._data) > self.max_field_bytes:
                self.error = ApiError(400, f"the form field {self._name!r} is longer than {self.max_field_bytes} bytes")

    def on_part_end(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        elif self._name:
            self.upload.fields[self._name] = bytes(self._data).decode("utf-8", "replace")

    def close(self) -> None:
        """Close the file part left open by a request that ended in the middle of it."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def unpack_zip(archive: Path, target: Path, max_bytes: int) -> Path:
    """Extract a zip of a DICOM series into ``target`` (one flat folder); returns ``target``.

    Members are written under numbered names (DICOM slices are ordered by their positions, not
    their names); links, absolute paths and ``..`` are refused, and the unpacked size is capped.

    Raises:
        ApiError: 400 (not a zip, a member that leaves the archive, no file in it), 413 (unpacks
            to more than ``max_bytes``).
    """
    try:
        archive_file = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise ApiError(400, "the .zip upload is not a zip archive") from None
    with archive_file:
        members = [info for info in archive_file.infolist() if not info.is_dir()]
        for info in members:
            path = PurePosixPath(info.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts:
                raise ApiError(400, f"the zip member {info.filename!r} points outside the archive")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ApiError(400, f"the zip member {info.filename!r} is a link; zip the files themselves")
        if sum(info.file_size for info in members) > max_bytes:
            raise too_large(max_bytes)
        files = [info for info in members if not PurePosixPath(info.filename).name.startswith(".")]
        if not files:
            raise ApiError(400, "the zip holds no file; zip the DICOM series' files")
        target.mkdir()
        written = 0
        try:
            for number, info in enumerate(files):
                name = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(info.filename).name)[:100]
                with archive_file.open(info) as source, (target / f"{number:06d}_{name}").open("xb") as out:
                    while chunk := source.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:  # a member that lies about its size
                            raise too_large(max_bytes)
                        out.write(chunk)
        except (RuntimeError, NotImplementedError, zipfile.BadZipFile, EOFError, zlib.error) as exc:  # encrypted, unknown method, bad CRC
            raise ApiError(400, f"the zip cannot be unpacked ({type(exc).__name__}): zip the files plainly, without a password") from None
    archive.unlink()  # only the unpacked files are kept
    return target
