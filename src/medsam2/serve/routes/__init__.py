"""The REST API under ``/api``, one module per resource; :data:`ROUTERS` in the order the app includes them.

- :mod:`.pages`: the server itself (health, info: the model, the limits, what the page offers).
- :mod:`.data`: the scans under ``--data``.
- :mod:`.dicomweb`: the series on the ``--dicomweb`` PACS.
- :mod:`.sessions`: opening a scan, a session's info and scan, closing it.
- :mod:`.objects`: prompts, propagation, corrections (and erasing), adapting, undo.
- :mod:`.label_maps`: a label map opened onto a session as objects to correct.
- :mod:`.images`: the study's other images of a session, and which the model sees.
- :mod:`.results`: the label map, saving it to the PACS, the report.
- :mod:`.project`: ``serve --project``: the cases, the next one, saving versions, training.
- :mod:`.autosaves`: the sessions' labels autosaved in ``--save-dir``, listed and opened again.
- :mod:`.monailabel`, :mod:`.monailabel_datastore`: MONAI Label's protocol under ``/monailabel``
  (3D Slicer, OHIF, its client): the app, inference and sessions; the datastore.
"""

from __future__ import annotations

from medsam2.serve.routes import (
    autosaves,
    data,
    dicomweb,
    images,
    label_maps,
    monailabel,
    monailabel_datastore,
    objects,
    pages,
    project,
    results,
    sessions,
)

ROUTERS = (pages.router, data.router, dicomweb.router, sessions.router, objects.router, label_maps.router, images.router,
           results.router, project.router,
           monailabel.router, monailabel_datastore.router, autosaves.router)
