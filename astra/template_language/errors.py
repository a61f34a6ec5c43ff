"""What goes wrong with a docxtpl template: at upload (refused, with the tag and where it is) or at render."""

from __future__ import annotations

from astra.ingest.zones import TemplateRefused

REFUSAL_CODES = ("invalid_package", "jinja_syntax", "jinja_forbidden", "mixed_template_languages", "bad_zone_id")


class TemplateLanguageError(TemplateRefused):
    """The template cannot be accepted: INGEST's refusal, with ``code`` one of :data:`REFUSAL_CODES` and
    ``location`` ``{"part", "block", "path"}`` of the paragraph holding the tag (or None)."""


class RenderError(ValueError):
    """A render stopped: a cap passed, or an expression failed on the data (one line, says which)."""
