"""The image series on the ``--dicomweb`` PACS; a session opens one by its study and series UIDs,
and ``POST .../push`` (:mod:`.results`) stores a label map back there."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter

from medsam2.errors import MedSAM2Error
from medsam2.serve.deps import Settings
from medsam2.serve.errors import ApiError, one_line

router = APIRouter()


@router.get("/api/dicomweb")
def pacs_series(settings: Settings) -> dict:
    """The image series on the ``--dicomweb`` PACS (QIDO-RS), newest study first."""
    if settings.dicomweb is None:
        raise ApiError(404, "this server has no PACS; start it with --dicomweb URL")
    from medsam2.io.dicomweb import list_series

    try:
        entries = list_series(settings.dicomweb)
    except MedSAM2Error as exc:
        raise ApiError(502, one_line(exc)) from None
    return {"server": settings.dicomweb, "series": [asdict(entry) for entry in entries]}
