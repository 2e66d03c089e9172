"""MONAI Label's own Python client (``monailabel.client``, the protocol 3D Slicer's module and OHIF's
mode speak) against ``serve --project`` on real scans (MSD hippocampus, 35 x 51 x 35 voxels i x j x
k: an i/j swap shows): info, the datastore, the next sample, inference from an ROI and from clicks
(Dice against the reference, and voxel for voxel what the same prompt gives through medsam2's own
Python API), saving a final label, uploading an image, sessions, training started and stopped, the
API key as the client's password, and one answer for each bad request."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

# the test-only client: `make install` puts the monailabel package in without its dependencies
from monailabel.client.client import MONAILabelClient, MONAILabelClientException

from medsam2 import Segmenter
from medsam2.evaluation.metrics import dice
from medsam2.io.readers import load_volume
from medsam2.prompts.types import Box, Point
from tests.serve_helpers import running
from tests.shared_data import shared

CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004")
ANTERIOR = 1
#: measured on hippocampus_001's anterior hippocampus with the bundled weights: the ROI around it
#: 0.548, one click on its middle slice 0.357 (clicks are the weaker prompt on this small, faint
#: structure: docs/monailabel.md)
MIN_ROI_DICE = 0.45
MIN_CLICK_DICE = 0.25
#: one click on the spleen's middle slice of the bundled CT crop (slices 10-18), fetched from the
#: PACS: measured 0.948
MIN_SPLEEN_CLICK_DICE = 0.85


def image_of(case: str):
    return shared("msd_hippocampus", "images", f"{case}.nii.gz")


def reference_of(case: str) -> np.ndarray:
    return load_volume(shared("msd_hippocampus", "labels", f"{case}.nii.gz")).array == ANTERIOR


def roi_of(reference: np.ndarray) -> list[int]:
    """The reference's bounding box as Slicer sends it, [i1, i2, j1, j2, k1, k2]: i's ends flipped,
    as its RAS-to-IJK step does on this scan's LPS-flipped axes."""
    k, j, i = np.nonzero(reference)
    return [int(i.max()), int(i.min()), int(j.min()), int(j.max()), int(k.min()), int(k.max())]


