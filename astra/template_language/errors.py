"""What goes wrong with a docxtpl template: at upload (refused, with the tag and where it is) or at render."""

from __future__ import annotations

REFUSAL_CODES = ("invalid_package", "jinja_syntax", "jinja_forbidden", "mixed_template_languages", "bad_zone_id")


class TemplateLanguageError(ValueError):
    """The template cannot be accepted. ``code`` is one of :data:`REFUSAL_CODES`; ``location`` is
    ``{"part", "block", "path"}`` of the paragraph holding the tag, or None."""

    def __init__(self, code: str, message: str, location: dict | None = None):
        super().__init__(code, message, location)
        self.code, self.message, self.location = code, message, location

    def __str__(self) -> str:
        where = ""
        if self.location:
            where = " (at " + " ".join(f"{k}={v}" for k, v in self.location.items()) + ")"
        return f"{self.code}: {self.message}{where}"


class RenderError(ValueError):
    """A render stopped: a cap passed, or an expression failed on the data (one line, says which)."""
