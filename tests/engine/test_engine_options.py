"""The engine's stop rule from the command line (``--stop-intensity-overlap``): checked when it is
parsed, refused for a backbone whose engine does not take it, and carried to the engine by
segment, evaluate, batch, serve and oneprompt; the report, results.json, a DICOM output's algorithm
parameters and the server's /api/info say what ran. Its effect on real data is in
tests/test_small_structures.py."""

import json

import pytest

from medsam2 import Box, ObjectPrompts, Segmenter, load_volume
from medsam2.cli import main
from medsam2.engine.jobs import provenance_of
from medsam2.engine.litemedsam_settings import PropagationSettings
from medsam2.engine.options import ModelOptions
from tests.serve_helpers import running, write_crop


class Captured(BaseException):
    """Raised by a stand-in to stop a command once it has built what the test looks at."""


def one_line_error(capsys, code, expected_code, pattern):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code
    assert len(err) == 1 and err[0].startswith("medsam2: error: ") and pattern in err[0], err


@pytest.fixture()
def scan(tmp_path):
    path, _ = write_crop(tmp_path, count=4)
    return path


@pytest.mark.parametrize(("value", "expected"), [("1.5", "outside 0..1"), ("-0.1", "outside 0..1"), ("nan", "outside 0..1"),
                                                 ("abc", "not a number")])
def test_a_value_outside_0_1_is_refused_when_parsed(tmp_path, capsys, scan, value, expected):
    out = tmp_path / "o.nii.gz"
    code = main(["segment", str(scan), "-o", str(out), "--box", "2:5,5,20,20", "--stop-intensity-overlap", value])
    one_line_error(capsys, code, 2, expected)
    assert not out.exists()


def _sam2_commands(tmp_path, scan):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f'image,box\n{scan},"1:5,5,20,20"\n')
    return {
        "segment": ["segment", str(scan), "-o", str(tmp_path / "o.nii.gz"), "--box", "2:5,5,20,20"],
        "evaluate": ["evaluate", str(tmp_path), "-o", str(tmp_path / "eval")],
        "batch": ["batch", str(manifest), "-o", str(tmp_path / "batch")],
        "serve": ["serve", "--port", "0"],
        "oneprompt": ["oneprompt", "--support", str(scan), "--support-box", "2:5,5,20,20", str(scan), "-o", str(tmp_path / "one")],
    }


@pytest.mark.parametrize("command", ["segment", "evaluate", "batch", "serve", "oneprompt"])
def test_sam2_refuses_the_litemedsam_rule_before_any_work(tmp_path, capsys, scan, command):
    args = _sam2_commands(tmp_path, scan)[command]
    code = main(args + ["--backbone", "sam2", "--checkpoint", str(tmp_path / "none.pt"), "--stop-intensity-overlap", "0"])
    one_line_error(capsys, code, 2, "--stop-intensity-overlap applies to the litemedsam backbone")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["crop.nii.gz", "manifest.csv"])  # nothing written


def test_segment_report_and_dicom_provenance_name_the_rule(tmp_path, capsys, monkeypatch, backbone, scan):
    monkeypatch.setattr("medsam2.engine.segmenter.build_backbone", lambda *a, **k: backbone)
    reports = {}
    for value in (None, "0"):
        report = tmp_path / f"report-{value}.json"
        extra = [] if value is None else ["--stop-intensity-overlap", value]
        code = main(["segment", str(scan), "-o", str(tmp_path / f"o-{value}.nii.gz"), "--box", "2:30,40,60,80", "--quiet",
                     "--report", str(report), *extra])
        assert code == 0, capsys.readouterr().err
        reports[value] = json.loads(report.read_text())["settings"]
    assert reports[None]["stop_intensity_overlap"] == 0.35 and reports["0"]["stop_intensity_overlap"] == 0.0
    assert reports[None]["stop_iou"] == reports["0"]["stop_iou"] == PropagationSettings().stop_iou  # the rest as measured
    volume = load_volume(scan)
    off = Segmenter(backbone=backbone, settings=PropagationSettings(stop_intensity_overlap=0.0))
    result = off.segment(volume, ObjectPrompts(1, boxes=[Box(2, 30, 40, 60, 80)]))
    assert provenance_of(result).algorithm_parameters()["stop_intensity_overlap"] == "0"


def test_evaluate_records_the_rule_and_a_resume_must_keep_it(tmp_path, capsys, monkeypatch, backbone, nnunet_dataset):
    monkeypatch.setattr("medsam2.backbones.build_backbone", lambda *a, **k: backbone)
    out = tmp_path / "eval"
    args = ["evaluate", str(nnunet_dataset), "-o", str(out), "--methods", "confidence", "--cases", "1", "--quiet"]
    assert main(args + ["--stop-intensity-overlap", "0.2"]) == 0
    assert json.loads((out / "results.json").read_text())["config"]["stop_intensity_overlap"] == 0.2
    capsys.readouterr()
    code = main(args + ["--resume"])  # the default rule now: the results were made with another
    one_line_error(capsys, code, 1, "holds a run with other settings")


def test_evaluate_gives_each_method_the_rule(backbone):
    from medsam2.evaluation.harness import EvaluateWorker, MethodSegmenters
    from medsam2.evaluation.protocols import EvaluationConfig

    settings = PropagationSettings(stop_intensity_overlap=0.0)
    assert MethodSegmenters(lambda: backbone, settings)("none").settings == settings
    assert MethodSegmenters(lambda: backbone)("confidence").settings == PropagationSettings()
    worker = EvaluateWorker(ModelOptions(settings=settings), EvaluationConfig(), {}, None)  # what --workers and --ray build
    assert worker.build()._settings == settings


def test_batch_workers_build_the_rule(tmp_path, capsys, monkeypatch, scan):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f'image,box\n{scan},"1:5,5,20,20"\n')

    def capture(model):
        raise Captured(model)

    monkeypatch.setattr("medsam2.batch.run.SegmentWorker", capture)
    with pytest.raises(Captured) as caught:
        main(["batch", str(manifest), "-o", str(tmp_path / "out"), "--stop-intensity-overlap", "0", "--quiet"])
    model = caught.value.args[0]
    assert model.settings == PropagationSettings(stop_intensity_overlap=0.0)
    assert Segmenter.from_options(model).settings == model.settings  # what each worker process builds from it


def test_serve_builds_the_rule_and_info_reports_it(monkeypatch, backbone):
    def capture(options):
        raise Captured(options)

    monkeypatch.setattr(Segmenter, "from_options", capture)
    with pytest.raises(Captured) as caught:
        main(["serve", "--port", "0", "--stop-intensity-overlap", "0.5"])
    assert caught.value.args[0].settings == PropagationSettings(stop_intensity_overlap=0.5)
    import httpx

    for engine, expected in ((None, 0.35), (PropagationSettings(stop_intensity_overlap=0.5), 0.5)):
        with running(backbone, engine=engine) as (url, _state), httpx.Client() as client:
            assert client.get(f"{url}/api/info").json()["settings"]["stop_intensity_overlap"] == expected
