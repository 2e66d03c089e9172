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
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.dicom_helpers import bundled_ct_series

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


def test_serve_lists_opens_and_saves_back_to_the_pacs(tmp_path, credentials, backbone):
    """``serve --dicomweb``: the PACS's series listed (QIDO-RS), one opened (WADO-RS), a box propagated,
    the label map downloaded as DICOM SEG and RT-STRUCT and stored on the PACS (STOW-RS)."""
    import httpx

    from tests.serve_helpers import running

    files, reference = bundled_ct_series(tmp_path / "crop", first=10, count=9)
    spleen = reference == 1
    rows, cols = np.nonzero(spleen[4])
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    with pacs_helpers.orthanc(tmp_path / "pacs") as pacs:
        pacs.upload(files)
        url = pacs.dicomweb.replace("http://", "dicomweb://")
        with running(backbone, dicomweb=url) as (base, _), httpx.Client(timeout=300) as client:
            listed = client.get(f"{base}/api/dicomweb").json()
            assert [s["series_uid"] for s in listed["series"]] == [first.SeriesInstanceUID]
            opened = client.post(f"{base}/api/sessions", json={"dicomweb": {"study": first.StudyInstanceUID,
                                                                         "series": first.SeriesInstanceUID}})
            assert opened.status_code == 200, opened.text
            info = opened.json()
            assert info["dicom"] and info["pacs"] and info["shape_zyx"] == [9, 101, 122]
            session = info["session"]
            box = {"slice": 4, "box": [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]}
            assert client.post(f"{base}/api/sessions/{session}/objects/1/prompts", json={"box": box, "name": "spleen"}).status_code == 200
            assert client.post(f"{base}/api/sessions/{session}/propagate").status_code == 200
            seg = client.get(f"{base}/api/sessions/{session}/labels", params={"format": "dicom-seg"})
            assert seg.status_code == 200 and 'filename="MEDSAM2-TEST_CT_1_seg.dcm"' in seg.headers["content-disposition"]
            (tmp_path / "served.dcm").write_bytes(seg.content)
            volume = load_volume(tmp_path / "crop")
            served = read_dicom_seg(tmp_path / "served.dcm", volume)
            assert 2 * np.logical_and(served == 1, spleen).sum() / ((served == 1).sum() + spleen.sum()) >= 0.9
            rt = client.get(f"{base}/api/sessions/{session}/labels", params={"format": "rtstruct"})
            assert rt.status_code == 200 and pydicom.dcmread(__import__("io").BytesIO(rt.content)).Modality == "RTSTRUCT"
            pushed = client.post(f"{base}/api/sessions/{session}/push", json={"format": "dicom-seg"})
            assert pushed.status_code == 200, pushed.text
            client_pacs = DICOMwebClient(pacs.dicomweb, session=create_session_from_user_pass(pacs_helpers.USER, pacs_helpers.PASSWORD))
            seg_series = [s["0020000E"]["Value"][0] for s in client_pacs.search_for_series(first.StudyInstanceUID)
                          if s["00080060"]["Value"][0] == "SEG"]
            (stored,) = client_pacs.retrieve_series(first.StudyInstanceUID, seg_series[0])
            assert stored.SOPInstanceUID == pushed.json()["stored"]
            stored.save_as(tmp_path / "stored.dcm")
            np.testing.assert_array_equal(read_dicom_seg(tmp_path / "stored.dcm", volume), served)
            # an uploaded NIfTI has no instances to reference, and no PACS to go back to
            from tests.serve_helpers import write_crop

            nifti, _ = write_crop(tmp_path)
            with nifti.open("rb") as handle:
                upload = client.post(f"{base}/api/sessions", files={"file": ("crop.nii.gz", handle)}).json()["session"]
            refused = client.get(f"{base}/api/sessions/{upload}/labels", params={"format": "dicom-seg"})
            assert refused.status_code == 400 and "is not a DICOM series" in refused.json()["error"]
            assert client.post(f"{base}/api/sessions/{upload}/push").status_code == 400
            missing = client.post(f"{base}/api/sessions", json={"dicomweb": {"study": "1.2.3", "series": "1.2.3.4"}})
            assert missing.status_code == 502 and "no such series" in missing.json()["error"]
