"""report.html next to report.md: table, training curves and sample predictions; `amalgam report` redoes it."""

from __future__ import annotations

import html
import json

from PIL import Image

from amalgam.cli import main
from amalgam.evaluation.report import teacher_cell


def test_build_writes_report_html_with_pictures(built_run):
    page = (built_run / "report.html").read_text()
    report = json.loads((built_run / "report.json").read_text())
    for row in report["tasks"]:  # the name, and what its per-class verdicts warn of
        assert f"<td>{html.escape(teacher_cell(row))}</td>" in page
    assert 'src="curves.png"' in page and 'src="samples.png"' in page
    assert report["unified"] and "Student over its whole unified label space" in page  # as report.md has it
    for u in report["unified"]:
        assert f"<td>{u['task']}</td><td>{u['eval']}</td>" in page
    for name in ("curves.png", "samples.png"):
        with Image.open(built_run / name) as img:
            assert img.format == "PNG" and img.size[0] > 200
    # the sample grid has one block of rows per dense teacher (seg-a, seg-b, depth) x 3 images
    with Image.open(built_run / "samples.png") as img:
        assert img.size[1] > img.size[0]


def test_report_command_regenerates_the_page(built_run, tmp_path, capsys):
    for name in ("report.html", "samples.png", "curves.png"):
        (built_run / name).unlink()
    assert main(["report", str(built_run), "--quiet"]) == 0
    assert (built_run / "report.html").exists() and (built_run / "samples.png").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "is not a finished run: no report.json (amalgam build writes one;" in capsys.readouterr().err
    (tmp_path / "checkpoint.pt").write_bytes(b"")  # an unfinished build: told to resume
    assert main(["report", str(tmp_path)]) == 2
    assert "(an unfinished build: finish it with amalgam build <recipe> --resume)" in capsys.readouterr().err


def test_report_of_a_read_only_run_folder_is_one_line(built_run, monkeypatch, capsys):
    # a trial: `amalgam report` on a read-only run checked every teacher, then died on report.html in a traceback
    from test_faults_runs import read_only

    read_only(monkeypatch, built_run)
    assert main(["report", str(built_run), "--quiet"]) == 2
    assert f"{built_run} is not writable" in capsys.readouterr().err


def test_report_command_draws_from_the_recipe_the_run_was_built_with(built_run, tmp_path, monkeypatch, capsys):
    import shutil

    import amalgam.api

    run = tmp_path / "run"
    shutil.copytree(built_run, run)
    record = json.loads((run / "run.json").read_text())
    drawn = []
    monkeypatch.setattr(amalgam.api, "render", lambda run_dir, report, plan, *rest, **kw: drawn.append(plan.recipe))
    assert main(["report", str(run)]) == 0 and "changed since the build" not in capsys.readouterr().out
    built_size = drawn[-1].data.image_size
    # the recipe file edited since the build: another image size
    other = (built_size[0] + 32, built_size[1] + 32)
    record["set"] = [*record["set"], f"data.image_size=[{other[0]}, {other[1]}]"]
    (run / "run.json").write_text(json.dumps(record))
    assert main(["report", str(run)]) == 0
    said = capsys.readouterr().out
    assert "changed since the build (data.image_size): drawing from the recipe the run was built with" in said
    assert tuple(drawn[-1].data.image_size) == tuple(built_size) != other


def test_report_of_an_old_run_whose_stored_recipe_no_longer_reads_draws_from_the_file(built_run, tmp_path, capsys):
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(built_run, run)
    blob = torch.load(run / "student.pt", weights_only=True)
    blob["recipe"]["train"]["a_key_of_long_ago"] = 1  # what today's schema refuses
    torch.save(blob, run / "student.pt")
    record = json.loads((run / "run.json").read_text())
    record["set"] = [*record["set"], "train.epochs=3"]  # and the file changed since
    (run / "run.json").write_text(json.dumps(record))
    assert main(["report", str(run)]) == 0
    said = capsys.readouterr().out
    assert "and the one the run was built with no longer reads" in said and "drawing from the file as it is now" in said


def test_a_plan_without_a_dense_teacher_says_why_it_draws_no_sample_grid(tmp_path):
    # a trial of a classifiers-only student looked for the README's grid of sample predictions: none, no word
    from types import SimpleNamespace

    from amalgam.evaluation.visual import sample_grid

    classifier = SimpleNamespace(task=SimpleNamespace(dense=False), eval_name="val")
    plan = SimpleNamespace(teachers={"c": classifier}, eval_sets={"val": None})
    said: list[str] = []
    assert sample_grid(plan, None, {}, None, tmp_path / "samples.png", log=said.append) is None
    assert said == ["samples.png: not drawn (the grid shows dense answers: no dense teacher has an eval set)"]
    assert not (tmp_path / "samples.png").exists()


def test_depth_panels_share_a_colour_scale_over_every_map_and_mark_what_it_clips():
    # a trial: the scale came from the truth alone, so a student 0.8 m too far on 47% of its pixels was drawn in
    # the truth's end colour, as right, and the colour bar did not say it clipped
    import torch

    from amalgam.evaluation.visual import colour_range

    truth = torch.linspace(1.0, 5.0, 1000)
    student = truth + 2.0  # far beyond the truth's top
    lo, hi, extend = colour_range([truth, student, truth])
    assert lo < 1.1 and hi > 6.5  # the student's values are on the scale
    assert extend == "both"  # the 1% tails are clipped, and said by the bar's arrows
    wild = torch.cat([truth, torch.tensor([1097.0])])  # one wild value does not flatten the scale
    assert colour_range([wild])[1] < 10 and colour_range([wild])[2] == "both"
    assert colour_range([torch.full((4,), 2.0)])[:2] == (1.5, 2.5)  # one value: a scale around it


def test_curves_draw_the_weighted_loss_first_and_say_what_each_panel_holds(tmp_path):
    # a trial: the loss the log prints was not drawn, the panels had no y label, the epochs read 1.2, 1.4
    from amalgam.evaluation.visual import SKIP, curve_label, plot_curves

    assert "loss" not in SKIP  # drawn: the panel of the loss the log prints

    log = tmp_path / "train_log.csv"
    log.write_text("epoch,seconds,lr,loss,loss_unweighted,seg,cache_hit_rate\n1,1,0.1,9,3,3,0\n2,2,0.1,5,2,2,1\n")
    assert plot_curves(log, tmp_path / "curves.png").is_file()
    assert curve_label("loss") == "loss, weighted (as the log prints it)"
    assert curve_label("seg") == "term, unweighted" and curve_label("ratio_seg") == "student / teacher"
