"""``medsam2 serve``: an annotation server (FastAPI) with a web page (NiiVue), on the engine's session.

Modules: :mod:`.settings` (the server's options and their checks), :mod:`.store` (sessions, their
limits and expiry), :mod:`.uploads` (uploads streamed to disk under a size cap, DICOM zips),
:mod:`.datadir` (scans under ``--data``, never outside it), :mod:`.bodies` (the request bodies),
:mod:`.app` (the app), :mod:`.routes` (the routes, one module per
resource), :mod:`.deps` (what they share), :mod:`.runner` (the uvicorn server on a bound socket).
"""
