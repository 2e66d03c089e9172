"""The model-free edits on the REST API: removing an object's small islands (the bundled CT's
spleen opened with a stray 48-voxel blob), locking it and the 3D brush, one line for each bad
request."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
from PIL import Image

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

        # the 3D brush: a dab erased from the spleen, on three slices; bad strokes are one line each
        z = int(np.argmax(spleen.reshape(len(spleen), -1).sum(axis=1)))
        rows, cols = np.nonzero(spleen[z])
        dab = np.zeros(spleen.shape[1:], np.uint8)
        dab[int(rows.mean()) - 1 : int(rows.mean()) + 2, int(cols.mean()) - 1 : int(cols.mean()) + 2] = 255
        png = io.BytesIO()
        Image.fromarray(dab).save(png, format="PNG")
        stroke = {"slice": z, "png_base64": base64.b64encode(png.getvalue()).decode()}
        erased = client.post(f"{base}/objects/{SPLEEN}/brush", json={**stroke, "radius_mm": 4.5, "erase": True})
        assert erased.status_code == 200, erased.text
        assert erased.json()["brush"]["changed_slices"] == [z - 1, z, z + 1]
        again = client.post(f"{base}/objects/{SPLEEN}/brush", json={**stroke, "radius_mm": 4.5, "erase": True})
        assert "erases nothing" in error_of(again, 400)
        assert "to erase" in error_of(client.post(f"{base}/objects/9/brush", json={**stroke, "radius_mm": 3, "erase": True}), 400)
        assert "low above high" in error_of(client.post(f"{base}/objects/9/brush", json={**stroke, "radius_mm": 3, "within": [5, 1]}), 400)
        error_of(client.post(f"{base}/objects/9/brush", json={**stroke, "radius_mm": -1}), 400)
        assert "outside the scan" in error_of(client.post(f"{base}/objects/9/brush", json={**stroke, "slice": 99, "radius_mm": 3}), 400)
        created = client.post(f"{base}/objects/9/brush", json={**stroke, "radius_mm": 3, "name": "marker"})
        assert created.status_code == 200 and created.json()["brush"]["created"] is True
        assert [o["name"] for o in created.json()["objects"] if o["label"] == 9] == ["marker"]
        # smoothing: the spleen's median; a bad method is one line
        assert "median" in error_of(client.post(f"{base}/objects/{SPLEEN}/smooth", json={"method": "blur"}), 400)
        smoothed = client.post(f"{base}/objects/{SPLEEN}/smooth", json={})
        assert smoothed.status_code == 200 and smoothed.json()["smooth"]["radius_voxels"] == [1, 1, 1]
        assert "smaller than two voxels" in error_of(client.post(f"{base}/objects/{SPLEEN}/smooth", json={"kernel_mm": 1}), 400)
