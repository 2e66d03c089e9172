"""A real PACS: Orthanc with its DICOMweb plugin on a loopback port. A series uploaded to it is
segmented over DICOMweb, its SEG and RT-STRUCT are pushed back and read back from Orthanc; a
server that is unreachable, refuses, lacks the series or does not answer DICOM gives one line."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from medsam2 import load_volume
from medsam2.cli import main
from medsam2.io.dicom_seg import read_dicom_seg
from medsam2.io.dicomweb import PASSWORD_VARIABLE, USER_VARIABLE, list_series
from medsam2.io.rtstruct import read_rtstruct
from tests import orthanc as pacs_helpers
from tests.dicom_helpers import bundled_ct_series
from tests.test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.skipif(not pacs_helpers.available(), reason="Orthanc and its DICOMweb plugin: `make test` installs them")


def _series_url(root: str, files) -> str:
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    return root.replace("http://", "dicomweb://") + f"/studies/{first.StudyInstanceUID}/series/{first.SeriesInstanceUID}"


@pytest.fixture()
def credentials(monkeypatch):
    monkeypatch.setenv(USER_VARIABLE, pacs_helpers.USER)
    monkeypatch.setenv(PASSWORD_VARIABLE, pacs_helpers.PASSWORD)


def test_segment_over_dicomweb_pushes_seg_and_rtstruct_back(tmp_path, credentials, capsys):
    files, reference = bundled_ct_series(tmp_path / "crop", first=10, count=9)
    spleen = reference == 1
    rows, cols = np.nonzero(spleen[4])
    box = f"4:{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    with pacs_helpers.orthanc(tmp_path / "pacs") as pacs:
        pacs.upload(files)
        url = _series_url(pacs.dicomweb, files)
        listed = list_series(pacs.dicomweb)  # QIDO-RS, as `serve --dicomweb` lists it
        assert [(e.series_uid, e.modality, e.instances) for e in listed] == [(pydicom.dcmread(files[0]).SeriesInstanceUID, "CT", 9)]
        assert main(["segment", url, "--name", "spleen", "--box", box, "-o", str(tmp_path / "spleen.dcm"), "--push"]) == 0
        printed = capsys.readouterr().out
        assert "stored" in printed and pacs_helpers.PASSWORD not in printed
        assert main(["segment", url, "--name", "spleen", "--box", box, "-o", str(tmp_path / "spleen_rt.dcm"),
                     "--format", "rtstruct", "--push", "--quiet"]) == 0
        local_seg = pydicom.dcmread(tmp_path / "spleen.dcm")
        client = DICOMwebClient(pacs.dicomweb, session=create_session_from_user_pass(pacs_helpers.USER, pacs_helpers.PASSWORD))
        stored = {item["00080060"]["Value"][0]: item["0020000E"]["Value"][0]
                  for item in client.search_for_series(local_seg.StudyInstanceUID)}
        assert set(stored) == {"CT", "SEG", "RTSTRUCT"}
        (seg_back,) = client.retrieve_series(local_seg.StudyInstanceUID, stored["SEG"])
        assert seg_back.SOPInstanceUID == local_seg.SOPInstanceUID
        seg_back.save_as(tmp_path / "from_pacs.dcm")
        volume = load_volume(tmp_path / "crop")
        from_pacs = read_dicom_seg(tmp_path / "from_pacs.dcm", volume)
        np.testing.assert_array_equal(from_pacs, read_dicom_seg(tmp_path / "spleen.dcm", volume))
        dice = 2 * np.logical_and(from_pacs == 1, spleen).sum() / (from_pacs.astype(bool).sum() + spleen.sum())
        assert dice >= 0.9
        (rt_back,) = client.retrieve_series(local_seg.StudyInstanceUID, stored["RTSTRUCT"])
        rt_back.save_as(tmp_path / "rt_from_pacs.dcm")
        assert (read_rtstruct(tmp_path / "rt_from_pacs.dcm", volume) == 1).sum() > 0.9 * spleen.sum()


def test_a_pacs_that_refuses_lacks_or_holds_a_broken_series_gives_one_line(tmp_path, capsys, monkeypatch):
    files, _ = bundled_ct_series(tmp_path / "crop", first=10, count=6)
    out = tmp_path / "out.dcm"
    with pacs_helpers.orthanc(tmp_path / "pacs") as pacs:
        pacs.upload(files[:2] + files[3:])  # slice 2 missing on the PACS
        url = _series_url(pacs.dicomweb, files)
        code, err = run_cli(["segment", url, "--box", "1:10,10,40,40", "-o", out, "--push"], capsys)
        assert_one_line_error(code, err, 1, "refused the series (HTTP 401)")  # no credentials
        monkeypatch.setenv(USER_VARIABLE, pacs_helpers.USER)
        monkeypatch.setenv(PASSWORD_VARIABLE, pacs_helpers.PASSWORD)
        code, err = run_cli(["segment", url, "--box", "1:10,10,40,40", "-o", out, "--push"], capsys)
        assert_one_line_error(code, err, 1, "unevenly spaced")
        missing = url.rsplit("/", 1)[0] + "/1.2.3.4.5"
        code, err = run_cli(["segment", missing, "--box", "1:10,10,40,40", "-o", out], capsys)
        assert_one_line_error(code, err, 1, "has no such series")
        assert len(pacs.series_uids()) == 1  # nothing pushed
        user_in_url = url.replace("dicomweb://", f"dicomweb://{pacs_helpers.USER}:{pacs_helpers.PASSWORD}@")
        code, err = run_cli(["segment", user_in_url, "--box", "1:10,10,40,40", "-o", out], capsys)
        assert_one_line_error(code, err, 2, "not in the URL")
        assert pacs_helpers.PASSWORD not in err[0]
    code, err = run_cli(["segment", url, "--box", "1:10,10,40,40", "-o", out], capsys)  # the server has stopped
    assert_one_line_error(code, err, 1, "cannot reach the DICOMweb server")
    code, err = run_cli(["segment", tmp_path / "crop", "--box", "1:10,10,40,40", "-o", out, "--push"], capsys)
    assert_one_line_error(code, err, 2, "give a dicomweb:// input")
    assert not out.exists()


class _NotDicom(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"<html><body>Welcome to the hospital portal</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_server_that_does_not_answer_dicom_gives_one_line(tmp_path, capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotDicom)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"dicomweb://127.0.0.1:{server.server_address[1]}/dicom-web/studies/1.2.3/series/1.2.3.4"
        code, err = run_cli(["segment", url, "--box", "1:10,10,40,40", "-o", tmp_path / "out.dcm"], capsys)
        assert_one_line_error(code, err, 1, "did not answer the series with DICOM")
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "out.dcm").exists()
