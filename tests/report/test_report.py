"""The report: report.html and report.md of every evaluation (sections present only with their data, numbers
equal to report.json, self-contained), the gallery, W&B media, the comparison page and its command, and the
report's cost."""

import base64
import io
import json
import shutil
import time

import pytest
import torch
from PIL import Image

import robustlab.evaluate as ev
from robustlab.errors import ReportWarning
from robustlab.evaluate import evaluate
from robustlab.report.compare import find_runs, write_comparison
from tests.helpers import make_cfg, run_cli
from tests.regression.cases import REPORTS, checkpoint
from tests.report.conftest import DEFENSES
from tests.report.parsed import ParsedPage, check_keyed, shown
from tests.wandb_records import finished_records, logged

EVERY_SECTION = ("attacks", "checks", "curves", "corruption", "coverage", "structure", "defense", "detection")
EVERY_FIGURE = ("robust_accuracy", "curves_eps", "curves_steps", "corruption", "coverage", "structure", "detection")


def _page(out) -> ParsedPage:
    return ParsedPage((out / "report.html").read_text())


def _png_size(src: str) -> tuple[int, int]:
    assert src.startswith("data:image/png;base64,"), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    image.load()
    return image.size


def test_full_report_has_every_section(full_run):
    report, out = full_run
    page = _page(out)
    assert [s for s in page.sections if s != "gallery"] == [*EVERY_SECTION, "timings"]
    assert "gallery" in page.sections
    assert sorted(page.figures) == sorted(EVERY_FIGURE)
    assert page.tables["checks"] and len(page.tables["checks"]) == len(report["checks"]) + 1
    md = (out / "report.md").read_text()
    for title in ("## Verdict", "## Attacks", "## Checks", "## Robustness curves", "## Corruption robustness"):
        assert title in md
    for title in ("## Neuron coverage", "## Model structure", "## Defense utility", "## Detection"):
        assert title in md
    assert "data:image" not in md and "<img" not in md


def test_attacks_only_report_leaves_the_other_sections_out(attacks_run):
    report, out = attacks_run
    assert set(report) & {*EVERY_SECTION[1:], "checks"} == set()
    page = _page(out)
    assert page.sections == ["attacks", "timings", "gallery"]
    assert page.figures == ["robust_accuracy"]
    md = (out / "report.md").read_text()
    for title in ("Checks", "curves", "Corruption", "coverage", "structure", "Defense", "Detection"):
        assert f"## {title}" not in md and title not in page.tables
    assert " pass, " not in (out / "report.html").read_text()


def test_the_pages_numbers_equal_the_json(full_run):
    report, out = full_run
    page = _page(out)
    assert check_keyed(page, report) > 250
    # The attack table read back by column title, row by row.
    header, *rows = page.tables["attacks"]
    assert len(rows) == len(report["attacks"])
    for row in rows:
        values = dict(zip(header, row, strict=True))
        r = report["attacks"][values["attack"]]
        for column, key in (("robust accuracy", "robust_accuracy"), ("MR", "MR"), ("RGB", "RGB"), ("RIC", "RIC")):
            assert abs(shown(values[column]) - r[key]) <= 0.5e-4
        for column in ("ACAC", "ACTC", "ASS", "PSD", "NTE", "ALDp.L2"):
            want = r["ALDp"]["L2"] if column == "ALDp.L2" else r[column]
            assert shown(values[column]) == pytest.approx(want, rel=5e-4)
    verdict = {c["key"]: c for c in page.keyed if c["key"] in ("clean.CA", "worst_case.robust_accuracy")}
    assert float(verdict["clean.CA"]["value"]) == report["clean"]["CA"]
    assert float(verdict["worst_case.robust_accuracy"]["value"]) == report["worst_case"]["robust_accuracy"]
    # The Markdown carries the same table text.
    md = (out / "report.md").read_text()
    for row in rows:
        assert "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" in md.replace("**", "")


def test_the_page_is_self_contained(full_run):
    _, out = full_run
    text = (out / "report.html").read_text()
    page = ParsedPage(text)
    assert page.scripts == 0 and not page.external
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    sizes = [_png_size(src) for src in page.images]
    assert len(sizes) == len(EVERY_FIGURE) + 3 * 4 * 2  # figures, and 3 images of 4 examples of 2 attacks
    assert all(w > 0 and h > 0 for w, h in sizes)


