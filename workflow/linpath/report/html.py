"""A table's markdown as a standalone HTML page, for Snakemake's report (`snakemake --report`), which shows
HTML, images and PDFs inline but offers other files only for download.

Only what the tables write is rendered: `#` headings, pipe tables, `- ` lists, paragraphs and `code`; every
other character is escaped, so a page shows exactly the text of the markdown file beside it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from ..foundations.io import write_text

STYLE = """body { font-family: sans-serif; font-size: 13px; margin: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; }
p, li { max-width: 70em; }
code { background: #f4f4f4; }"""


def _inline(text: str) -> str:
    """Escaped text with `code` spans."""
    parts = re.split(r"`([^`]*)`", text)
    return "".join(f"<code>{html.escape(p)}</code>" if i % 2 else html.escape(p) for i, p in enumerate(parts))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _is_rule(line: str) -> bool:
    return bool(re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", line.strip()))


def markdown_html(text: str, title: str) -> str:
    """The page of a table's markdown (headings, pipe tables, lists, paragraphs)."""
    body, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 6)
            body.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("|") and i + 1 < len(lines) and _is_rule(lines[i + 1]):
            rows = [f"<tr>{''.join(f'<th>{_inline(c)}</th>' for c in _cells(line))}</tr>"]
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(f"<tr>{''.join(f'<td>{_inline(c)}</td>' for c in _cells(lines[i]))}</tr>")
                i += 1
            body.append("<table>\n" + "\n".join(rows) + "\n</table>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>\n" + "\n".join(items) + "\n</ul>")
        else:
            body.append(f"<p>{_inline(line)}</p>")
            i += 1
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
            f"</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def write_markdown_html(markdown: str | Path, out: str | Path, title: str) -> None:
    """The HTML page of a markdown table file, written atomically."""
    write_text(markdown_html(Path(markdown).read_text(), title), out)
