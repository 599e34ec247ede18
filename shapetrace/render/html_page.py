"""The shell every HTML report shares: one self-contained page, its data as inline JSON.

The CSS and JS live beside this module in report_assets/ (package data) and are inlined, so a
report opens offline and loads nothing. Pure text: no I/O beyond reading those assets once.
"""

from __future__ import annotations

import functools
import html
import json
from importlib import resources
from typing import Any

__all__ = ["asset", "attribute", "escape", "json_script", "page"]

# In a <script>, "</script>" or "<!--" inside a JSON string would end or confuse the element;
# written as JSON escapes they parse back to the same characters.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


@functools.cache
def asset(name: str) -> str:
    """The text of report_assets/`name` (CSS or JS), read once per process."""
    return resources.files("shapetrace.render").joinpath("report_assets", name).read_text(encoding="utf-8")


def escape(text: object) -> str:
    """Text for an HTML element's content."""
    return html.escape(str(text), quote=False)


def attribute(text: object) -> str:
    """Text for a double-quoted HTML attribute value."""
    return html.escape(str(text), quote=True)


def json_script(element_id: str, data: Any) -> str:
    """`data` as an application/json script that no string inside it can close early."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False).translate(_SCRIPT_SAFE)
    return f'<script type="application/json" id="{attribute(element_id)}">{text}</script>'


def page(title: str, body: str, *, style: str = "", scripts: tuple[str, ...] = ()) -> str:
    """A whole HTML document: the shared CSS (plus `style`), `body`, then the named JS assets.

    Args:
        title: the document title.
        body: HTML for inside <body>, data scripts included.
        style: extra CSS, e.g. colours computed for this report.
        scripts: names of JS assets to inline after the body, in order.

    Returns:
        The document as text, beginning with <!DOCTYPE html>.
    """
    code = "".join(f"<script>\n{asset(name)}</script>\n" for name in scripts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="shapetrace">\n'
        f"<title>{escape(title)}</title>\n"
        f"<style>\n{asset('report.css')}{style}</style>\n"
        f"</head>\n<body>\n{body}\n{code}</body>\n</html>\n"
    )