def test_verdict_names_and_explains_the_checks_that_did_not_pass(full_run, tmp_path):
    report, _ = full_run
    flagged = json.loads(json.dumps(report))
    flagged["checks"][0].update(status="fail", evidence="the evidence of a failure", fix="the fix of a failure")
    flagged["checks"][1].update(status="warn", evidence="the evidence of a warning", fix="")
    from robustlab.report import write_pages

    write_pages(flagged, tmp_path)
    text = (tmp_path / "report.html").read_text()
    assert f"{len(report['checks']) - 2} pass, 1 warn, 1 fail" in text
    for name in (flagged["checks"][0]["name"], flagged["checks"][1]["name"]):
        assert f"<strong>{name}</strong>" in text
    assert "the evidence of a failure. Fix: the fix of a failure" in text
    assert text.index("the evidence of a failure") < text.index("the evidence of a warning")
    md = (tmp_path / "report.md").read_text()
    assert f"- fail: **{flagged['checks'][0]['name']}**: the evidence of a failure. Fix: the fix of a failure" in md


def test_the_gallery_keeps_a_few_successful_examples_per_attack(full_run):
    report, out = full_run
    gallery = torch.load(out / "gallery.pt", weights_only=True)
    assert set(gallery) == set(report["attacks"])
    for name, rows in gallery.items():
        assert len(rows["idx"]) == 4 and rows["success"].all(), name
        eps = report["threat"][name]["eps"]
        assert (rows["x_adv"] - rows["x"]).abs().amax() <= eps + 1e-6
        assert ((rows["clean_conf"] > 0) & (rows["clean_conf"] <= 1)).all()
        assert (rows["adv_pred"] != rows["y"]).all() and (rows["clean_pred"] == rows["y"]).all()
    text = (out / "report.html").read_text()
    first = gallery["pgd_linf"]
    i = int(first["idx"][0])
    conf = f"{100 * float(first['adv_conf'][0]):.0f}%"
    assert f"#{i}: true {int(first['y'][0])}, clean {int(first['clean_pred'][0])}" in text
    assert f"{int(first['adv_pred'][0])} ({conf})" in text


def test_save_adv_feeds_the_gallery_and_an_old_run_is_rebuilt(fixtures, tmp_path):
    out = tmp_path / "run"
    overrides = [f"ckpt={checkpoint('pgd_at', fixtures)}", "logger=none", "progress=false", "data.test_size=12"]
    evaluate(make_cfg("eval", out, [*overrides, "save_adv=true"]))
    assert not (out / "gallery.pt").exists() and (out / "adv" / "fgsm.pt").is_file()
    assert "gallery" in _page(out).sections
    # An old run: a committed report from before this page existed, without run header, threat or gallery.
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(REPORTS / "full.json", old / "report.json")
    done = run_cli("-m", "robustlab.report", str(old))
    assert done.returncode == 0, done.stderr
    page = _page(old)
    assert page.sections == ["attacks", "corruption", "coverage", "structure", "defense"]
    assert check_keyed(page, json.loads((old / "report.json").read_text())) > 150
    assert (old / "report.md").is_file()


def test_wandb_gets_the_figures_the_attack_table_the_gallery_and_the_page(fixtures, tmp_path):
    out = tmp_path / "run"
    overrides = [f"ckpt={checkpoint('pgd_at', fixtures)}", "logger=wandb", "progress=false", "data.test_size=12"]
    evaluate(make_cfg("eval", out, overrides))
    (run,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    _, _, history = logged(run)
    assert history["report/robust_accuracy/_type"] == "image-file"
    assert (run.parent / "files" / history["report/robust_accuracy/path"]).stat().st_size > 1000
    assert history["report/attack_table/_type"] == "table-file"
    assert history["report/gallery/pgd_linf/count"] == 4 and len(history["report/gallery/fgsm/captions"]) == 4
    table = json.loads((run.parent / "files" / history["report/attack_table/path"]).read_text())
    assert table["columns"][:4] == ["attack", "norm", "eps", "robust accuracy"]
    assert [row[0] for row in table["data"]] == ["fgsm", "pgd_linf"]
    saved = {f.path for r in finished_records(run) if r.WhichOneof("record_type") == "files" for f in r.files.files}
    assert {"report.html", "report.md"} <= saved
    assert (run.parent / "files" / "report.html").read_text() == (out / "report.html").read_text()


def test_the_comparison_page_ranks_three_defenses_by_worst_case(three_runs, tmp_path):
    root, reports = three_runs
    out = tmp_path / "compare.html"
    done = run_cli("-m", "robustlab.report", str(root), "--out", str(out))
    assert done.returncode == 0, done.stderr
    page = ParsedPage(out.read_text())
    (key,) = page.tables
    header, *rows = page.tables[key]
    worst = [shown(dict(zip(header, row, strict=True))["worst case"]) for row in rows]
    order = [next(d for i, d in enumerate(DEFENSES) if page.row_ids[key][k].endswith(f"/{i}")) for k in range(3)]
    expected = sorted(DEFENSES, key=lambda d: reports[d]["worst_case"]["robust_accuracy"], reverse=True)
    assert order == expected and order[-1] == "standard"
    assert worst == sorted(worst, reverse=True)
    for defense, row in zip(order, rows, strict=True):
        values = dict(zip(header, row, strict=True))
        assert values["defense"] == defense
        assert abs(shown(values["fgsm (Linf 0.3)"]) - reports[defense]["attacks"]["fgsm"]["robust_accuracy"]) <= 5e-5
        assert values["checks"].startswith("10 pass, 0 warn, 0 fail")
    # Without --out, the pages are rebuilt and the comparison goes into the directory.
    done = run_cli("-m", "robustlab.report", str(root))
    assert done.returncode == 0, done.stderr
    assert (root / "comparison.html").is_file() and done.stdout.count("page: ") == 3


def test_reports_of_different_data_get_separate_tables(three_runs, tmp_path):
    root, reports = three_runs
    for i, defense in enumerate(DEFENSES):
        report = dict(reports[defense], data="digits") if defense == "trades" else reports[defense]
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "report.json").write_text(json.dumps(report))
    groups = write_comparison(find_runs([tmp_path]), tmp_path / "c.html")
    assert [(g.data, len(g.runs)) for g in groups] == [("mnist5k", 2), ("digits", 1)]
    page = ParsedPage((tmp_path / "c.html").read_text())
    assert sorted(page.tables) == ["matrix-digits", "matrix-mnist5k"]


