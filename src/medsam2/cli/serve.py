"""``medsam2 serve``: the annotation server and its web page, on this machine by default."""

from __future__ import annotations

from pathlib import Path

from medsam2.cli.common import add_memory_option, add_model_options, model_options
from medsam2.errors import UsageError


def add_parser(commands) -> None:
    """The ``serve`` subcommand's options."""

    serve = commands.add_parser(
        "serve",
        help="an annotation server with a web page: open a scan, draw a box, propagate, correct, save",
        description="Serve the web viewer and its REST API (documented at /docs). Binds to 127.0.0.1; another "
        "--host needs an API key (--api-key or MEDSAM2_API_KEY), which every /api call must then send.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    serve.add_argument("--data", help="a folder of scans the page lists and opens (NIfTI, NRRD, MHA, DICOM series folders)")
    serve.add_argument(
        "--dicomweb", metavar="URL",
        help="a PACS's DICOMweb root, dicomweb://HOST:PORT/PATH (dicomwebs:// for https): the page lists its series, opens "
        "them and saves DICOM SEG / RT-STRUCT back (credentials: MEDSAM2_DICOMWEB_USER/_PASSWORD, _TOKEN or ~/.netrc)",
    )
    serve.add_argument("--max-sessions", type=int, default=4, help="scans open at once (default 4); one more gets 429")
    serve.add_argument("--session-idle-minutes", type=float, default=30.0, help="close a session unused this long (default 30)")
    serve.add_argument("--max-upload-mb", type=float, default=2048.0, help="largest upload accepted (default 2048)")
    serve.add_argument("--max-volume-mb", type=float, default=None,
                       help="memory for the open scans' voxels, all sessions together (default: a quarter of this machine's); "
                       "a scan that does not fit is refused from its header with 413")
    serve.add_argument("--max-json-mb", type=float, default=1.0, help="largest JSON request body, masks included (default 1)")
    serve.add_argument("--upload-min-kbps", type=float, default=32.0,
                       help="an upload slower than this on average after its first 10 s is dropped with 408 (default 32)")
    serve.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                       help="a Host name to answer besides localhost, 127.0.0.1, [::1] and --host (repeatable; a proxy's name)")
    serve.add_argument("--allowed-origin", action="append", default=[], metavar="ORIGIN",
                       help="a page origin (https://name[:port]) allowed to change state besides the server's own (repeatable)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every /api call and /docs (default: MEDSAM2_API_KEY)")
    serve.add_argument("--api-keys", metavar="FILE", help="a key per annotator, one 'NAME KEY' per line: each key opens the "
                       "server, and project saves made with it are recorded under NAME (keep the file private: chmod 600)")
    add_memory_option(serve)
    serve.add_argument("--feature-cache-mb", type=float, default=1024.0, help="each session's feature cache budget (default 1024)")
    add_model_options(serve)
    serve.add_argument("--retrain-every", type=int, default=0, metavar="N",
                       help="with --project: train in the background after every N new final labels (default 0: only when asked)")
    serve.add_argument("--feature-disk-mb", type=float, default=8192.0, metavar="MB",
                       help="with --project: disk for the cases' encoded slices (a case opened again is not encoded again; default 8192)")
    serve.add_argument("--no-scoring", action="store_true",
                       help="with --project: do not score the open cases in the background (least-confident then ranks "
                       "only the cases saved from the page)")
    serve.add_argument("--train-epochs", type=int, default=None, metavar="N",
                       help="with --project: epochs of the background training (default: train's own)")
    serve.add_argument("--save-dir", metavar="DIR",
                       help="autosave every session's labels here as the annotator works; the page reopens them after a "
                       "restart (default with --project: PROJECT/autosave)")
    serve.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    serve.add_argument("--quiet", action="store_true", help="print only the URL")
    serve.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def run_serve(args) -> int:
    from medsam2.engine.segmenter import Segmenter
    from medsam2.serve.runner import bind, make_server, url_of
    from medsam2.serve.settings import ServeSettings, read_api_users

    if args.train_epochs is not None and args.train_epochs < 1:
        raise UsageError(f"--train-epochs must be at least 1, not {args.train_epochs}")
    model = model_options(args)
    settings = ServeSettings(
        host=args.host, port=args.port, data_dir=Path(args.data) if args.data else None, max_sessions=args.max_sessions,
        session_idle_minutes=args.session_idle_minutes, max_upload_mb=args.max_upload_mb, api_key=args.api_key,
        api_users=read_api_users(args.api_keys) if args.api_keys else (),
        model=model, feature_cache_mb=args.feature_cache_mb, dicomweb=args.dicomweb, max_volume_mb=args.max_volume_mb,
        max_json_mb=args.max_json_mb, upload_min_kbps=args.upload_min_kbps, allowed_hosts=tuple(args.allowed_host),
        allowed_origins=tuple(args.allowed_origin),
        project=Path(args.model_project) if args.model_project else None, retrain_every=args.retrain_every,
        feature_disk_mb=args.feature_disk_mb, score_cases=not args.no_scoring,
        train_args=() if args.train_epochs is None else ("--epochs", str(args.train_epochs)),
        save_dir=Path(args.save_dir) if args.save_dir else None,
    ).checked()
    sock = bind(settings.host, settings.port)  # before the model loads: a busy port fails at once
    segmenter = Segmenter.from_options(model)
    server = make_server(settings, segmenter)
    if not args.quiet:
        backbone = segmenter.backbone
        print(f"medsam2 serve: {backbone.name} ({backbone.plan.runtime}, {backbone.plan.precision}) on {backbone.device}; "
              f"{settings.max_sessions} sessions at most" + (f"; scans from {settings.data_dir}" if settings.data_dir else "")
              + (f"; PACS {settings.dicomweb}" if settings.dicomweb else "")
              + (f"; project {settings.project}" if settings.project else "")
              + f"; {settings.max_volume_bytes / 2**20:.0f} MB for open scans")
    print(f"open {url_of(sock)} in a browser (API at {url_of(sock)}docs; Ctrl-C stops)", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down gracefully first, then passed the signal on
        pass
    print("medsam2 serve: stopped; its sessions and temporary folder were removed", flush=True)
    return 0