def click_of(reference: np.ndarray) -> list[int]:
    """A foreground click [i, j, k] inside the structure on its middle axial slice: the
    structure's voxel nearest its centroid there."""
    k, j, i = np.nonzero(reference)
    middle = (int(k.min()) + int(k.max())) // 2
    on = k == middle
    near = np.argmin((j[on] - j[on].mean()) ** 2 + (i[on] - i[on].mean()) ** 2)
    return [int(i[on][near]), int(j[on][near]), middle]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Three cases; the last has a final label imported."""
    from medsam2.cli import main

    root = tmp_path_factory.mktemp("monailabel") / "hippo"
    assert main(["project", "init", str(root), "--images", *[str(image_of(c)) for c in CASES]]) == 0
    assert main(["project", "import-labels", str(root), "--labels", str(shared("msd_hippocampus", "labels", f"{CASES[2]}.nii.gz")),
                 "--status", "final"]) == 0
    return root


@pytest.fixture(scope="module")
def server(backbone, project):
    with running(backbone, project=project, train_args=("--epochs", "1", "--labels", "1"), score_cases=False) as (url, state):
        yield url, state


@pytest.fixture()
def client(server, tmp_path):
    return MONAILabelClient(f"{server[0]}/monailabel", tmpdir=str(tmp_path))


def status_of(call) -> int:
    with pytest.raises(MONAILabelClientException) as caught:
        call()
    return caught.value.status_code or int(str(caught.value.msg).split(";")[0].removeprefix("Status: "))


def own_api(backbone, case: str, boxes=(), points=()) -> np.ndarray:
    """What medsam2's Python API gives for the same prompts, written by hand in frame coordinates
    (axial = k on this scan: a frame's columns are i and its rows j)."""
    session = Segmenter(backbone=backbone).open(load_volume(image_of(case)), axis="axial")
    session.add_prompts(1, boxes=list(boxes), points=list(points))
    return session.result(sanity=False).labels == 1


def test_info_lists_the_model_the_strategies_and_the_datastore(client):
    info = client.info()
    assert info["models"]["medsam2"]["type"] == "deepgrow" and info["models"]["medsam2"]["dimension"] == 3
    assert set(info["strategies"]) == {"first", "random", "least-confident"} and "medsam2" in info["trainers"]
    assert info["datastore"]["total"] >= 3 and info["datastore"]["label_tags"]["final"] >= 1
    listing = client.datastore()
    assert set(CASES) <= set(listing["objects"]) and "final" in listing["objects"][CASES[2]]["labels"]
    assert listing["objects"][CASES[0]]["labels"] == {}


def test_next_sample_follows_the_project_strategies(client):
    assert client.next_sample("first", {})["id"] == CASES[0]
    assert client.next_sample("random", {})["id"] in CASES[:2]
    assert status_of(lambda: client.next_sample("TTA", {})) == 404


def test_infer_from_an_roi_matches_the_own_api_and_the_reference(client, backbone):
    reference = reference_of(CASES[0])
    roi = roi_of(reference)
    out, params = client.infer("medsam2", CASES[0], {"roi": roi, "label": "anterior"})
    answer = load_volume(out).array
    assert set(np.unique(answer)) <= {0, 1} and params["label_names"] == {"anterior": 1}
    assert dice(answer > 0, reference) >= MIN_ROI_DICE
    i1, i0, j0, j1, k0, k1 = roi  # by hand: a box on the ROI's middle axial slice, the answer kept inside the ROI
    expected = own_api(backbone, CASES[0], boxes=[Box((k0 + k1) // 2, i0, j0, i1, j1)])
    inside = np.zeros_like(expected)
    inside[k0 : k1 + 1, j0 : j1 + 1, i0 : i1 + 1] = True
    assert np.array_equal(answer > 0, expected & inside)


def test_infer_from_a_click_matches_the_own_api_and_the_reference(client, backbone, project):
    reference = reference_of(CASES[0])
    i, j, k = click_of(reference)
    out, params = client.infer("medsam2", CASES[0], {"foreground": [[i, j, k]], "background": []})
    answer = load_volume(out).array > 0
    assert dice(answer, reference) >= MIN_CLICK_DICE
    expected = own_api(backbone, CASES[0], points=[Point(k, i, j)])
    assert np.array_equal(answer, expected)
    assert params["voxels"] == int(answer.sum())
    autosaves = project / "autosave"  # a project's sessions autosave there; a client's /infer does not
    assert not autosaves.exists() or not any(autosaves.iterdir())


def test_a_saved_final_label_joins_the_project(client, project, tmp_path):
    label = tmp_path / "anterior.nii.gz"
    shutil.copy(shared("msd_hippocampus", "labels", f"{CASES[1]}.nii.gz"), label)
    saved = client.save_label(CASES[1], str(label), tag="final", params={"label_info": []})
    assert saved["status"] == "final" and saved["version"] == 1 and saved["image"] == CASES[1]
    back = load_volume(client.download_label(CASES[1], "final")).array
    assert np.array_equal(back, load_volume(label).array)
    assert client.next_sample("first", {})["id"] == CASES[0]  # 003 is final now: never offered again
    assert client.info()["datastore"]["completed"] == 2
    assert status_of(lambda: client.download_label(CASES[0], "final")) == 404


def test_an_uploaded_image_becomes_a_case(client, server, project):
    """Slicer names an upload after its volume node, spaces and all; the case is segmented by that name."""
    url = server[0]
    assert client.upload_image(str(image_of("hippocampus_006")), "MR hippo 006")["image"] == "MR hippo 006"
    assert (project / "images" / "MR hippo 006.nii.gz").is_file()
    assert "MR hippo 006" in client.datastore()["objects"]
    image = httpx.get(f"{url}/monailabel/datastore/image", params={"image": "MR hippo 006"})
    assert image.status_code == 200 and image.content == image_of("hippocampus_006").read_bytes()
    reference = reference_of("hippocampus_006")
    out, _ = client.infer("medsam2", "MR hippo 006", {"roi": roi_of(reference)})
    assert dice(load_volume(out).array > 0, reference) >= MIN_ROI_DICE  # measured 0.607
    assert status_of(lambda: client.upload_image(str(image_of("hippocampus_006")), "MR hippo 006")) == 409
    assert status_of(lambda: client.upload_image(str(image_of("hippocampus_006")), "../escape")) == 400
    assert status_of(lambda: client.upload_image(str(image_of("hippocampus_006")), 'a"b')) == 400
    # another id whose file would land on that case's image file: refused, the image untouched
    stored = (project / "images" / "MR hippo 006.nii.gz").read_bytes()
    with image_of(CASES[0]).open("rb") as handle:
        clash = httpx.put(f"{url}/monailabel/datastore/", params={"image": "MR hippo 006.nii"}, files={"file": ("x.gz", handle)})
    assert clash.status_code in (400, 409) and (project / "images" / "MR hippo 006.nii.gz").read_bytes() == stored


def test_a_session_image_is_segmented_as_the_case_is(client, server):
    created = client.create_session(str(image_of(CASES[0])))
    session = created["session_id"]
    assert client.get_session(session)["shape_zyx"] == [35, 51, 35]
    reference = reference_of(CASES[0])
    by_session, _ = client.infer("medsam2", "", {"roi": roi_of(reference)}, session_id=session)
    by_case, _ = client.infer("medsam2", CASES[0], {"roi": roi_of(reference)})
    assert np.array_equal(load_volume(by_session).array, load_volume(by_case).array)
    client.remove_session(session)
    assert status_of(lambda: client.get_session(session)) == 404
    # a session of the page is no MONAI Label session: a client cannot reach it by its id
    with image_of(CASES[0]).open("rb") as handle:
        page = httpx.post(f"{server[0]}/api/sessions", files={"file": (image_of(CASES[0]).name, handle)}, timeout=120).json()
    assert status_of(lambda: client.infer("medsam2", "", {"roi": roi_of(reference)}, session_id=page["session"])) == 404
    assert status_of(lambda: client.get_session(page["session"])) == 404
    httpx.delete(f"{server[0]}/api/sessions/{page['session']}")
    # nothing of the calls above stays in the server's folder but the sessions' own
    state = server[1]
    assert not [p for p in state.root.iterdir() if p.name.startswith("opening-")]


def test_training_starts_and_stops(client):
    assert client.train_status(check_if_running=True) is False
    started = client.train_start("medsam2", {})
    assert started["status"] == "RUNNING"
    assert client.train_status(check_if_running=True) is True
    assert status_of(lambda: client.train_start("medsam2", {})) == 429
    assert client.train_stop()["status"] == "STOPPED"
    assert client.train_status(check_if_running=True) is False
    assert status_of(lambda: client.train_start("segmentation_spleen", {})) == 404


@pytest.mark.parametrize(("params", "model", "message"), [
    ({"roi": [0, 9, 0, 9, 40, 50]}, "medsam2", "outside the scan"),
    ({"foreground": [[3, 45, 10, 1]]}, "medsam2", "list of clicks"),
    ({"foreground": [[45, 3, 10]]}, "medsam2", "outside the scan"),  # i and j swapped: i has 35 voxels
    ({"label": "anterior"}, "medsam2", "at least one foreground click"),
    ({"roi": [0, 9, 0, 9, 0, 9], "result_extension": ".exe"}, "medsam2", "result_extension"),
    ({"roi": [0, 9, 0, 9, 0, 9]}, "deepedit_spleen", "no model"),
    ({"foreground": [[3, 4, 10 ** 400]]}, "medsam2", "no scan is that large"),
    ({"roi": [0, 9, 0, 9, 0, 9], "result_dtype": "float64"}, "medsam2", "result_dtype"),
])
def test_a_bad_infer_gets_one_line(server, params, model, message):
    url = server[0]
    answer = httpx.post(f"{url}/monailabel/infer/{model}", params={"image": CASES[0]},
                        files={"params": (None, json.dumps(params))}, timeout=120)
    assert answer.status_code in (400, 404) and message in answer.json()["error"]
    assert "\n" not in answer.json()["error"]


def test_other_bodies_of_infer_and_login(server):
    """A urlencoded /infer body is read as MONAI Label's own server reads it; a scribbles label
    file, an unknown output and a login that is not a form each get one line."""
    url = server[0]
    roi = roi_of(reference_of(CASES[0]))
    form = httpx.post(f"{url}/monailabel/infer/medsam2", params={"image": CASES[0], "output": "json"},
                      data={"params": json.dumps({"roi": roi})}, timeout=120)
    assert form.status_code == 200 and form.json()["voxels"] > 0
    scribbles = httpx.post(f"{url}/monailabel/infer/medsam2", params={"image": CASES[0]},
                           files={"params": (None, json.dumps({"roi": roi})), "label": ("scribbles.nii.gz", b"x")})
    assert scribbles.status_code == 400 and "'label' holds a file; send the file in the multipart field 'file'" in scribbles.json()["error"]
    seg = httpx.post(f"{url}/monailabel/infer/medsam2", params={"image": CASES[0], "output": "dicom_seg"},
                     files={"params": (None, json.dumps({"roi": roi}))})
    assert seg.status_code == 400 and "output" in seg.json()["error"]
    multipart_login = httpx.post(f"{url}/monailabel/auth/token", files={"password": (None, "x")})
    assert multipart_login.status_code == 400


def test_an_nrrd_answer_and_the_json_alone(server, tmp_path):
    url = server[0]
    roi = roi_of(reference_of(CASES[0]))
    image = httpx.post(f"{url}/monailabel/infer/medsam2", params={"image": CASES[0], "output": "image"},
                       files={"params": (None, json.dumps({"roi": roi, "result_extension": ".nrrd"}))}, timeout=120)
    assert image.status_code == 200 and image.headers["content-disposition"].endswith('.nrrd"')
    (tmp_path / "answer.nrrd").write_bytes(image.content)
    assert load_volume(tmp_path / "answer.nrrd").array.shape == (35, 51, 35)
    only_json = httpx.post(f"{url}/monailabel/infer/medsam2", params={"image": CASES[0], "output": "json"},
                           files={"params": (None, json.dumps({"roi": roi}))}, timeout=120)
    assert only_json.json()["voxels"] == int((load_volume(tmp_path / "answer.nrrd").array > 0).sum())
    # Slicer asks as soon as a point is placed: a background click alone finds nothing, and says so
    nothing = httpx.post(f"{url}/monailabel/infer/medsam2", params={"image": CASES[0], "output": "json"},
                         files={"params": (None, json.dumps({"foreground": [], "background": [[3, 3, 3]]}))}, timeout=120)
    assert nothing.status_code == 200 and nothing.json()["voxels"] == 0


def test_the_api_key_is_the_clients_password(backbone, project, tmp_path):
    with running(backbone, project=project, api_key="s3cret-key", score_cases=False) as (url, _):
        client = MONAILabelClient(f"{url}/monailabel", tmpdir=str(tmp_path))
        assert client.auth_enabled() is True
        assert status_of(client.info) == 401
        assert status_of(lambda: client.auth_token("ana", "wrong")) == 401
        client.update_auth(client.auth_token("ana", "s3cret-key"))
        assert client.auth_valid_token() is True
        assert client.info()["models"]["medsam2"]["type"] == "deepgrow"
        refused = httpx.put(f"{url}/monailabel/datastore/", params={"image": "x"}, files={"file": ("x.nii.gz", b"0")})
        assert refused.status_code == 401


def test_no_project_no_datastore(backbone, tmp_path):
    with running(backbone, score_cases=False) as (url, _):
        client = MONAILabelClient(f"{url}/monailabel", tmpdir=str(tmp_path))
        assert client.info()["datastore"]["total"] == 0 and client.info()["strategies"] == {}
        assert status_of(lambda: client.next_sample("first", {})) == 404
        assert status_of(client.datastore) == 404
        session = client.create_session(str(image_of(CASES[0])))["session_id"]
        out, params = client.infer("medsam2", "", {"roi": roi_of(reference_of(CASES[0]))}, session_id=session)
        assert dice(load_volume(out).array > 0, reference_of(CASES[0])) >= MIN_ROI_DICE
        assert params["label_names"] == {"structure": 1}


def test_uploads_take_the_scan_cap_and_a_viewer_origin_its_preflight(backbone, project):
    """An image upload larger than the JSON cap passes (it is a file upload); a browser viewer on
    an --allowed-origin (OHIF) gets its CORS preflight answered without a key."""
    image = image_of("hippocampus_006")
    assert image.stat().st_size > 0.05 * 2**20
    ohif = "http://ohif.example:3000"
    with running(backbone, project=project, max_json_mb=0.05, api_key="k3y-for-ohif", allowed_origins=(ohif,),
                 score_cases=False) as (url, _):
        key = {"Authorization": "Bearer k3y-for-ohif"}
        with image.open("rb") as handle:
            added = httpx.put(f"{url}/monailabel/datastore/", params={"image": "capped_006"}, headers=key,
                              files={"file": (image.name, handle)})
        assert added.status_code == 200, added.text
        too_big = httpx.post(f"{url}/monailabel/activelearning/first", headers=key, content=b"{" + b" " * 60_000 + b"}")
        assert too_big.status_code == 413
        preflight = httpx.options(f"{url}/monailabel/infer/medsam2", headers={
            "Origin": ohif, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ohif
        other = httpx.options(f"{url}/monailabel/infer/medsam2", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers


def test_ohif_names_a_series_of_the_pacs_and_saves_a_seg_there(backbone, tmp_path, monkeypatch):
    """OHIF's MONAI Label mode names the series on screen by its SeriesInstanceUID and sends its
    label as raw voxels (``label.bin``): with ``--dicomweb`` the series is fetched from the PACS and
    segmented, and the saved label is stored on the PACS as a DICOM SEG of that series."""
    import pydicom

    from medsam2.io.dicom_seg import read_dicom_seg
    from medsam2.io.dicomweb import PASSWORD_VARIABLE, USER_VARIABLE
    from tests import orthanc as pacs_helpers
    from tests.dicom_helpers import bundled_ct_series
    from tests.serve_helpers import SPLEEN

    if not pacs_helpers.available():
        pytest.skip("Orthanc and its DICOMweb plugin: `make test` installs them")
    monkeypatch.setenv(USER_VARIABLE, pacs_helpers.USER)
    monkeypatch.setenv(PASSWORD_VARIABLE, pacs_helpers.PASSWORD)
    files, reference = bundled_ct_series(tmp_path / "crop", first=10, count=9)
    spleen = reference == SPLEEN
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    with pacs_helpers.orthanc(tmp_path / "pacs") as pacs:
        pacs.upload(files)
        with running(backbone, dicomweb=pacs.dicomweb.replace("http://", "dicomweb://")) as (url, _):
            client = MONAILabelClient(f"{url}/monailabel", tmpdir=str(tmp_path))
            i, j, k = click_of(spleen)
            out, _ = client.infer("medsam2", series_uid, {"foreground": [[i, j, k]], "result_extension": ".nrrd",
                                                          "result_dtype": "uint16", "result_compress": False})
            answer = load_volume(out).array
            assert answer.dtype == np.uint16 and dice(answer > 0, spleen) >= MIN_SPLEEN_CLICK_DICE
            expected = Segmenter(backbone=backbone).open(load_volume(tmp_path / "crop"), axis="axial")
            expected.add_prompts(1, points=[Point(k, i, j)])
            assert np.array_equal(answer > 0, expected.result(sanity=False).labels == 1)
            raw = tmp_path / "label.bin"
            spleen.astype(np.uint8).tofile(raw)  # (k, j, i) C order: i fastest, as OHIF sends it
            saved = client.save_label(series_uid, str(raw), params={"label_info": [{"name": "spleen", "idx": 1}]})
            assert saved["stored"] == "dicom-seg"
            assert status_of(lambda: client.infer("medsam2", "1.2.3.999", {"foreground": [[1, 1, 1]]})) == 404
        with pacs.client() as orthanc_client:
            instances = orthanc_client.get("/instances", params={"expand": ""}).json()
            stored = next(i for i in instances if i["MainDicomTags"]["SOPInstanceUID"] == saved["label"])
            (tmp_path / "seg.dcm").write_bytes(orthanc_client.get(f"/instances/{stored['ID']}/file").content)
    assert np.array_equal(read_dicom_seg(tmp_path / "seg.dcm", load_volume(tmp_path / "crop")) > 0, spleen)


def test_moving_through_cases_never_fills_the_server(backbone, project, tmp_path):
    """With room for two sessions, one of them the page's, a client going case after case gets
    each answered: the sessions it left behind make room, the page's session stays."""
    with running(backbone, project=project, max_sessions=2, score_cases=False) as (url, _):
        with image_of(CASES[2]).open("rb") as handle:
            page = httpx.post(f"{url}/api/sessions", files={"file": (image_of(CASES[2]).name, handle)}, timeout=120)
        assert page.status_code == 200, page.text
        client = MONAILabelClient(f"{url}/monailabel", tmpdir=str(tmp_path))
        for case in CASES:
            out, _ = client.infer("medsam2", case, {"roi": roi_of(reference_of(case))})
            assert load_volume(out).array.any()
        assert httpx.get(f"{url}/api/sessions/{page.json()['session']}").status_code == 200
