"""A real PACS for the tests: Orthanc with its DICOMweb plugin on a free loopback port, storing in a
temporary folder, with HTTP basic authentication; started and stopped by the test that needs it."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "medsam2", "not-a-secret"


def available() -> bool:
    return ORTHANC.exists() and DICOMWEB_PLUGIN.exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class RunningOrthanc:
    """Where the server answers: its REST root and its DICOMweb root (http://127.0.0.1:PORT/dicom-web)."""

    url: str
    dicomweb: str
    storage: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(USER, PASSWORD), timeout=30)

    def upload(self, files: list[Path]) -> None:
        """Store files through Orthanc's own REST API (not DICOMweb: the code under test)."""
        with self.client() as client:
            for path in files:
                response = client.post("/instances", content=path.read_bytes())
                response.raise_for_status()

    def series_uids(self) -> list[str]:
        with self.client() as client:
            series = client.get("/series", params={"expand": ""}).json()
        return [item["MainDicomTags"]["SeriesInstanceUID"] for item in series]


@contextmanager
def orthanc(folder: Path):
    """Orthanc on a free loopback port with storage under ``folder``; stopped (and waited for) on exit."""
    http_port, dicom_port = free_port(), free_port()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    config = {
        "Name": "medsam2-tests", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "HttpTimeout": 30, "StableAge": 1, "SaveJobs": False,
    }
    config_path = folder / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([str(ORTHANC), str(config_path)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/system", auth=(USER, PASSWORD), timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}")
            time.sleep(0.2)
        yield RunningOrthanc(url, f"{url}/dicom-web", storage)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
