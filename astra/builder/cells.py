"""Table cells as text: numbers and dates written the way the session's locale writes them.

The intent output types every column (``astra.core.data``: boolean, integer, decimal, date,
datetime, text) and gives a date cell as ``{"value": ISO, "text": original}``. Dates are written
with the locale's short numeric pattern, numbers with its decimal separator (no grouping: ids and
readings are not amounts). Locales are matched on the tag, then the language; an unknown or
absent locale writes ISO dates and a point.

DECISION: a small table of patterns instead of CLDR (babel is not a dependency of the project);
the locales here are the ones the product is sold in. Adding babel would give every locale.
"""

from __future__ import annotations

import datetime as dt

from astra.core.binding import normalise_locale

# (date pattern, decimal separator) by locale tag or language.
LOCALES = {
    "en-us": ("%m/%d/%Y", "."),
    "en": ("%d/%m/%Y", "."),  # en-GB, en-AU, en-IE, en-NZ, en-IN...
    "en-ca": ("%Y-%m-%d", "."),
    "de": ("%d.%m.%Y", ","),
    "fr": ("%d/%m/%Y", ","),
    "fr-ca": ("%Y-%m-%d", ","),
    "es": ("%d/%m/%Y", ","),
    "it": ("%d/%m/%Y", ","),
    "pt": ("%d/%m/%Y", ","),
    "nl": ("%d-%m-%Y", ","),
    "sv": ("%Y-%m-%d", ","),
    "da": ("%d.%m.%Y", ","),
    "nb": ("%d.%m.%Y", ","),
    "fi": ("%d.%m.%Y", ","),
    "pl": ("%d.%m.%Y", ","),
    "ja": ("%Y/%m/%d", "."),
    "zh": ("%Y/%m/%d", "."),
}
_ISO = ("%Y-%m-%d", ".")
NUMERIC_TYPES = ("integer", "decimal")


class CellFormat:
    """Formats cells for one locale."""

    def __init__(self, locale: str | None) -> None:
        tag = normalise_locale(locale) if locale else ""
        self.date_pattern, self.decimal = LOCALES.get(tag) or LOCALES.get(tag.split("-")[0]) or _ISO

    def text(self, column_type: str, value: object) -> str:
        """The cell's text; "" for an empty cell."""
        if value is None:
            return ""
        if isinstance(value, dict):  # date / datetime: {"value": ISO, "text": original}
            return self._date(column_type, value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float) and column_type in NUMERIC_TYPES:
            text = repr(value)  # the shortest text that reads back as the same number
            if "e" in text:  # 1e-05: write it out, as a table reader expects
                text = format(value, "f").rstrip("0").rstrip(".")
            return text.replace(".", self.decimal)
        return str(value)

    def _date(self, column_type: str, cell: dict) -> str:
        iso = str(cell.get("value") or "")
        try:
            moment = dt.datetime.fromisoformat(iso)
        except ValueError:
            return str(cell.get("text") or iso)
        day = moment.strftime(self.date_pattern)
        if column_type == "datetime":
            return f"{day} {moment:%H:%M}" + (f":{moment:%S}" if moment.second else "")
        return day