@pytest.mark.parametrize("content", [None, "{not json", '{"a": 1}'])
def test_report_command_errors_are_one_line(tmp_path, content):
    if content is not None:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "report.json").write_text(content)
    done = run_cli("-m", "robustlab.report", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "; fix: " in done.stderr
    assert "Traceback" not in done.stderr


def test_the_report_adds_at_most_five_percent_to_a_default_run(pgd_at_run, tmp_path, monkeypatch):
    """A default evaluate.py run (default attacks, checks and W&B logger) of a PGD-AT-trained DEEPSEC MNIST CNN (the
    default model) on all 1000 MNIST-5k test images."""
    spent = []
    for name in ("write_pages", "log_report"):
        original = getattr(ev, name)

        def timed(*args, original=original, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        monkeypatch.setattr(ev, name, timed)
    start = time.perf_counter()
    summary, _ = pgd_at_run
    report = evaluate(make_cfg("eval", tmp_path, [f"ckpt={summary['checkpoint']}", "data.test_size=1000"]))
    assert report["clean"]["n_samples"] == 1000
    total = time.perf_counter() - start
    assert len(spent) == 2
    assert sum(spent) <= 0.05 * total, f"report {sum(spent):.2f} s of a {total:.2f} s run"


def test_a_page_that_cannot_be_drawn_keeps_the_run(fixtures, tmp_path, monkeypatch):
    def broken(report, directory):
        raise RuntimeError("a figure failed")

    monkeypatch.setattr(ev, "write_pages", broken)
    overrides = [f"ckpt={checkpoint('pgd_at', fixtures)}", "logger=none", "progress=false", "data.test_size=8"]
    with pytest.warns(ReportWarning, match="a figure failed.*python -m robustlab.report"):
        report = evaluate(make_cfg("eval", tmp_path, overrides))
    assert json.loads((tmp_path / "report.json").read_text())["clean"] == report["clean"]
    assert not (tmp_path / "report.html").exists()


def test_pages_false_writes_the_json_alone_and_the_pages_follow_from_it(fixtures, tmp_path):
    from robustlab.report.__main__ import main

    overrides = [f"ckpt={checkpoint('pgd_at', fixtures)}", "logger=none", "progress=false", "data.test_size=8"]
    report = evaluate(make_cfg("eval", tmp_path, [*overrides, "pages=false"]))
    assert json.loads((tmp_path / "report.json").read_text())["clean"] == report["clean"]
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "report.md").exists()
    main([str(tmp_path)])
    assert check_keyed(_page(tmp_path), json.loads((tmp_path / "report.json").read_text())) > 10
    assert (tmp_path / "report.md").is_file()


@pytest.mark.parametrize("case", sorted(p.stem for p in REPORTS.glob("*.json")))
def test_every_committed_report_renders_with_its_numbers(case, tmp_path):
    """The regression reports: every defense (randomised, detectors), every attack and metric, suite=full."""
    report = json.loads((REPORTS / f"{case}.json").read_text())
    from robustlab.report import write_pages

    page = write_pages(report, tmp_path)
    assert check_keyed(_page(tmp_path), report) >= 4 * len(report["attacks"])
    assert [t.key for t in page.tables()][:2] == ["verdict", "attacks"]
