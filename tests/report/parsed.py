"""A report page read back with the standard library's HTML parser: its sections, figures, images, scripts, the
cells that carry a report value, and every table's rows."""

import math
from html.parser import HTMLParser

from robustlab.report.content import lookup


class ParsedPage(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.sections: list[str] = []
        self.figures: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.external: list[str] = []
        self.keyed: list[dict] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.row_ids: dict[str, list[str]] = {}
        self._open: list[dict] = []
        self._table: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "figure":
            self.figures.append(a["id"].removeprefix("figure-"))
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "script":
            self.scripts += 1
            if "src" in a:
                self.external.append(a["src"])
        elif tag == "link" and "href" in a:
            self.external.append(a["href"])
        elif tag == "table":
            self._table = a.get("data-table")
            self.tables[self._table] = []
            self.row_ids[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
            if "data-run" in a:
                self.row_ids[self._table].append(a["data-run"])
        if tag in ("td", "th", "div") and ("data-key" in a or tag in ("td", "th")):
            self._open.append({"tag": tag, "key": a.get("data-key"), "value": a.get("data-value"), "text": ""})
        elif tag == "div":
            self._open.append({"tag": "div", "key": None, "text": "", "plain": True})

    def handle_data(self, data):
        for cell in self._open:
            cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        if tag in ("td", "th", "div") and self._open:
            cell = self._open.pop()
            cell["text"] = cell["text"].strip()
            if cell.get("key"):
                self.keyed.append(cell)
            if tag in ("td", "th") and self._table and self.tables[self._table]:
                self.tables[self._table][-1].append(cell["text"])


def shown(text: str) -> float | None:
    """The number a cell shows (a percentage as a share), or None for ``n/a``."""
    if text == "n/a":
        return None
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def check_keyed(page: ParsedPage, report: dict) -> int:
    """Assert every cell that names a report key holds that key's exact value and shows it to its printed
    precision; return how many were checked."""
    for cell in page.keyed:
        want = lookup(report, cell["key"])
        if want is None or (isinstance(want, float) and math.isnan(want)):
            assert cell["value"] is None and cell["text"] == "n/a", cell
            continue
        assert float(cell["value"]) == want, cell
        got = shown(cell["text"])
        if cell["text"].endswith("%"):
            assert abs(got - want) <= 0.5e-4 + 1e-12, cell
        else:
            assert math.isclose(got, want, rel_tol=5e-4, abs_tol=1e-12), cell
    return len(page.keyed)
