"""The HTML view of ``/flows``: one self-contained page, a styled table, every value escaped."""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import urlencode

from ._query import FIELDS

__all__ = ["COLUMNS", "render_flows"]

#: The table's columns: every row field, in the protocol's order (plus the liveness ``status``).
COLUMNS = FIELDS

_STYLE = """
:root { color-scheme: light; --line: #e3e6ea; --muted: #6b7280; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px; background: #f7f8fa; color: #1f2933;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 24px;
         margin-bottom: 16px; }
h1 { margin: 0; font-size: 20px; font-weight: 600; }
.meta { color: var(--muted); }
form { display: flex; gap: 8px; margin-bottom: 16px; }
input[type=text] { flex: 1; max-width: 420px; padding: 6px 10px; border: 1px solid var(--line);
                   border-radius: 6px; font: inherit; background: #fff; }
button { padding: 6px 14px; border: 0; border-radius: 6px; background: var(--accent); color: #fff;
         font: inherit; cursor: pointer; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; }
/* Twelve columns fit 1280 px and wider: URLs and ids break anywhere, text wraps at spaces,
   only the (shortened) times keep one line; the page never scrolls sideways. */
html { overflow-x: hidden; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 7px 10px; text-align: left; vertical-align: baseline;
         border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
td.stamp { white-space: nowrap; }
td.wrap { min-width: 12em; }
td.tags { min-width: 6em; }
th { position: sticky; top: 0; background: #f1f3f6; font-size: 11.5px; font-weight: 600;
     text-transform: uppercase; letter-spacing: .02em; color: #4b5563; overflow-wrap: normal; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4ff; }
td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
td.missing { color: var(--muted); font-style: italic; }
.tag { display: inline-block; margin: 0 4px 2px 0; padding: 0 8px; border-radius: 999px;
       background: #e8eefc; color: #1e40af; font-size: 12px; }
.status { display: inline-block; padding: 0 8px; border-radius: 999px; font-size: 12px; }
.status.online { background: #dcfce7; color: #166534; }
.status.offline { background: #fee2e2; color: #991b1b; }
.status.unknown { background: #f3f4f6; color: #4b5563; }
.empty { padding: 24px; color: var(--muted); text-align: center; }
nav { display: flex; gap: 16px; margin-top: 12px; }
nav a { color: var(--accent); text-decoration: none; }
"""

_MONO = {"registry", "node", "created", "modified", "heartbeat", "url"}
_STAMPS = {"created", "modified", "heartbeat"}
_MISSING = {"missing author", "missing description"}


def _cell(column: str, value: Any) -> str:
    if column == "tags":
        tags = "".join(f'<span class="tag">{escape(str(t))}</span>' for t in value or ())
        return f'<td class="tags">{tags}</td>'
    if column == "status":
        state = value if value in {"online", "offline"} else "unknown"
        return f'<td><span class="status {state}">{escape(str(value))}</span></td>'
    text = "" if value is None else str(value)
    if column in _STAMPS and text:
        # To the second in the cell (three full ISO stamps crowd out the flow's own columns);
        # the stored value in the tooltip.
        short = text[:19].replace("T", " ")
        return f'<td class="mono stamp" title="{escape(text)}">{escape(short)}</td>'
    if column in _MONO:
        return f'<td class="mono">{escape(text)}</td>'
    if column == "description":  # the one long text: it wraps, every other cell keeps one line
        missing = " missing" if text in _MISSING else ""
        return f'<td class="wrap{missing}">{escape(text)}</td>'
    if text in _MISSING:
        return f'<td class="missing">{escape(text)}</td>'
    return f"<td>{escape(text)}</td>"


def render_flows(
    page: Mapping[str, Any],
    service_url: str,
    query: str | None = None,
    by: str | None = None,
    title: str = "flowplex mesh",
) -> str:
    """The HTML page for a ``/flows`` reply (``page`` as :func:`list_rows` returns it).

    ``query`` and ``by`` are the request's own parameters, kept in the form and page links.
    """
    items = page["items"]
    header = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    if items:
        body = "".join(
            "<tr>" + "".join(_cell(c, row.get(c)) for c in COLUMNS) + "</tr>" for row in items
        )
    else:
        body = f'<tr><td class="empty" colspan="{len(COLUMNS)}">no flows</td></tr>'
    p, pp, filtered = page["p"], page["pp"], page["filtered"]
    q = query or ""
    first = p * pp + 1 if items else 0
    links = []
    base: dict[str, Any] = {"format": "html", "pp": pp}
    if by:
        base["by"] = by
    if query:
        base["q"] = query
    if p > 0:
        links.append(f'<a href="?{escape(urlencode({**base, "p": p - 1}))}">&larr; previous</a>')
    if (p + 1) * pp < filtered:
        links.append(f'<a href="?{escape(urlencode({**base, "p": p + 1}))}">next &rarr;</a>')
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1>"
        f'<span class="meta">{escape(service_url)}</span>'
        f'<span class="meta">showing {first}&ndash;{first + len(items) - 1 if items else 0} '
        f"of {filtered} (filtered) / {page['total']} (total) &middot; "
        f"sorted by {escape(str(page['by']))}</span></header>"
        '<form method="get"><input type="hidden" name="format" value="html">'
        f'<input type="text" name="q" value="{escape(q)}" '
        'placeholder=\'organization == "acme" and tag("beta")\'>'
        f'<input type="hidden" name="pp" value="{pp}">'
        + (f'<input type="hidden" name="by" value="{escape(by)}">' if by else "")
        + "<button type=submit>search</button></form>"
        f'<div class="card"><table><thead><tr>{header}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
        f"<nav>{''.join(links)}</nav>"
        "</body></html>\n"
    )
