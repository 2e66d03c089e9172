"""A second image of the study on the REST API: a crop of the bundled CT with other intensities
(another "sequence") is uploaded onto a session of the CT, comes back on the scan's grid, and the
model sees it once chosen (the spleen's labels equal the engine's from that image, bit for bit),
then the scan again; each bad request is one line, and the volume budget counts the image."""

from __future__ import annotations

import httpx
import numpy as np
import SimpleITK as sitk

from medsam2 import Box, Segmenter, load_volume
from medsam2.cli.demo import sample_paths
from medsam2.io.resample import resample_onto
from tests.io.test_resample import other_sequence
from tests.serve.test_serve_api import error_of
from tests.serve_helpers import SPLEEN, labels_of, lines, running, spleen_box


def _write(volume, path) -> None:
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    sitk.WriteImage(image, str(path))


def _spleen(client, base) -> None:
    client.delete(f"{base}/objects/{SPLEEN}")
    reference = load_volume(sample_paths()[1]).array == SPLEEN
    assert client.post(f"{base}/objects/{SPLEEN}/prompts", json={"box": spleen_box(reference)}).status_code == 200
    assert lines(client.post(f"{base}/propagate"))[-1]["finished"]


def spleen_seen_through_another_sequence(backbone, folder):
    """``folder``/t1c.nii.gz written (another "sequence" of the bundled CT, on its own grid), and
    the engine's session on the CT that sees it: the spleen propagated from its box there; (the
    session, the image on the scan's grid, the spleen's labels)."""
    ct_path, seg_path = sample_paths()
    scan = load_volume(ct_path)
    _write(other_sequence(ct_path), folder / "t1c.nii.gz")
    on_grid, _ = resample_onto(load_volume(folder / "t1c.nii.gz"), scan)
    box = spleen_box(load_volume(seg_path).array == SPLEEN)
    engine = Segmenter(backbone=backbone).open(scan)
    engine.use_image(on_grid)
    engine.add_prompts(SPLEEN, boxes=[Box(box["slice"], *box["box"])])
    return engine, on_grid, engine.result(sanity=False).labels


def test_a_second_image_shown_and_seen_by_the_model(backbone, tmp_path):
    ct_path, _ = sample_paths()
    scan = load_volume(ct_path)
    _write(other_sequence(ct_path, shift_mm=5000.0), tmp_path / "elsewhere.nii.gz")
    _, on_grid, expected = spleen_seen_through_another_sequence(backbone, tmp_path)
    with running(backbone) as (url, state), httpx.Client(timeout=300) as client:
        with ct_path.open("rb") as handle:
            session = client.post(f"{url}/api/sessions", files={"file": (ct_path.name, handle)}).json()["session"]
        base = f"{url}/api/sessions/{session}"
        with (tmp_path / "t1c.nii.gz").open("rb") as handle:
            added = client.post(f"{base}/images", files={"file": ("t1c.nii.gz", handle)})
        assert added.status_code == 200, added.text
        images = added.json()["images"]
        assert [(i["index"], i["name"], i["resampled"], i["model_input"]) for i in images] == [
            (0, ct_path.name, False, True), (1, "t1c.nii.gz", True, False)]
        shown = client.get(f"{base}/images/1")
        assert shown.status_code == 200
        (tmp_path / "shown.nii.gz").write_bytes(shown.content)
        assert np.allclose(load_volume(tmp_path / "shown.nii.gz").array, on_grid.array)
        _spleen(client, base)
        on_scan = labels_of(client, url, session, tmp_path)
        chosen = client.put(f"{base}/model-input", json={"image": 1})
        assert [i["model_input"] for i in chosen.json()["images"]] == [False, True]
        _spleen(client, base)
        assert np.array_equal(labels_of(client, url, session, tmp_path), expected)
        assert not np.array_equal(expected, on_scan)
        assert client.put(f"{base}/model-input", json={"image": 0}).status_code == 200
        _spleen(client, base)
        assert np.array_equal(labels_of(client, url, session, tmp_path), on_scan)
        # bad requests
        assert "no image 5" in error_of(client.put(f"{base}/model-input", json={"image": 5}), 404)
        assert "no image 2" in error_of(client.get(f"{base}/images/2"), 404)
        error_of(client.put(f"{base}/model-input", json={"image": 1, "window": "nonsense"}), 400)
        with (tmp_path / "elsewhere.nii.gz").open("rb") as handle:
            far = client.post(f"{base}/images", files={"file": ("elsewhere.nii.gz", handle)})
        assert "does not overlap the scan" in error_of(far, 400)
        assert "field 'file'" in error_of(client.post(f"{base}/images", files={"other": ("x", b"1")}), 400)
        assert "--data" in error_of(client.post(f"{base}/images", json={"path": "t1c.nii.gz"}), 400)
        for _ in range(2):
            with (tmp_path / "t1c.nii.gz").open("rb") as handle:
                assert client.post(f"{base}/images", files={"file": ("t1c.nii.gz", handle)}).status_code == 200
        with (tmp_path / "t1c.nii.gz").open("rb") as handle:
            assert "at most 3" in error_of(client.post(f"{base}/images", files={"file": ("t1c.nii.gz", handle)}), 400)
        names = [i["name"] for i in client.get(f"{base}/images").json()["images"]]
        assert names == [ct_path.name, "t1c.nii.gz", "t1c.nii.gz (2)", "t1c.nii.gz (3)"]  # told apart
        assert state.store.get(session).held_bytes() == scan.array.nbytes + 3 * on_grid.array.nbytes


def test_the_volume_budget_counts_the_second_image(backbone, tmp_path):
    ct_path, _ = sample_paths()
    _write(other_sequence(ct_path), tmp_path / "t1c.nii.gz")
    budget_mb = (load_volume(ct_path).array.nbytes + 2**19) / 2**20  # the scan and half a megabyte
    with running(backbone, max_volume_mb=budget_mb) as (url, _), httpx.Client(timeout=300) as client:
        with ct_path.open("rb") as handle:
            session = client.post(f"{url}/api/sessions", files={"file": (ct_path.name, handle)}).json()["session"]
        with (tmp_path / "t1c.nii.gz").open("rb") as handle:
            refused = client.post(f"{url}/api/sessions/{session}/images", files={"file": ("t1c.nii.gz", handle)})
        assert "--max-volume-mb" in error_of(refused, 413)


def test_an_image_from_the_data_folder(backbone, tmp_path):
    """JSON ``{"path": ...}`` names an image under ``--data``; a path out of it is refused."""
    ct_path, _ = sample_paths()
    _write(other_sequence(ct_path), tmp_path / "t1c.nii.gz")
    with running(backbone, data_dir=tmp_path) as (url, _), httpx.Client(timeout=300) as client:
        with ct_path.open("rb") as handle:
            session = client.post(f"{url}/api/sessions", files={"file": (ct_path.name, handle)}).json()["session"]
        added = client.post(f"{url}/api/sessions/{session}/images", json={"path": "t1c.nii.gz"})
        assert added.status_code == 200, added.text
        assert [(i["name"], i["resampled"]) for i in added.json()["images"]] == [(ct_path.name, False), ("t1c.nii.gz", True)]
        error_of(client.post(f"{url}/api/sessions/{session}/images", json={"path": "../elsewhere.nii.gz"}), 400)
        assert "no session" in error_of(client.post(f"{url}/api/sessions/nope/images", json={"path": "t1c.nii.gz"}), 404)
