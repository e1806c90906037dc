"""OWS 1.1 ExceptionReport documents (OGC 06-121r3, 8.5)."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from tileserver.errors import OWSException

CONTENT_TYPE = "application/xml"

_MAX_TEXT = 500  # client-supplied values are echoed in messages; keep reports small


def exception_report(exc: OWSException) -> bytes:
    locator = f" locator={quoteattr(_printable(exc.locator[:100]))}" if exc.locator else ""
    text = exc.text if len(exc.text) <= _MAX_TEXT else exc.text[:_MAX_TEXT] + "..."
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ExceptionReport xmlns="http://www.opengis.net/ows/1.1"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xsi:schemaLocation="http://www.opengis.net/ows/1.1'
        ' http://schemas.opengis.net/ows/1.1.0/owsExceptionReport.xsd"'
        ' version="1.1.0" xml:lang="en">\n'
        f"  <Exception exceptionCode={quoteattr(exc.code)}{locator}>\n"
        f"    <ExceptionText>{escape(_printable(text))}</ExceptionText>\n"
        "  </Exception>\n"
        "</ExceptionReport>\n"
    ).encode()


def _printable(text: str) -> str:
    """Control characters, which XML 1.0 cannot carry, replaced by U+FFFD."""
    return "".join(ch if ch.isprintable() or ch in "\n\t" else "\ufffd" for ch in text)
