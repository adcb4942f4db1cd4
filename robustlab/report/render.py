"""One run's page: ``report.html`` (self-contained: inline CSS, figures and gallery as PNG data URIs, no script)
and ``report.md`` (the same tables, no images), built from ``report.json`` and the run's gallery file."""

import base64
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from robustlab.report import content
from robustlab.report.gallery import Example, examples
from robustlab.utils import atomic_path


@dataclass
class Page:
    title: str
    header: list[tuple[str, str]]
    verdict: content.Table
    flagged: list[dict]
    sections: list[content.Section]
    figures: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    gallery: dict[str, list[Example]] = field(default_factory=dict)

    def tables(self) -> list[content.Table]:
        return [self.verdict, *(t for s in self.sections for t in s.tables)]


def environment() -> Environment:
    env = Environment(loader=PackageLoader("robustlab.report"), autoescape=select_autoescape(["j2", "html"]))
    env.filters["repr"] = repr
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    return env


def title(report: dict) -> str:
    source = report.get("model_source") or {}
    model = report.get("defense_name") or source.get("name") or Path(str(source.get("path") or "model")).stem
    return f"{model} on {report.get('data', 'unknown data')}"


def build(report: dict, directory: str | Path | None = None) -> Page:
    """The page of ``report``; ``directory`` (the run directory) supplies the gallery."""
    from robustlab.report import plots  # matplotlib loads only when a page is drawn

    sections = content.sections(report)
    page = Page(
        title=title(report),
        header=content.header(report),
        verdict=content.verdict(report),
        flagged=[c for c in content.sorted_checks(report) if c.get("status") != "pass"],
        sections=sections,
    )
    for key in (k for s in sections for k in s.figures):
        page.figures[key] = (plots.FIGURES[key][0], plots.draw(key, report))
    if directory is not None:
        page.gallery = examples(directory)
    return page


def html(page: Page) -> str:
    return environment().get_template("report.html.j2").render(page=page, title=page.title)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(table: content.Table, heading: bool = True) -> list[str]:
    lines = [f"### {table.title}", ""] if heading else []
    if table.rows:
        columns = [c or " " for c in table.columns]
        lines += ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        for i, row in enumerate(table.rows):
            cells = [_md_cell(c.text) for c in row]
            if i in table.highlight:
                cells = [f"**{c}**" if c else c for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if table.note:
        lines += [table.note, ""]
    return lines


def markdown(page: Page) -> str:
    lines = [f"# Robustness report: {page.title}", ""]
    lines += [f"- **{label}**: {f'`{value}`' if label == 'command' else value}" for label, value in page.header]
    lines += ["", "## Verdict", ""]
    lines += [f"- {row[0].text}: **{row[1].text}**" for row in page.verdict.rows]
    lines += [
        f"- {c['status']}: **{c['name']}**: {c['evidence']}" + (f". Fix: {c['fix']}" if c.get("fix") else "")
        for c in page.flagged
    ]
    lines.append("")
    for section in page.sections:
        lines += [f"## {section.title}", ""]
        for table in section.tables:
            lines += md_table(table, table.title != section.title)
    return "\n".join(lines).rstrip() + "\n"


def write(report: dict, directory: str | Path) -> Page:
    """Write ``report.html`` and ``report.md`` of ``report`` into the run ``directory``; return the page."""
    directory = Path(directory)
    page = build(report, directory)
    for name, text in (("report.html", html(page)), ("report.md", markdown(page))):
        with atomic_path(directory / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return page
