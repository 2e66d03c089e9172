"""No lost work (``serve --save-dir``): each change of a session writes its labels to the save
folder before the request answers; after the server restarts the autosave is listed and opens
again with its labels as objects to correct, and later changes go on saving there; the page
warns before an idle session closes and reopens saved work."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from medsam2 import load_volume
from tests.serve.test_serve_api import error_of, open_crop, png_base64, propagated
from tests.serve.test_serve_browser import CHROMIUM, Page, browser  # noqa: F401 (the fixture)
from tests.serve_helpers import SPLEEN, labels_of, lines, running, write_crop


def test_every_change_is_saved_and_a_restart_reopens_it(backbone, tmp_path):
    crop, reference = write_crop(tmp_path)
    saves = tmp_path / "saves"
    with running(backbone, save_dir=saves) as (url, _), httpx.Client(timeout=300) as client:
        session = open_crop(client, url, crop)["session"]
        assert client.get(f"{url}/api/autosaves").json()["autosaves"] == []  # nothing changed yet
        propagated(client, url, session, reference)
        listed = client.get(f"{url}/api/autosaves").json()["autosaves"]
        assert [a["key"] for a in listed] == [session] and listed[0]["objects"] == [{"label": SPLEEN, "name": "spleen"}]
        assert listed[0]["name"] == "crop.nii.gz"
        folder = saves / session
        assert np.array_equal(load_volume(folder / "labels.nii.gz").array, labels_of(client, url, session, tmp_path))
        target = int(np.flatnonzero(reference.reshape(len(reference), -1).any(axis=1))[-1])
        erase = png_base64(reference[target])
        assert lines(client.post(f"{url}/api/sessions/{session}/objects/{SPLEEN}/corrections",
                                 json={"erase": {"slice": target, "png_base64": erase}}))[-1]["finished"]
        corrected = labels_of(client, url, session, tmp_path)
        assert np.array_equal(load_volume(folder / "labels.nii.gz").array, corrected)
    assert np.array_equal(load_volume(saves / session / "scan.nii.gz").array, load_volume(crop).array)
    # a new server on the same folder: the work is there, and opens again
    with running(backbone, save_dir=saves) as (url, _), httpx.Client(timeout=300) as client:
        assert [a["key"] for a in client.get(f"{url}/api/autosaves").json()["autosaves"]] == [session]
        reopened = client.post(f"{url}/api/autosaves/{session}/sessions")
        assert reopened.status_code == 200, reopened.text
        answer = reopened.json()
        assert answer["autosave"] == session and [o["name"] for o in answer["summary"]["objects"]] == ["spleen"]
        again = answer["session"]
        assert np.array_equal(labels_of(client, url, again, tmp_path), corrected)
        assert client.post(f"{url}/api/sessions/{again}/undo").status_code == 200  # the opened map comes off
        assert not load_volume(saves / session / "labels.nii.gz").array.any()  # saved where it came from
        assert [p.name for p in saves.iterdir()] == [session]
        assert "no autosave" in error_of(client.post(f"{url}/api/autosaves/..hidden/sessions"), 404)
        assert "no autosave" in error_of(client.post(f"{url}/api/autosaves/nope/sessions"), 404)
        assert client.delete(f"{url}/api/autosaves/{session}").json() == {"deleted": session}
        assert client.get(f"{url}/api/autosaves").json()["autosaves"] == []


def test_without_a_save_folder_nothing_is_written(backbone, tmp_path):
    crop, reference = write_crop(tmp_path)
    with running(backbone) as (url, state), httpx.Client(timeout=300) as client:
        assert client.get(f"{url}/api/autosaves").json() == {"enabled": False, "autosaves": []}
        session = open_crop(client, url, crop)["session"]
        propagated(client, url, session, reference)
        assert "--save-dir" in error_of(client.post(f"{url}/api/autosaves/{session}/sessions"), 404)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)")
def test_the_page_warns_before_an_idle_session_closes_and_reopens_saved_work(backbone, browser, tmp_path):  # noqa: F811
    from tests.serve_helpers import spleen_box

    crop, reference = write_crop(tmp_path)
    box = spleen_box(reference)
    with running(backbone, save_dir=tmp_path / "saves", session_idle_minutes=0.2) as (url, _):
        page = Page(browser, url + "/", crop)
        x0, y0, x1, y1 = (int(v) for v in box["box"])
        page.drag(page.screen(box["slice"], x0, y0), page.screen(box["slice"], x1, y1))
        page.wait_status("press Propagate")
        page.page.click("#propagate")
        page.page.wait_for_selector("body[data-propagated='1']", timeout=300_000)
        saved = page.save(tmp_path / "saved.nii.gz")
        page.page.wait_for_selector("body[data-expiry-warning='1']", timeout=30_000)  # 12 s idle: warned after 6
        assert "autosaved" in page.page.inner_text("#expiry")
        assert page.errors == [], page.errors
        # a new page (a restart, or the next morning): Saved work reopens the labels
        later = Page(browser, url + "/", None)
        later.page.wait_for_selector("body[data-autosaves='1']", timeout=30_000)
        later.page.select_option("#autosaveList", index=1)
        later.page.click("#openAutosave")
        later.page.wait_for_selector(f"#objects li[data-label='{SPLEEN}']", timeout=60_000)
        later.page.wait_for_function("(document.getElementById('status').textContent || '').includes('reopened')")
        assert np.array_equal(later.save(tmp_path / "reopened.nii.gz"), saved)
        assert later.errors == [], later.errors
