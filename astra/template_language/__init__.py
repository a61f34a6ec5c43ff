"""docxtpl's template language (Jinja2 in Word documents), parsed by Jinja2 and rendered in its sandbox.

See docs/templates.md. :class:`JinjaTemplate` reads a template (refusing what the allow-list does not hold, at
upload) and renders a context; :func:`uses_jinja` tells a docxtpl template from one in ASTRA's zone grammar.
"""

from .errors import REFUSAL_CODES, RenderError, TemplateLanguageError
from .template import JinjaTemplate, JinjaZone, RenderCaps, uses_jinja

__all__ = ["REFUSAL_CODES", "JinjaTemplate", "JinjaZone", "RenderCaps", "RenderError", "TemplateLanguageError",
           "uses_jinja"]
