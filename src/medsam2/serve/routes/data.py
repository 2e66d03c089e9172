"""The scans under ``--data`` (none without it); a session opens one by its path there."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from medsam2.serve.datadir import list_scans
from medsam2.serve.deps import Settings

router = APIRouter()


@router.get("/api/data")
def data(settings: Settings) -> dict:
    if settings.data_dir is None:
        return {"scans": []}
    return {"scans": [asdict(entry) for entry in list_scans(settings.data_dir)]}
