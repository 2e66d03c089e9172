"""What the server tests share: a small scan, a server on a loopback port, and reading streamed lines."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import SimpleITK as sitk

from medsam2 import Segmenter, load_volume
from medsam2.cli.demo import sample_paths
from medsam2.evaluation.protocols import middle_slice_box
from medsam2.serve.runner import start_in_thread
from medsam2.serve.settings import ServeSettings

SPLEEN = 1


def write_crop(folder: Path, first: int = 10, count: int = 9) -> tuple[Path, np.ndarray]:
    """Slices first..first+count-1 of the bundled CT as NIfTI, and the spleen's reference there."""
    ct_path, seg_path = sample_paths()
    ct, seg = sitk.ReadImage(str(ct_path)), sitk.ReadImage(str(seg_path))
    path = folder / "crop.nii.gz"
    sitk.WriteImage(ct[:, :, first : first + count], str(path))
    reference = sitk.GetArrayFromImage(seg[:, :, first : first + count]) == SPLEEN
    return path, reference


def spleen_box(reference: np.ndarray) -> dict:
    """The reference box of the spleen's middle slice, as the API takes it."""
    box = middle_slice_box(reference)
    return {"slice": box.frame, "box": [box.x0, box.y0, box.x1, box.y1]}


@contextmanager
def running(backbone, engine=None, **settings):
    """A server on a free loopback port over the tests' cached backbone (``engine``: the engine's
    settings, None for the defaults); yields (base URL, server state)."""
    server = start_in_thread(ServeSettings(port=0, **settings), Segmenter(backbone=backbone, settings=engine))
    try:
        yield server.url.rstrip("/"), server.server.config.app.state.medsam2
    finally:
        server.stop()


def lines(response: httpx.Response) -> list[dict]:
    """The JSON lines of a streamed answer."""
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def labels_of(client: httpx.Client, url: str, session: str, folder: Path, format: str = "nii.gz") -> np.ndarray:
    """The session's label map, downloaded and read back."""
    response = client.get(f"{url}/api/sessions/{session}/labels", params={"format": format})
    assert response.status_code == 200, response.text
    path = folder / f"downloaded.{format}"
    path.write_bytes(response.content)
    return load_volume(path).array
