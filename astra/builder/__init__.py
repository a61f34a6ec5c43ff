"""BUILDER: the session's document (see :mod:`astra.builder.engine`), its output checks
(:mod:`astra.builder.check`) and the pieces they share: sanitized text, checked media, cell formats."""
