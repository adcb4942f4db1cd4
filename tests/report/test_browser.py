"""The report pages in a real browser: headless Chromium (Debian's package, which ``.ci/run`` installs when
missing) driven by Playwright. Each page loads with no failed request, no request leaving the file, no console
error, every image decoded, and a full-page screenshot that is not blank. The screenshots are kept next to the
pages (``<run dir>/screenshots/``) and in ``$ROBUSTLAB_ARTIFACTS`` (default ``artifacts/browser``)."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT, run_cli

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium; .ci/run installs it when it can)"
)
#: As the machine's notes advise: no sandbox as root, and no background connections to Google's services.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("ROBUSTLAB_ARTIFACTS", ROOT / "artifacts" / "browser"))


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def visit(browser, page_path: Path, shot: Path) -> dict:
    """Open ``page_path`` from disk, wait for it to load and take a full-page screenshot to ``shot``; return
    what the browser saw."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = {"requests": [], "failed": [], "console": [], "errors": []}
    page.on("request", lambda r: seen["requests"].append(r.url))
    page.on("requestfailed", lambda r: seen["failed"].append(f"{r.url}: {r.failure}"))
    page.on("console", lambda m: seen["console"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_load_state("networkidle")
    seen["images"] = page.evaluate(
        "() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
    )
    seen["page"] = page
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / shot.name)
    return seen


def assert_clean_load(seen: dict, page_path: Path, shot: Path, min_images: int) -> None:
    own = page_path.resolve().as_uri()
    assert not seen["failed"], seen["failed"]
    assert [u for u in seen["requests"] if u != own and not u.startswith("data:")] == []
    assert not seen["errors"], seen["errors"]
    assert [m for m in seen["console"] if m.startswith("error")] == []
    assert len(seen["images"]) >= min_images
    assert all(ok and w > 0 and h > 0 for _, ok, w, h in seen["images"]), seen["images"]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[0] > 800
    inked = (pixels < 200).mean()
    assert pixels.std() > 10 and inked > 0.01, f"blank screenshot {shot}: std {pixels.std():.1f}, ink {inked:.3f}"


def test_the_single_run_page_in_chromium(browser, full_run):
    _, out = full_run
    page_path, shot = out / "report.html", out / "screenshots" / "report.png"
    seen = visit(browser, page_path, shot)
    assert_clean_load(seen, page_path, shot, min_images=7 + 24)
    height = seen["page"].evaluate("() => document.body.scrollHeight")
    assert Image.open(shot).size[1] >= height > 3000


def test_the_comparison_page_in_chromium(browser, three_runs):
    root, reports = three_runs
    page_path = root / "comparison.html"
    done = run_cli("-m", "robustlab.report", str(root), "--out", str(page_path))
    assert done.returncode == 0, done.stderr
    shot = root / "screenshots" / "comparison.png"
    seen = visit(browser, page_path, shot)
    assert_clean_load(seen, page_path, shot, min_images=1)
    page = seen["page"]
    defense = "() => Array.from(document.querySelectorAll('tbody tr')).map(r => r.cells[1].textContent)"
    ranked = sorted(reports, key=lambda d: reports[d]["worst_case"]["robust_accuracy"], reverse=True)
    assert page.evaluate(defense) == ranked
    page.click("th:text-is('worst case')")  # sorts descending (as ranked), a second click ascending
    page.click("th:text-is('worst case')")
    assert page.evaluate(defense) == ranked[::-1]
    page.click("tbody tr:last-child td:first-child a")  # the best run's own page, linked from its row
    page.wait_for_load_state("load")
    assert page.url == (root / str(list(reports).index(ranked[0])) / "report.html").resolve().as_uri()
    assert page.text_content("h1") == f"Robustness report: {ranked[0]} on mnist5k"
    assert not seen["errors"] and not seen["failed"]
