"""report.html: sections of text, tables and images (PNG files beside the page), readable offline."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { image-rendering: pixelated; border: 1px solid #ddd; max-width: 100%; }
figcaption { font-size: 0.88em; color: #555; max-width: 520px; }
.meta { color: #666; font-size: 0.9em; } .error { color: #b00; white-space: pre-wrap; font-family: monospace; }
"""


def cell(value: object) -> str:
    """A table cell: floats with 4 significant digits, the rest as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Section:
    """One heading with its blocks (HTML fragments, in order) and the seconds it took."""

    title: str
    blocks: list[str] = field(default_factory=list)
    seconds: float | None = None

    def text(self, paragraph: str) -> None:
        self.blocks.append(f"<p>{html.escape(paragraph)}</p>")

    def table(self, rows: list[dict], caption: str | None = None) -> None:
        """Rows of {column: value}; the columns of the first row, in order (then any new ones)."""
        if not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(cell(row.get(c, '')))}</td>" for c in columns) + "</tr>" for row in rows
        )
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{cap}<tr>{head}</tr>{body}</table>")

    def image(self, path: str | Path, caption: str) -> None:
        """An image file (inside the report's folder), linked relatively."""
        self.blocks.append(
            ('<figure><img src="{src}" alt="{alt}"><figcaption>{alt}</figcaption></figure>').format(
                src=html.escape(Path(path).as_posix()), alt=html.escape(caption)
            )
        )

    def error(self, message: str) -> None:
        self.blocks.append(f'<p class="error">{html.escape(message)}</p>')


def write_report(path: str | Path, title: str, meta: list[str], sections: list[Section]) -> Path:
    """Writes the page to ``path`` (atomically); image paths in the sections are relative to its folder."""
    path = Path(path)
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    parts += [f'<p class="meta">{html.escape(line)}</p>' for line in meta]
    toc = "".join(f'<li><a href="#s{i}">{html.escape(s.title)}</a></li>' for i, s in enumerate(sections))
    parts.append(f"<ul>{toc}</ul>")
    for i, s in enumerate(sections):
        took = f' <span class="meta">({s.seconds:.0f} s)</span>' if s.seconds is not None else ""
        parts.append(f'<h2 id="s{i}">{html.escape(s.title)}{took}</h2>')
        parts += s.blocks
    parts.append("</body></html>\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, path)
    return path
