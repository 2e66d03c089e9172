"""`medsam2 serve --project DIR` on real scans (MSD hippocampus): the case list, the next case by
strategy, a case opened with the active model, saves as versions (conflicts kept), the version
files, the background training (finished, failed, cancelled), a newly activated model used by the
next session without a restart, and one line for each bad request."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from medsam2.evaluation.metrics import dice
from medsam2.evaluation.protocols import middle_slice_box
from medsam2.io.readers import load_volume
from medsam2.project.store import open_project
from tests.serve.test_serve_api import error_of
from tests.serve_helpers import running
from tests.shared_data import shared

CASES = ("hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006")
ANTERIOR = 1
#: one box on the anterior hippocampus's middle slice (bundled weights) gives 0.58-0.80 on these four
#: cases (measured); below this the session did not segment the structure
MIN_DICE = 0.45


def reference_of(case: str) -> np.ndarray:
    return load_volume(shared("msd_hippocampus", "labels", f"{case}.nii.gz")).array == ANTERIOR


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project of four cases; the last two have final labels imported."""
    from medsam2.cli import main

    root = tmp_path_factory.mktemp("serve-project") / "hippo"
    images = [str(shared("msd_hippocampus", "images", f"{case}.nii.gz")) for case in CASES]
    labels = [str(shared("msd_hippocampus", "labels", f"{case}.nii.gz")) for case in CASES[2:]]
    assert main(["project", "init", str(root), "--images", *images]) == 0
    assert main(["project", "import-labels", str(root), "--labels", *labels, "--status", "final"]) == 0
    return root


@pytest.fixture(scope="module")
def server(backbone, project):
    # no background scoring here: the tests below set scores by hand (it has its own test)
    with running(backbone, project=project, train_args=("--epochs", "1", "--labels", "1"), score_cases=False) as (url, state):
        with httpx.Client(timeout=300) as client:
            yield url, state, client


