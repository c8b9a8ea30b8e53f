"""The HTML pages, composed once from trusted fragments in `pages/`: one shell, one body each.

Nothing from a request or from Redis ever reaches these strings; data arrives later as
JSON and the page scripts render it as text.
"""

from __future__ import annotations

from pathlib import Path

PAGES_DIR = Path(__file__).parent / "pages"
# name: (URL path, title). The page's script is static/<name>.js.
PAGES = {
    "live": ("/", "Live tail"),
    "search": ("/search", "Search"),
    "trace": ("/trace", "Trace"),
    "services": ("/services", "Services"),
    "stats": ("/stats", "Stats"),
    "errors": ("/errors", "Errors"),
    "alerts": ("/alerts", "Alerts"),
}
SHARED = ("record-filters", "records")


def _fragment(name: str) -> str:
    return (PAGES_DIR / f"{name}.html").read_text()


def _nav(current: str) -> str:
    links = []
    for name, (path, title) in PAGES.items():
        active = ' class="active"' if name == current else ""
        links.append(f'<a href="{path.lstrip("/") or "./"}"{active}>{title}</a>')
    return "".join(links)


def render(name: str) -> str:
    body = _fragment(name)
    for shared in SHARED:
        body = body.replace(f"<!-- {shared} -->\n", _fragment(shared))
    html = _fragment("shell")
    for marker, value in (("title", PAGES[name][1]), ("nav", _nav(name)), ("name", name), ("body", body)):
        html = html.replace(f"<!-- {marker} -->", value)
    return html
