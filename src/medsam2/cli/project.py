"""``medsam2 project``: a folder of cases and every saved version of their labels (init,
import-labels, status, export)."""

from __future__ import annotations

import json
from pathlib import Path

from medsam2.cli.common import add_memory_option, add_model_options
from medsam2.errors import UsageError
from medsam2.project.vocabulary import EXPORT_FORMATS, NO_FINAL_TO_SCORE, STATUSES


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
    score = actions.add_parser("score", help="the active model's confidence on every case not final yet (what "
                               "least-confident ranks by), its features cached on the way")
    score.add_argument("dir", help="the project folder")
    score.add_argument("--limit", type=int, metavar="N", help="score at most N cases (default: all that have no score)")
    score.add_argument("--rescore", action="store_true", help="score the scored cases again too")
    score.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    score.add_argument("--feature-disk-mb", type=float, default=8192.0, metavar="MB",
                       help="disk for the cases' encoded slices in DIR/cache/features (default 8192)")
    add_model_options(score)
    add_memory_option(score)
    for sub in (init, labels, status, export, activate, score):
        sub.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def run_project(args, say=print) -> int:
    """Run one ``project`` subcommand; returns the exit code."""

    if args.project_command is None:
        raise UsageError("name what to do: medsam2 project init|import-labels|status|export|activate|score DIR ...")
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
        if args.project_command == "score":
            return _score(store, args, say)
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


def _score(store, args, say) -> int:
    from medsam2.cli.common import apply_project_model, model_options
    from medsam2.project.scoring import score_open_cases

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit takes a number of cases from 1 up, not {args.limit}")
    if not store.final_cases():  # before the model is named (its warning would be a second line)
        from medsam2.errors import InputError

        raise InputError(NO_FINAL_TO_SCORE)
    if args.checkpoint is None:  # the project's active model (else the weights given, as a server without one runs)
        args.model_project = args.dir
        apply_project_model(args)

    def said(score) -> None:
        found = "found nothing" if score.confidence is None else f"confidence {score.confidence:.4f}"
        say(f"{score.case_id}: {found} ({', '.join(f'label {k} {v:.4f}' for k, v in score.per_label.items())}; {score.seconds:.1f} s)")

    scores = score_open_cases(store, model_options(args), args.limit, args.rescore, args.feature_disk_mb, on_score=said)
    say(f"scored {len(scores)} cases" if scores else "every case without a final label has a score already (--rescore scores them again)")
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
