"""The server itself: is it up, and what it runs (the model, its settings, the limits, what the page offers).

The page's own files are mounted at ``/`` by :func:`medsam2.serve.app.create_app`, after every route.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from fastapi import APIRouter, Request

from medsam2._version import __version__
from medsam2.engine.sanity import LOW_CONFIDENCE
from medsam2.io.colours import PALETTE
from medsam2.io.slicing import AXES
from medsam2.io.windows import WINDOW_CHOICES
from medsam2.serve.deps import ServerState, State
from medsam2.serve.views import LABEL_FORMATS

router = APIRouter()


@router.get("/api/health")
def health() -> dict:
    return {"status": "ok"}


@router.get("/api/info")
def info(state: State, request: Request) -> dict:
    settings, segmenter = state.settings, state.segmenter
    backbone = segmenter.backbone
    plan = backbone.plan
    return {
        "version": __version__,
        "user": getattr(request.state, "user", None),
        "backbone": backbone.name,
        "checkpoint": checkpoint_identity(state),
        "runtime": plan.runtime,
        "precision": plan.precision,
        "device": str(backbone.device),
        "memory": segmenter.memory,
        "settings": asdict(segmenter.settings),
        "limits": {
            "max_sessions": settings.max_sessions,
            "session_idle_minutes": settings.session_idle_minutes,
            "max_upload_mb": settings.max_upload_mb,
            "max_volume_mb": round(settings.max_volume_bytes / 2**20, 1),
            "volume_mb_free": round(max(0, state.store.volume_room()) / 2**20, 1),
            "max_json_mb": settings.max_json_mb,
            "upload_min_kbps": settings.upload_min_kbps,
        },
        "sessions_open": len(state.store),
        "data_folder": settings.data_dir is not None,
        "autosave": settings.save_dir is not None,
        "dicomweb": settings.dicomweb,
        "project": None if settings.project is None else settings.project.name,
        "axes": list(AXES),
        "windows": list(WINDOW_CHOICES),
        "label_formats": list(LABEL_FORMATS),
        "low_confidence": LOW_CONFIDENCE,
        "palette": [[int(v) for v in row] for row in PALETTE],
    }


def checkpoint_identity(state: ServerState) -> dict | None:
    """The model's weights as ``{"name": file name, "sha256": ...}`` (never the path on the server's disk)."""
    checkpoint = getattr(state.segmenter.backbone, "checkpoint", None)
    if not checkpoint:
        return None
    if state.checkpoint_sha256 is None:
        from medsam2.backbones.runtime import file_sha256

        state.checkpoint_sha256 = file_sha256(Path(checkpoint))
    return {"name": Path(checkpoint).name, "sha256": state.checkpoint_sha256}
