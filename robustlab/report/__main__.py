"""``python -m robustlab.report DIR [DIR ...] [--out FILE.html]``: rebuild the page of every run found under the
directories from its ``report.json``, and, with several runs or ``--out``, write the comparison page."""

import argparse
from pathlib import Path

from robustlab.cli import one_line_errors
from robustlab.report.compare import find_runs, write_comparison
from robustlab.report.render import write


@one_line_errors
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m robustlab.report", description=__doc__)
    parser.add_argument("directories", nargs="+", metavar="DIR", help="run directories, or folders holding runs")
    parser.add_argument("--out", help="the comparison page (default: DIR/comparison.html for several runs)")
    parser.add_argument("--no-pages", action="store_true", help="do not rebuild each run's report.html / report.md")
    args = parser.parse_args(argv)
    runs = find_runs(args.directories)
    if not args.no_pages:
        for run in runs:
            write(run.report, run.path)
            print(f"page: {(run.path / 'report.html').resolve()}")
    if args.out or len(runs) > 1:
        out = Path(args.out or Path(args.directories[0]) / "comparison.html")
        groups = write_comparison(runs, out)
        print(f"comparison of {len(runs)} runs on {', '.join(g.data for g in groups)}: {out.resolve()}")


if __name__ == "__main__":
    main()
