"""``medsam2 project``: a folder of cases and every saved version of their labels (init,
import-labels, status, export)."""

from __future__ import annotations

import json
from pathlib import Path

from medsam2.project.vocabulary import EXPORT_FORMATS, STATUSES


def add_parser(commands) -> None:
    """The ``project`` subcommand and its own subcommands."""
    project = commands.add_parser(
        "project", help="a folder of cases and every saved version of their labels: init, import-labels, status, export, activate",
    )
    actions = project.add_subparsers(dest="project_command", parser_class=type(project))
    init = actions.add_parser("init", help="create a project from images (files, globs, DICOM folders, a dataset folder)")
    init.add_argument("dir", help="the project folder (new or empty)")
    init.add_argument("--images", nargs="+", required=True, metavar="PATH", help="files, globs, DICOM series folders, "
                      "or a folder of images (a dataset folder in evaluate's layout: its images/ or imagesTr/)")
    init.add_argument("--copy", action="store_true", help="copy the images into the project (default: refer to them, "
                      "with a content hash so that a changed file is noticed)")
    labels = actions.add_parser("import-labels", help="save label maps you already have as versions of the cases they name")
    labels.add_argument("dir", help="the project folder")
    labels.add_argument("--labels", nargs="+", required=True, metavar="PATH",
                        help="label files, globs or a folder (matched to cases by file name, as evaluate pairs images/ and labels/)")
    labels.add_argument("--status", choices=STATUSES, default="final", help="status of the versions saved (default final)")
    labels.add_argument("--user", help="who the versions are recorded as made by")
    status = actions.add_parser("status", help="cases per status, conflicts, changed or missing images")
    status.add_argument("dir", help="the project folder")
    status.add_argument("--json", action="store_true", help="print JSON")
    export = actions.add_parser("export", help="the final labels as a dataset for train/evaluate or nnU-Net v2")
    export.add_argument("dir", help="the project folder")
    export.add_argument("-o", "--output-dir", required=True, help="a new or empty folder")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="evaluate",
                        help="evaluate: images/ + labels/ (what train and evaluate read); nnunet: imagesTr/ labelsTr/ dataset.json")
    activate = actions.add_parser("activate", help="make a model version the active one (what training starts from)")
    activate.add_argument("dir", help="the project folder")
    activate.add_argument("model", help="a model version, e.g. v2 (see project status)")
    for sub in (init, labels, status, export, activate):
        sub.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def run_project(args, say=print) -> int:
    """Run one ``project`` subcommand; returns the exit code."""
    from medsam2.errors import UsageError

    if args.project_command is None:
        raise UsageError("name what to do: medsam2 project init|import-labels|status|export|activate DIR ...")
    if args.project_command == "init":
        from medsam2.project.sources import case_sources
        from medsam2.project.store import create_project

        with create_project(args.dir, case_sources(args.images), copy=args.copy) as store:
            cases = store.cases()
        how = "copied" if args.copy else "by reference"
        say(f"created project {args.dir} with {len(cases)} cases ({how}): {', '.join(c.case_id for c in cases[:5])}"
            + (" ..." if len(cases) > 5 else ""))
        return 0
    from medsam2.project.store import open_project

    with open_project(args.dir) as store:
        if args.project_command == "import-labels":
            from medsam2.project.importing import import_labels

            summary = import_labels(store, args.labels, args.status, args.user)
            say(f"saved {len(summary.saved)} {args.status} versions"
                + (f"; {len(summary.unmatched)} files match no case: {', '.join(p.name for p in summary.unmatched[:5])}"
                   if summary.unmatched else ""))
            return 0
        if args.project_command == "status":
            return _status(store, args.json, say)
        if args.project_command == "activate":
            from medsam2.project.models import activate

            model = activate(store, args.model)
            say(f"{model.name} is the active model (validation Dice {model.val_dice:.4f}; trained from {model.base})")
            return 0
        from medsam2.project.exporting import export_project

        summary = export_project(store, Path(args.output_dir), args.format)
        say(f"exported {summary.cases} cases with a final label to {summary.folder} ({args.format} layout)"
            + (f"; {summary.left_out} without one left out" if summary.left_out else ""))
        return 0


def _status(store, as_json: bool, say) -> int:
    from dataclasses import asdict

    from medsam2.project.models import model_versions

    facts = store.status()
    models = model_versions(store)
    if as_json:
        say(json.dumps({**facts.to_dict(), "models": [asdict(m) for m in models],
                        "active_model": next((m.name for m in models if m.active), None)}, indent=2))
        return 0
    counts = ", ".join(f"{n} {s}" for s, n in facts.by_status.items())
    say(f"{facts.cases} cases: {counts}; {facts.conflicts} conflicting versions")
    for name, found in (("changed since added", facts.changed), ("missing", facts.missing)):
        if found:
            say(f"images {name}: {', '.join(found)}")
    for model in models:
        say(f"model {model.name}{' (active)' if model.active else ''}: validation Dice {model.val_dice:.4f} "
            f"(started from {model.base}: {model.val_dice_base:.4f}); {len(model.train_cases)} training cases")
    if not models:
        say("models: none yet (the bundled weights); train one with 'medsam2 train --project DIR'")
    return 0