def open_case(client, url, case, **body) -> dict:
    answer = client.post(f"{url}/api/project/cases/{case}/sessions", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def segment_case(client, url, case) -> str:
    """A session on ``case`` (the scan alone) with one box on the anterior hippocampus's middle slice, propagated."""
    session = open_case(client, url, case, version=0)["session"]
    box = middle_slice_box(reference_of(case))
    prompt = client.post(f"{url}/api/sessions/{session}/objects/{ANTERIOR}/prompts",
                         json={"box": {"slice": box.frame, "box": [box.x0, box.y0, box.x1, box.y1]}, "name": "anterior"})
    assert prompt.status_code == 200, prompt.text
    assert client.post(f"{url}/api/sessions/{session}/propagate", json={}).status_code == 200
    return session


def save(client, url, session, status, user=None) -> dict:
    answer = client.post(f"{url}/api/sessions/{session}/project", json={"status": status, "user": user})
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for_training(client, url, seconds=600.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = client.get(f"{url}/api/project/train").json()
        if status["state"] != "running":
            return status
        time.sleep(1.0)
    raise AssertionError("the training did not end")


def test_the_case_list_and_the_next_case(server):
    url, _, client = server
    listing = client.get(f"{url}/api/project").json()
    assert [c["case"] for c in listing["cases"]] == list(CASES)
    assert [c["status"] for c in listing["cases"]] == ["unlabelled", "unlabelled", "final", "final"]
    assert [c["final_version"] for c in listing["cases"]] == [None, None, 1, 1]
    assert listing["active_model"] == "bundled" and listing["models"] == [] and listing["training"] == "idle"
    assert client.get(f"{url}/api/project/next").json()["case"] == CASES[0]
    assert client.get(f"{url}/api/project/next", params={"skip": CASES[0]}).json()["case"] == CASES[1]
    draws = [client.get(f"{url}/api/project/next", params={"strategy": "random", "seed": seed}).json()["case"] for seed in range(6)]
    assert set(draws) == set(CASES[:2])  # never a final case; both open ones come up
    again = [client.get(f"{url}/api/project/next", params={"strategy": "random", "seed": seed}).json()["case"] for seed in range(6)]
    assert draws == again


def test_least_confident_picks_the_lowest_score(server, project):
    url, _, client = server
    with open_project(project) as store:  # the two open cases, scored by hand: the lower one comes first
        store.record_score(CASES[1], "bundled", 0.31)
        store.record_score(CASES[0], "bundled", 0.92)
    answer = client.get(f"{url}/api/project/next", params={"strategy": "least-confident"}).json()
    assert answer["case"] == CASES[1] and answer["confidence"] == pytest.approx(0.31)


def test_a_case_is_segmented_saved_as_versions_and_scored(server, project, tmp_path):
    url, _, client = server
    session = segment_case(client, url, CASES[0])
    draft = save(client, url, session, "draft", user="ana")
    assert (draft["version"], draft["status"], draft["based_on"], draft["conflict"]) == (1, "draft", None, False)
    assert draft["user"] == "ana" and draft["model"] == "bundled" and draft["seconds"] > 0
    final = save(client, url, session, "final")
    assert (final["version"], final["based_on"], final["conflict"]) == (2, 1, False)
    file = client.get(f"{url}/api/project/cases/{CASES[0]}/versions/2/labels")
    assert file.status_code == 200
    (tmp_path / "v2.nii.gz").write_bytes(file.content)
    saved = load_volume(tmp_path / "v2.nii.gz")
    assert saved.spacing == load_volume(shared("msd_hippocampus", "images", f"{CASES[0]}.nii.gz")).spacing
    assert dice(saved.array == ANTERIOR, reference_of(CASES[0])) > MIN_DICE
    versions = client.get(f"{url}/api/project/cases/{CASES[0]}/versions").json()["versions"]
    assert [(v["version"], v["status"]) for v in versions] == [(1, "draft"), (2, "final")]
    assert versions[1]["prompts"]["objects"][0]["prompted_slices"] == [middle_slice_box(reference_of(CASES[0])).frame]
    listing = client.get(f"{url}/api/project").json()
    assert listing["counts"]["by_status"] == {"unlabelled": 1, "draft": 0, "final": 3}
    with open_project(project) as store:
        assert CASES[0] in store.scores("bundled")
        prompts = store.latest(CASES[0]).provenance.prompts
    assert prompts["objects"][0]["label"] == ANTERIOR and len(prompts["objects"][0]["prompted_slices"]) == 1
    assert client.get(f"{url}/api/project/next").json()["case"] == CASES[1]  # the final case is done
    client.delete(f"{url}/api/sessions/{session}")


def test_a_saved_version_reopens_as_editable_objects(server, project, tmp_path):
    """The newest version by default, any version by number; exactly as saved; corrected like a
    prompted object (its other slices kept); a save builds on the newest version."""
    url, _, client = server
    opened = open_case(client, url, CASES[0])
    assert (opened["shown"], opened["based_on"]) == (2, 2)
    assert [(o["label"], o["name"]) for o in opened["summary"]["objects"]] == [(ANTERIOR, "anterior")]
    session = opened["session"]
    (tmp_path / "v2.nii.gz").write_bytes(client.get(f"{url}/api/project/cases/{CASES[0]}/versions/2/labels").content)
    (tmp_path / "open.nii.gz").write_bytes(client.get(f"{url}/api/sessions/{session}/labels?format=nii.gz").content)
    saved, shown = load_volume(tmp_path / "v2.nii.gz").array, load_volume(tmp_path / "open.nii.gz").array
    assert np.array_equal(shown, saved)  # voxel for voxel
    reference = reference_of(CASES[0])
    missed = [f for f in range(len(reference)) if reference[f].any() and not (saved[f] == ANTERIOR).any()]
    target = missed[0] if missed else int(np.flatnonzero(reference.any(axis=(1, 2)))[0])
    rows, cols = np.nonzero(reference[target])
    box = [int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())]
    answer = client.post(f"{url}/api/sessions/{session}/objects/{ANTERIOR}/corrections", json={"box": {"slice": target, "box": box}})
    assert answer.status_code == 200, answer.text
    (tmp_path / "corrected.nii.gz").write_bytes(client.get(f"{url}/api/sessions/{session}/labels?format=nii.gz").content)
    corrected = load_volume(tmp_path / "corrected.nii.gz").array
    assert (corrected[target] == ANTERIOR).any()
    untouched = [f for f in range(len(saved)) if (saved[f] == ANTERIOR).any() and f != target]
    assert np.array_equal(corrected[untouched], saved[untouched])
    older = open_case(client, url, CASES[0], version=1)
    assert (older["shown"], older["based_on"]) == (1, 2)
    assert save(client, url, older["session"], "draft")["conflict"] is False  # a deliberate return to v1
    bare = open_case(client, url, CASES[0], version=0)
    assert bare["shown"] is None and "summary" not in bare
    assert "case 'hippocampus_001' has no version 9" in error_of(
        client.post(f"{url}/api/project/cases/{CASES[0]}/sessions", json={"version": 9}), 400)
    for each in (session, older["session"], bare["session"]):
        client.delete(f"{url}/api/sessions/{each}")


def test_two_editors_of_one_case_keep_both_versions(server):
    url, _, client = server
    first, second = segment_case(client, url, CASES[1]), segment_case(client, url, CASES[1])
    assert save(client, url, first, "draft")["conflict"] is False
    kept = save(client, url, second, "draft")
    assert kept["conflict"] is True and kept["version"] == 2 and kept["based_on"] is None
    assert client.get(f"{url}/api/project").json()["counts"]["conflicts"] == 1
    for session in (first, second):
        client.delete(f"{url}/api/sessions/{session}")


def test_training_in_the_background_then_a_new_model_for_new_sessions(server, project):
    url, state, client = server
    started = client.post(f"{url}/api/project/train")
    assert started.status_code == 202 and started.json()["state"] == "running"
    assert error_of(client.post(f"{url}/api/project/train"), 409).startswith("the project is training already")
    status = wait_for_training(client, url)
    assert status["state"] == "finished" and status["exit_code"] == 0, status["log"]
    assert "model v1:" in status["log"] and (project / status["log_file"]).is_file()
    listing = client.get(f"{url}/api/project").json()
    assert [m["name"] for m in listing["models"]] == ["v1"]
    from medsam2.cli import main

    assert main(["project", "activate", str(project), "v1"]) == 0  # whatever its Dice: the swap is tested
    before = state.segmenter
    opened = open_case(client, url, CASES[1])
    assert opened["model"] == "v1" and state.model_name == "v1" and state.segmenter is not before
    assert client.delete(f"{url}/api/sessions/{opened['session']}").status_code == 200


def test_a_case_opened_again_is_not_encoded_again(server, project):
    """The project keeps its cases' features on disk for the active model (loaded fresh above)."""
    url, state, client = server
    counts = []
    for _ in range(2):
        session = segment_case(client, url, CASES[1])
        cache = state.store.get(session).session.cache
        counts.append((cache.stats().misses, cache.disk_reads))
        client.delete(f"{url}/api/sessions/{session}")
    (encoded, _), (again, read) = counts
    assert encoded > 3 and again == 0 and read == encoded
    assert len(list((project / "cache" / "features").glob("*/*.pt"))) >= encoded


def test_a_cancelled_training_activates_nothing(server, project):
    url, _, client = server
    models = [m["name"] for m in client.get(f"{url}/api/project").json()["models"]]
    assert client.post(f"{url}/api/project/train").status_code == 202
    time.sleep(2.0)
    assert client.delete(f"{url}/api/project/train").status_code == 204
    status = wait_for_training(client, url, 60)
    assert status["state"] == "cancelled"
    assert [m["name"] for m in client.get(f"{url}/api/project").json()["models"]] == models
    assert error_of(client.delete(f"{url}/api/project/train"), 409) == "no training is running"


@pytest.mark.parametrize(
    "method, path, body, status, message",
    [
        ("post", "/api/project/cases/nobody/sessions", {}, 400, "the project holds no case 'nobody'"),
        ("get", "/api/project/next?strategy=smartest", None, 400, "unknown strategy 'smartest'"),
        ("get", "/api/project/cases/hippocampus_001/versions/9/labels", None, 400, "case 'hippocampus_001' has no version 9"),
        ("post", "/api/project/cases/hippocampus_001/sessions", {"axis": "diagonal"}, 400, "axis"),
    ],
)
def test_bad_project_requests(server, method, path, body, status, message):
    url, _, client = server
    answer = getattr(client, method)(f"{url}{path}", **({} if body is None else {"json": body}))
    assert message in error_of(answer, status)


def test_saves_that_are_refused(server, tmp_path):
    url, _, client = server
    session = open_case(client, url, CASES[1], version=0)["session"]
    for status in ("final", "draft"):  # a case opened empty: an empty save would bury its newest version (v2)
        message = error_of(client.post(f"{url}/api/sessions/{session}/project", json={"status": status}), 400)
        assert message.startswith("nothing is segmented in this session yet") and "v2" in message
    assert "status" in error_of(client.post(f"{url}/api/sessions/{session}/project", json={"status": "done"}), 400)
    with open(shared("msd_hippocampus", "images", f"{CASES[1]}.nii.gz"), "rb") as handle:
        upload = client.post(f"{url}/api/sessions", files={"file": ("scan.nii.gz", handle)}).json()["session"]
    message = error_of(client.post(f"{url}/api/sessions/{upload}/project", json={"status": "draft"}), 400)
    assert message.startswith("this session was not opened from the project")
    for opened in (session, upload):
        client.delete(f"{url}/api/sessions/{opened}")


def test_open_cases_are_scored_in_the_background_and_their_features_kept(lite_backbone, tmp_path):
    """``project score`` in the background from the server's start: every case without a final
    label gets the active model's confidence (least-confident ranks by it) and a scored case
    opens with its slices read from the project's feature folder, none encoded."""
    from medsam2.cli import main

    root = tmp_path / "scored"
    images = [str(shared("msd_hippocampus", "images", f"{case}.nii.gz")) for case in CASES]
    assert main(["project", "init", str(root), "--images", *images]) == 0
    labels = [str(shared("msd_hippocampus", "labels", f"{case}.nii.gz")) for case in CASES[2:]]
    assert main(["project", "import-labels", str(root), "--labels", *labels]) == 0
    # the plain backbone (the tests' shared in-memory cache would answer before the disk)
    with running(lite_backbone, project=root) as (url, state), httpx.Client(timeout=300) as client:
        deadline = time.monotonic() + 600
        while (run := client.get(f"{url}/api/project/scores").json())["state"] == "running" and time.monotonic() < deadline:
            time.sleep(1.0)
        assert run["state"] == "finished" and run["exit_code"] == 0, run["log"]
        scores = run["scores"]
        assert set(scores) == set(CASES[:2]) and all(0.0 < v <= 1.0 for v in scores.values()), scores
        chosen = client.get(f"{url}/api/project/next", params={"strategy": "least-confident"}).json()
        assert chosen["case"] == min(scores, key=scores.get)
        assert client.get(f"{url}/api/project").json()["scoring"] == "finished"
        session = segment_case(client, url, CASES[0])
        cache = state.store.get(session).session.cache
        assert cache.stats().misses == 0 and cache.disk_reads > 3


def test_a_server_without_a_project_answers_404(backbone):
    with running(backbone) as (url, _):
        with httpx.Client(timeout=60) as client:
            for path in ("/api/project", "/api/project/next", "/api/project/train"):
                assert "start it with 'medsam2 serve --project DIR'" in error_of(client.get(f"{url}{path}"), 404)


def test_a_key_per_annotator_names_who_saved(backbone, project):
    """``--api-keys``: each annotator's key opens the server and their saves carry their name;
    a save may not claim another name; no key or a wrong one is refused."""
    ana, ben = "ana-" + "a" * 20, "ben-" + "b" * 20
    with running(backbone, project=project, api_users=(("ana", ana), ("ben", ben)), score_cases=False) as (url, _):
        with httpx.Client(timeout=300, headers={"Authorization": f"Bearer {ana}"}) as client:
            assert client.get(f"{url}/api/info").json()["user"] == "ana"
            session = segment_case(client, url, CASES[1])
            assert save(client, url, session, "draft")["user"] == "ana"
            claimed = client.post(f"{url}/api/sessions/{session}/project", json={"status": "draft", "user": "ben"})
            assert "this API key belongs to ana" in error_of(claimed, 403)
            client.delete(f"{url}/api/sessions/{session}")
        with httpx.Client(timeout=60) as client:
            assert error_of(client.get(f"{url}/api/project"), 401).startswith("API key missing")
            wrong = client.get(f"{url}/api/project", headers={"Authorization": "Bearer " + "c" * 24})
            assert error_of(wrong, 401).startswith("API key wrong")
            assert client.get(f"{url}/api/info", headers={"Authorization": f"Bearer {ben}"}).json()["user"] == "ben"


@pytest.mark.parametrize(
    "text, message",
    [
        ("ana\n", "line 1: write one annotator per line as NAME KEY"),
        ("ana short\n", "line 1: ana's key is shorter than 16 characters"),
        ("ana " + "k" * 20 + "\nana " + "j" * 20 + "\n", "line 2: ana or its key appears twice"),
        ("# nobody yet\n\n", "names nobody"),
    ],
)
def test_a_bad_keys_file_is_one_line(tmp_path, capsys, text, message):
    from tests.cli.test_cli import assert_one_line_error, run_cli

    keys = tmp_path / "keys.txt"
    keys.write_text(text)
    code, err = run_cli(["serve", "--api-keys", keys, "--port", "0"], capsys)
    assert_one_line_error(code, err, 2, message)
