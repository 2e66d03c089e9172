"""The model-free edits on the REST API: removing an object's small islands (the bundled CT's
spleen opened with a stray 48-voxel blob) and locking it, one line for each bad request."""

from __future__ import annotations

import httpx

from tests.engine.test_islands import SPLEEN, spleen_with_a_blob  # noqa: F401 (the fixture)
from tests.serve.test_serve_api import error_of
from tests.serve_helpers import running


def test_the_islands_route(backbone, spleen_with_a_blob, tmp_path):  # noqa: F811
    import SimpleITK as sitk

    ct_path, spleen, blobbed = spleen_with_a_blob
    labels = sitk.GetImageFromArray(blobbed)
    labels.CopyInformation(sitk.ReadImage(str(ct_path)))
    sitk.WriteImage(labels, str(tmp_path / "blobbed.nii.gz"))
    with running(backbone) as (url, _), httpx.Client(timeout=120) as client:
        with ct_path.open("rb") as handle:
            session = client.post(f"{url}/api/sessions", files={"file": (ct_path.name, handle)}).json()["session"]
        base = f"{url}/api/sessions/{session}"
        with (tmp_path / "blobbed.nii.gz").open("rb") as handle:
            assert client.post(f"{base}/labels", files={"file": ("blobbed.nii.gz", handle)}).status_code == 200
        error_of(client.post(f"{base}/objects/{SPLEEN}/islands", json={"min_voxels": 0}), 400)
        answer = client.post(f"{base}/objects/{SPLEEN}/islands", json={})
        assert answer.status_code == 200 and answer.json()["islands"]["removed_voxels"] == 48
        assert "one island" in error_of(client.post(f"{base}/objects/{SPLEEN}/islands"), 400)
        assert "no object" in error_of(client.post(f"{base}/objects/7/islands"), 400)
        locked = client.patch(f"{base}/objects/{SPLEEN}", json={"locked": True})
        assert locked.status_code == 200 and locked.json()["objects"][0]["locked"] is True
        assert '"locked"' in error_of(client.patch(f"{base}/objects/{SPLEEN}", json={}), 400)
