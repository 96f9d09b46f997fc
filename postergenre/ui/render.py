"""HTML from the Jinja2 templates in ``templates/``: autoescaped, and tolerant of what stored records hold.

Templates read stored JSON (a run's report.json, a version's decision) whose fields may be missing, null or of
another type. Lookups of absent fields give an empty value instead of an error (``ChainableUndefined``) and the
filters here turn anything into text, so a record written by older or newer code still renders. Each section
renders on its own: one whose source fails shows its error in place and the rest of the page still renders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from jinja2 import ChainableUndefined, Environment, PackageLoader, Undefined, UndefinedError
from markupsafe import Markup

from postergenre.log import get_logger
from postergenre.ui.queries import SOURCE_ERRORS, mapping

log = get_logger(__name__)

# What a section turns into an "Unavailable" message rather than a failed page: a source that cannot be read
# and a record holding something its template cannot use.
SECTION_ERRORS = (*SOURCE_ERRORS, UndefinedError, AttributeError, KeyError, TypeError, ValueError)
MISSING = "–"


def _absent(value: Any) -> bool:
    return value is None or isinstance(value, Undefined)


def is_numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def text(value: Any) -> str:
    """Any stored value as text; missing is empty."""
    return "" if _absent(value) else str(value)


def cell(value: Any, spec: Any = None) -> str:
    """A table cell: floats to 3 decimals unless a format ``spec`` is given (".1%", ".4f", "g"), integers
    as they are, booleans as yes/no, anything else as text, missing as a dash."""
    if _absent(value):
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if is_numeric(value):
        if isinstance(spec, str):
            return format(value, spec)
        return str(value) if isinstance(value, int) else f"{value:.3f}"
    return str(value)


def records(value: Any, key: str, order: Iterable[str] = ()) -> list[dict]:
    """``{name: {field: value}}`` as table rows ``{key: name, field: value}``: names in ``order`` first (those
    present), then the others as stored. Anything that is not a JSON object gives no rows."""
    by_name = mapping(value)
    first = [name for name in order if name in by_name]
    names = [*first, *(name for name in by_name if name not in first)]
    return [{**mapping(by_name[name]), key: name} for name in names]


def rows(value: Any) -> list[dict]:
    """The JSON objects of a stored list (table rows); anything else gives none."""
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list | tuple) else []


def strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def utc_minute(value: Any) -> str:
    """A stored ISO timestamp to the minute, in UTC; anything else as it is."""
    if not isinstance(value, str):
        return text(value) or MISSING
    try:
        return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("postergenre.ui"),
        autoescape=True,
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        text=text,
        cell=cell,
        records=records,
        rows=rows,
        mapping=mapping,
        strings=strings,
        utc_minute=utc_minute,
    )
    env.tests["numeric"] = is_numeric
    return env


_ENV = _environment()


def render(template: str, **context: Any) -> Markup:
    return Markup(_ENV.get_template(template).render(**context))


def section(template: str, title: str, load: Callable[[], dict], **context: Any) -> Markup:
    """``template`` rendered with what ``load`` returns (plus ``context``), or the error in its place."""
    try:
        return render(template, **load(), **context)
    except SECTION_ERRORS as err:
        log.warning("page section failed", section=title, error=repr(err))
        return render("unavailable.html", title=title, error=f"{type(err).__name__}: {err}")


def page(title: str, sections: Sequence[Markup], *, root: str, back: bool = False) -> str:
    """``root`` is the relative path back to the app root ('', '../', ...), so links survive any prefix;
    ``back`` adds a link to the overview."""
    return render("base.html", title=title, sections=sections, root=root, back=back)


def error_page(status: int, detail: str, login_url: str | None) -> str:
    return render(
        "error.html", title="postergenre", status=status, detail=detail, login_url=login_url, root=""
    )
