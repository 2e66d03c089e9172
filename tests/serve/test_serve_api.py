"""`medsam2 serve` over HTTP on a loopback port: every endpoint, the agreement with `segment`, and
every bad input the API names (status code, one-line message, nothing left behind)."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

import httpx
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from medsam2 import Box, ObjectPrompts, Segmenter, UsageError, load_volume
from medsam2.serve.settings import ServeSettings
from tests.io.test_reliability import _dicom_series
from tests.serve_helpers import SPLEEN, labels_of, lines, running, spleen_box, write_crop


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A data folder: the CT crop, a DICOM series folder, and a link that leads outside it."""
    root = tmp_path_factory.mktemp("serve-data")
    crop, reference = write_crop(root)
    _dicom_series(root / "series")
    outside = tmp_path_factory.mktemp("outside") / "secret.nii.gz"
    outside.write_bytes(crop.read_bytes())
    (root / "outside.nii.gz").symlink_to(outside)
    return root, crop, reference


@pytest.fixture(scope="module")
def server(backbone, data):
    with running(backbone, data_dir=data[0], max_sessions=3) as (url, state):
        with httpx.Client(timeout=300) as client:
            yield url, state, client


def png_base64(mask: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def open_crop(client, url, crop, **fields) -> dict:
    with crop.open("rb") as handle:
        response = client.post(f"{url}/api/sessions", files={"file": ("crop.nii.gz", handle)}, data=fields)
    assert response.status_code == 200, response.text
    return response.json()


def propagated(client, url, session, reference) -> list[dict]:
    prompt = client.post(f"{url}/api/sessions/{session}/objects/{SPLEEN}/prompts", json={"box": spleen_box(reference), "name": "spleen"})
    assert prompt.status_code == 200, prompt.text
    answer = client.post(f"{url}/api/sessions/{session}/propagate", json={"masks": True})
    assert answer.status_code == 200, answer.text
    return lines(answer)


def error_of(response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    message = response.json()["error"]
    assert message and "\n" not in message and "Traceback" not in message
    return message


def test_health_info_and_the_data_list(server, data):
    url, state, client = server
    assert client.get(f"{url}/api/health").json() == {"status": "ok"}
    info = client.get(f"{url}/api/info").json()
    assert info["backbone"] == "litemedsam" and info["limits"]["max_sessions"] == 3 and info["data_folder"]
    scans = {scan["path"]: scan["kind"] for scan in client.get(f"{url}/api/data").json()["scans"]}
    assert scans == {"crop.nii.gz": "file", "series": "dicom"}  # the link out of the folder is not listed
    page = client.get(f"{url}/")
    assert page.status_code == 200 and "niivue" not in page.headers["content-type"] and "app.js" in page.text
    assert client.get(f"{url}/niivue.js").headers["content-type"].startswith("text/javascript")
    assert "/api/sessions/{session_id}/propagate" in client.get(f"{url}/openapi.json").json()["paths"]


def test_upload_prompt_propagate_gives_what_segment_gives(server, data, backbone, tmp_path):
    url, state, client = server
    _, crop, reference = data
    opened = open_crop(client, url, crop)
    session = opened["session"]
    assert opened["shape_zyx"] == list(reference.shape) and opened["axis"] == "axial" and opened["window"]["name"] == "abdomen"
    assert opened["frame_axes"] == {"slice": 2, "x": 0, "y": 1}
    streamed = propagated(client, url, session, reference)
    slices = [line for line in streamed if "slice" in line]
    assert slices and all(set(line) >= {"label", "slice", "done", "total"} for line in slices)
    assert [line["done"] for line in slices] == list(range(1, len(slices) + 1))
    final = streamed[-1]
    assert final["finished"] and final["objects"][0]["label"] == SPLEEN and final["pending"] == []
    served = labels_of(client, url, session, tmp_path)
    box = spleen_box(reference)
    prompts = [ObjectPrompts(SPLEEN, "spleen", boxes=[Box(box["slice"], *box["box"])])]
    expected = Segmenter(backbone=backbone).segment(load_volume(crop), prompts)
    assert np.array_equal(served, expected.labels)
    # each streamed slice mask is that slice of the final label map (one object: no overlaps)
    rows, cols = reference.shape[1:]
    for line in (line for line in slices if "rle" in line):
        flat = np.zeros(rows * cols, bool)
        for start, length in zip(line["rle"][::2], line["rle"][1::2]):
            flat[start : start + length] = True
        assert np.array_equal(flat.reshape(rows, cols), expected.labels[line["slice"]] == SPLEEN)
    report = client.get(f"{url}/api/sessions/{session}/report").json()
    assert report["input"] == "crop.nii.gz" and report["objects"][0]["volume_ml"] == expected.report.objects[0].volume_ml
    volume_file = tmp_path / "volume.nii.gz"
    volume_file.write_bytes(client.get(f"{url}/api/sessions/{session}/volume").content)
    shown, original = load_volume(volume_file), load_volume(crop)
    assert np.array_equal(shown.array, original.array) and np.allclose(shown.origin, original.origin)
    folder = state.store.get(session).folder
    assert client.delete(f"{url}/api/sessions/{session}").json() == {"deleted": session}
    assert not folder.exists()
    error_of(client.get(f"{url}/api/sessions/{session}/labels"), 404)


def test_corrections_stream_change_the_slice_and_undo_restores(server, data, tmp_path):
    url, state, client = server
    _, crop, reference = data
    opened = client.post(f"{url}/api/sessions", json={"path": "crop.nii.gz"})
    session = opened.json()["session"]
    propagated(client, url, session, reference)
    before = labels_of(client, url, session, tmp_path)
    target = spleen_box(reference)["slice"] + 2
    spleen = before[target] == SPLEEN
    erase = np.zeros_like(spleen)
    erase[: spleen.shape[0] // 2 + np.nonzero(spleen)[0].min() // 2] = True  # the upper part of the spleen
    erase &= spleen
    answer = client.post(f"{url}/api/sessions/{session}/objects/{SPLEEN}/corrections",
                         json={"erase": {"slice": int(target), "png_base64": png_base64(erase)}})
    streamed = lines(answer)
    assert streamed[0]["slice"] == target and streamed[-1]["finished"] and streamed[-1]["correction"]["slice"] == target
    after = labels_of(client, url, session, tmp_path)
    assert not (after[target] == SPLEEN)[erase].any() and (after[target] == SPLEEN).sum() < spleen.sum()
    undone = client.post(f"{url}/api/sessions/{session}/undo")
    assert undone.status_code == 200 and undone.json()["objects"][0]["label"] == SPLEEN
    assert np.array_equal(labels_of(client, url, session, tmp_path), before)
    redone = client.post(f"{url}/api/sessions/{session}/redo")  # the erase again, exactly
    assert redone.status_code == 200 and np.array_equal(labels_of(client, url, session, tmp_path), after)
    assert "nothing to redo" in error_of(client.post(f"{url}/api/sessions/{session}/redo"), 400)
    renamed = client.patch(f"{url}/api/sessions/{session}/objects/{SPLEEN}", json={"name": "lien"})
    assert renamed.json()["objects"][0]["name"] == "lien"
    assert client.delete(f"{url}/api/sessions/{session}/objects/{SPLEEN}").json()["objects"] == []
    assert not labels_of(client, url, session, tmp_path).any()
    client.post(f"{url}/api/sessions/{session}/undo")  # the object back, with its new name
    assert client.post(f"{url}/api/sessions/{session}/undo").json()["objects"][0]["name"] == "spleen"
    assert np.array_equal(labels_of(client, url, session, tmp_path), after)
    assert "nothing to fill" in error_of(client.post(f"{url}/api/sessions/{session}/objects/{SPLEEN}/fill"), 400)  # no gap
    client.post(f"{url}/api/sessions/{session}/undo")  # before the erase
    click = client.post(f"{url}/api/sessions/{session}/objects/{SPLEEN}/corrections",
                        json={"point": {"slice": int(target), "point": [5, 5], "positive": False}})
    assert click.status_code == 200 and lines(click)[-1]["finished"]
    client.delete(f"{url}/api/sessions/{session}")


def test_a_label_map_opens_onto_a_session_as_objects_to_correct(server, data, tmp_path):
    """POST .../labels: the uploaded map comes back voxel for voxel, named; a correction of it
    keeps its other slices; a map of another grid, a detached header that reaches out of the
    upload, a label already there and bad names are refused in one line."""
    url, _, client = server
    _, crop, reference = data
    image = sitk.ReadImage(str(crop))
    truth = reference.astype(np.uint8) * SPLEEN
    started = truth.copy()
    started[: len(truth) // 2] = 0  # last week's work stopped halfway
    sitk.WriteImage(_like(started, image), str(tmp_path / "old.nii.gz"))
    session = open_crop(client, url, crop)["session"]
    with (tmp_path / "old.nii.gz").open("rb") as handle:
        answer = client.post(f"{url}/api/sessions/{session}/labels", files={"file": ("old.nii.gz", handle)},
                             data={"names": '{"1": "spleen"}'})
    assert answer.status_code == 200, answer.text
    opened = answer.json()
    assert opened["opened"] == [SPLEEN] and [(o["label"], o["name"]) for o in opened["objects"]] == [(SPLEEN, "spleen")]
    assert np.array_equal(labels_of(client, url, session, tmp_path), started)
    below = len(truth) // 2 - 1
    rows, cols = np.nonzero(reference[below])
    box = [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]
    corrected = client.post(f"{url}/api/sessions/{session}/objects/{SPLEEN}/corrections", json={"box": {"slice": below, "box": box}})
    assert corrected.status_code == 200, corrected.text
    now = labels_of(client, url, session, tmp_path)
    assert now[below].any() and np.array_equal(now[below + 1 :], started[below + 1 :])

    def refused(name, payload, **form) -> str:
        answer = client.post(f"{url}/api/sessions/{session}/labels", files={"file": (name, payload)}, data=form)
        return error_of(answer, 400)

    assert "already in the session" in refused("old.nii.gz", (tmp_path / "old.nii.gz").read_bytes())
    sitk.WriteImage(_like(truth[:-1], image[:, :, :-1]), str(tmp_path / "short.nii.gz"))
    assert "has size" in refused("short.nii.gz", (tmp_path / "short.nii.gz").read_bytes())
    header = b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\nElementDataFile = /etc/hostname\n"
    escaped = refused("evil.mhd", header)
    assert "outside the folder it may read from" in escaped and "/tmp" not in escaped
    assert "names is JSON" in refused("old.nii.gz", (tmp_path / "old.nii.gz").read_bytes(), names="[1]")
    client.delete(f"{url}/api/sessions/{session}")


def _like(array: np.ndarray, image) -> sitk.Image:
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def test_a_dicom_series_opens_as_a_zip_and_from_the_data_folder(server, data, tmp_path):
    url, state, client = server
    root = data[0]
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted((root / "series").iterdir()):
            out.write(path, f"study/series/{path.name}")
    with archive.open("rb") as handle:
        uploaded = client.post(f"{url}/api/sessions", files={"file": ("series.zip", handle)}).json()
    listed = client.post(f"{url}/api/sessions", json={"path": "series"}).json()
    expected = load_volume(root / "series")
    assert uploaded["shape_zyx"] == listed["shape_zyx"] == list(expected.shape)
    shown = tmp_path / "shown.nii.gz"
    shown.write_bytes(client.get(f"{url}/api/sessions/{uploaded['session']}/volume").content)
    assert np.array_equal(load_volume(shown).array, expected.array)
    for opened in (uploaded, listed):
        client.delete(f"{url}/api/sessions/{opened['session']}")


def test_two_sessions_propagating_at_once_each_get_their_own_answer(server, data, tmp_path):
    url, state, client = server
    _, crop, reference = data
    sessions = [open_crop(client, url, crop)["session"] for _ in range(2)]
    answers: dict[str, list] = {}

    def work(session: str) -> None:
        with httpx.Client(timeout=300) as own:
            answers[session] = propagated(own, url, session, reference)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    first, second = (labels_of(client, url, s, tmp_path) for s in sessions)
    assert all(answers[s][-1]["finished"] for s in sessions) and np.array_equal(first, second) and (first == SPLEEN).any()
    for session in sessions:
        client.delete(f"{url}/api/sessions/{session}")


def test_bad_requests_get_a_status_and_one_line(server, data, tmp_path):
    url, state, client = server
    _, crop, reference = data
    folders_before = set(state.root.iterdir())
    assert "no session" in error_of(client.get(f"{url}/api/sessions/nope/labels"), 404)
    error_of(client.post(f"{url}/api/sessions/nope/propagate"), 404)
    error_of(client.delete(f"{url}/api/sessions/nope"), 404)
    # opening
    for path, words in (("../secret.nii.gz", "under the data folder"), ("/etc/passwd", "under the data folder"),
                        ("outside.nii.gz", "outside the data folder"), ("missing.nii.gz", "no scan")):
        assert words in error_of(client.post(f"{url}/api/sessions", json={"path": path}), 400)
    not_a_scan = client.post(f"{url}/api/sessions", files={"file": ("scan.nii.gz", b"this is not a scan")})
    assert "scan.nii.gz" in error_of(not_a_scan, 400) and str(state.root) not in not_a_scan.text
    assert "field 'file'" in error_of(client.post(f"{url}/api/sessions", files={"other": ("x.txt", b"x")}), 400)
    assert "multipart" in error_of(client.post(f"{url}/api/sessions", content=b"raw", headers={"content-type": "text/plain"}), 400)
    error_of(client.post(f"{url}/api/sessions", json={"path": "crop.nii.gz", "axis": "diagonal"}), 400)
    error_of(client.post(f"{url}/api/sessions", json={"path": "crop.nii.gz", "colour": "red"}), 400)
    bad_zip = client.post(f"{url}/api/sessions", files={"file": ("series.zip", b"PK not really")})
    assert "not a zip" in error_of(bad_zip, 400)
    assert set(state.root.iterdir()) == folders_before  # nothing of a refused opening stays
    # prompts
    session = open_crop(client, url, crop)["session"]
    base = f"{url}/api/sessions/{session}"
    rows, cols = reference.shape[1:]
    box = spleen_box(reference)
    assert "exactly one" in error_of(client.post(f"{base}/objects/1/prompts", json={}), 400)
    two = {"box": box, "point": {"slice": 1, "point": [3, 3]}}
    assert "exactly one" in error_of(client.post(f"{base}/objects/1/prompts", json=two), 400)
    error_of(client.post(f"{base}/objects/1/prompts", json={"box": {"slice": 4, "box": [1, 2, 3]}}), 400)
    assert "outside" in error_of(client.post(f"{base}/objects/1/prompts", json={"box": {"slice": 4, "box": [10, 10, 900, 20]}}), 400)
    assert "slice" in error_of(client.post(f"{base}/objects/1/prompts", json={"box": {"slice": 99, "box": [1, 2, 30, 40]}}), 400)
    error_of(client.post(f"{base}/objects/0/prompts", json={"box": box}), 400)
    wrong_size = png_base64(np.ones((rows + 1, cols), bool))
    assert "pixels" in error_of(client.post(f"{base}/objects/1/prompts", json={"mask": {"slice": 4, "png_base64": wrong_size}}), 400)
    assert "base64" in error_of(client.post(f"{base}/objects/1/prompts", json={"mask": {"slice": 4, "png_base64": "%%%"}}), 400)
    not_png = base64.b64encode(b"plain text").decode()
    assert "PNG" in error_of(client.post(f"{base}/objects/1/prompts", json={"mask": {"slice": 4, "png_base64": not_png}}), 400)
    assert "nothing to propagate" in error_of(client.post(f"{base}/propagate"), 400)
    assert "nothing to undo" in error_of(client.post(f"{base}/undo"), 400)
    assert "nothing to redo" in error_of(client.post(f"{base}/redo"), 400)
    assert "no object" in error_of(client.delete(f"{base}/objects/3"), 400)
    error_of(client.patch(f"{base}/objects/3", json={"name": ""}), 400)
    assert "no object" in error_of(client.patch(f"{base}/objects/3", json={"name": "liver"}), 400)
    assert "no object" in error_of(client.post(f"{base}/objects/5/corrections", json={"box": box}), 400)
    assert "unknown format" in error_of(client.get(f"{base}/labels", params={"format": "exe"}), 400)
    assert client.post(f"{base}/objects/1/prompts", json={"box": box}).status_code == 200
    assert "label 7" in error_of(client.post(f"{base}/propagate", json={"labels": [7]}), 400)
    # nothing above changed the session: it has one pending object and an all-zero label map
    assert client.get(base).json()["pending"] == [1]
    assert not labels_of(client, url, session, tmp_path).any()
    client.delete(base)


def test_uploads_over_the_limit_get_413_and_leave_nothing(backbone, data):
    _, crop, _ = data
    with running(backbone, max_upload_mb=0.01) as (url, state), httpx.Client(timeout=60) as client:
        with crop.open("rb") as handle:
            assert "limit" in error_of(client.post(f"{url}/api/sessions", files={"file": ("crop.nii.gz", handle)}), 413)

        def chunks():  # no Content-Length: the cap applies while it streams
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.nii.gz\"\r\n\r\n"
            for _ in range(40):
                yield b"x" * 1024

        streamed = client.post(f"{url}/api/sessions", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        error_of(streamed, 413)
        assert list(state.root.iterdir()) == []


def test_sessions_beyond_the_limit_get_429_and_idle_ones_expire(backbone, data):
    _, crop, _ = data
    with running(backbone, max_sessions=1, session_idle_minutes=0.02) as (url, state), httpx.Client(timeout=60) as client:
        first = open_crop(client, url, crop)["session"]
        with crop.open("rb") as handle:
            refused = client.post(f"{url}/api/sessions", files={"file": ("crop.nii.gz", handle)})
        assert "1 session is open, the most" in error_of(refused, 429) and int(refused.headers["retry-after"]) > 0
        deadline = time.monotonic() + 20
        while client.get(f"{url}/api/sessions/{first}").status_code == 200:  # each look keeps it alive, so wait between
            assert time.monotonic() < deadline, "the idle session was never closed"
            time.sleep(2.5)
        error_of(client.get(f"{url}/api/sessions/{first}"), 404)
        assert list(state.root.iterdir()) == []
        open_crop(client, url, crop)  # the slot is free again


def test_an_api_key_guards_every_api_call(backbone):
    with running(backbone, api_key="s3cret-key") as (url, state), httpx.Client(timeout=60) as client:
        assert "missing" in error_of(client.get(f"{url}/api/info"), 401)
        assert "wrong" in error_of(client.get(f"{url}/api/health", headers={"Authorization": "Bearer nope"}), 401)
        error_of(client.post(f"{url}/api/sessions", json={"path": "x"}), 401)
        assert client.get(f"{url}/api/info", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert client.get(f"{url}/").status_code == 200  # the page itself asks for the key
    with pytest.raises(UsageError, match="API key"):
        ServeSettings(host="0.0.0.0").checked()
    assert ServeSettings(host="0.0.0.0", api_key="k").checked().api_key == "k"


def _serve(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medsam2.cli", "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_the_command_prints_its_url_and_removes_its_folder_on_exit(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env.pop("MEDSAM2_API_KEY", None)
    process = _serve("--port", "0", "--quiet", env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("open http://127.0.0.1:"), line
        url = line.split()[1]
        assert httpx.get(f"{url}api/health", timeout=30).json() == {"status": "ok"}
        assert [p.name.startswith("medsam2-serve-") for p in tmp_path.iterdir()] == [True]
        busy_port = url.rstrip("/").rsplit(":", 1)[1]
        refused = subprocess.run([sys.executable, "-m", "medsam2.cli", "serve", "--port", busy_port], capture_output=True, text=True,
                                 env=env, timeout=120)
        assert refused.returncode == 2 and "in use" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped" in out and list(tmp_path.iterdir()) == []
    open_to_all = subprocess.run([sys.executable, "-m", "medsam2.cli", "serve", "--host", "0.0.0.0"], capture_output=True, text=True,
                                 env=env, timeout=120)
    assert open_to_all.returncode == 2 and "API key" in open_to_all.stderr and len(open_to_all.stderr.strip().splitlines()) == 1
