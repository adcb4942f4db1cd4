"""Reports people look at, built from the files an evaluation writes: one run's ``report.html`` / ``report.md``
(:func:`write_pages`), their media in W&B (:func:`log_report`) and a comparison page over many runs
(:func:`write_comparison`). Reads only ``report.json`` (and the run's gallery file), so
``python -m robustlab.report DIR`` rebuilds the page of an old run."""

from robustlab.report.compare import write_comparison
from robustlab.report.media import log_report
from robustlab.report.render import Page, build, html, markdown
from robustlab.report.render import write as write_pages

__all__ = ["Page", "build", "html", "log_report", "markdown", "write_comparison", "write_pages"]
