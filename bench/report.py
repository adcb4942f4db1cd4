"""What the report (issue 15) costs, how large it is, and what it looks like, in one run.

    python bench/report.py --ckpt PATH [--out DIR] [--full-baseline PATH] [--compare CKPT ...]

Cost: a default ``evaluate.py`` run (FGSM + PGD-40 on the checkpoint's test split, the cheap checks, the W&B
logger offline) into ``DIR/default``, with the seconds spent writing ``report.html`` / ``report.md`` and logging
the report's media to W&B against the whole run. With ``--full-baseline``, also ``suite=full`` against that
baseline into ``DIR/full``. With ``--compare``, a default run of each checkpoint into ``DIR/compare/<i>`` and their
comparison page. Sizes: the pages and the gallery file. Screenshots (full page, headless Chromium through
Playwright, when both are installed): ``<run dir>/screenshots/report.png`` and ``DIR/compare/screenshots/
comparison.png``.
"""

import argparse
import contextlib
import io
import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import robustlab.evaluate as ev
from robustlab.cli import compose_config
from robustlab.report.compare import find_runs, write_comparison


def run(ckpt: str, out: Path, overrides: list[str]) -> tuple[float, float]:
    """Seconds of the whole evaluation and of its report."""
    spent = []
    originals = {name: getattr(ev, name) for name in ("write_pages", "log_report")}

    def timed(original):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - start)

        return call

    for name, original in originals.items():
        setattr(ev, name, timed(original))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cfg = compose_config("eval", [f"ckpt={ckpt}", f"paths.output_dir={out}", "progress=false", *overrides])
            start = time.perf_counter()
            ev.evaluate(cfg)
            total = time.perf_counter() - start
    finally:
        for name, original in originals.items():
            setattr(ev, name, original)
    return total, sum(spent)


def screenshot(page: Path, shot: Path) -> str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "no screenshot (playwright is not installed)"
    chromium = shutil.which("chromium")
    if chromium is None:
        return "no screenshot (no chromium on PATH)"
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(page.resolve().as_uri(), wait_until="load")
        shot.parent.mkdir(parents=True, exist_ok=True)
        tab.screenshot(path=str(shot), full_page=True)
        browser.close()
    return str(shot.resolve())


def sizes(out: Path) -> str:
    files = [out / name for name in ("report.json", "report.html", "report.md", "gallery.pt")]
    return ", ".join(f"{f.name} {f.stat().st_size / 1024:.1f} KiB" for f in files if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--out", default="outputs/bench_report")
    parser.add_argument("--full-baseline", help="also run suite=full against this baseline checkpoint")
    parser.add_argument("--compare", nargs="*", default=[], help="checkpoints for the comparison page")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)

    runs = {"default": []}
    if args.full_baseline:
        runs["full"] = ["suite=full", f"baseline={args.full_baseline}"]
    for name, overrides in runs.items():
        out = root / name
        total, report = run(args.ckpt, out, overrides)
        print(f"{name} evaluate.py run: {total:.2f} s, report {report:.2f} s ({100 * report / total:.1f}%)")
        print(f"  {sizes(out)}")
        print(f"  screenshot: {screenshot(out / 'report.html', out / 'screenshots' / 'report.png')}")
    if args.compare:
        for i, ckpt in enumerate(args.compare):
            run(ckpt, root / "compare" / str(i), ["logger=none"])
        page = root / "compare" / "comparison.html"
        start = time.perf_counter()
        write_comparison(find_runs([root / "compare"]), page)
        seconds = time.perf_counter() - start
        print(f"comparison of {len(args.compare)} runs: {seconds:.2f} s, {page.stat().st_size / 1024:.1f} KiB")
        print(f"  screenshot: {screenshot(page, root / 'compare' / 'screenshots' / 'comparison.png')}")


if __name__ == "__main__":
    main()
