"""Unit tests of tileserver.ows: OWS 1.1 ExceptionReport documents."""

from __future__ import annotations

import pytest
from lxml import etree

from tileserver.errors import (
    OWSException,
    invalid_parameter,
    missing_parameter,
    not_found,
    operation_not_supported,
    tile_out_of_range,
)
from tileserver.ows import CONTENT_TYPE, exception_report

OWS = "{http://www.opengis.net/ows/1.1}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"


def parse(exc: OWSException) -> etree._Element:
    document = exception_report(exc)
    assert isinstance(document, bytes)
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return etree.fromstring(document)  # raises on malformed XML


def the_exception(root: etree._Element) -> etree._Element:
    children = list(root)
    assert len(children) == 1
    return children[0]


def test_report_structure() -> None:
    root = parse(OWSException("InvalidParameterValue", "Unknown layer 'x'", "layer"))
    assert root.tag == f"{OWS}ExceptionReport"
    assert root.get("version") == "1.1.0"
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "en"
    assert "owsExceptionReport.xsd" in root.get(f"{XSI}schemaLocation", "")
    exception = the_exception(root)
    assert exception.tag == f"{OWS}Exception"
    texts = list(exception)
    assert [t.tag for t in texts] == [f"{OWS}ExceptionText"]
    assert CONTENT_TYPE == "application/xml"


@pytest.mark.parametrize(
    ("exc", "code", "locator", "text"),
    [
        (
            missing_parameter("TileRow"),
            "MissingParameterValue",
            "tilerow",
            "Missing parameter: TileRow",
        ),
        (
            invalid_parameter("Layer", "Unknown layer 'x'"),
            "InvalidParameterValue",
            "layer",
            "Unknown layer 'x'",
        ),
        (tile_out_of_range("TileCol", "out"), "TileOutOfRange", "tilecol", "out"),
        (
            operation_not_supported("Foo"),
            "OperationNotSupported",
            "request",
            "Operation not supported: Foo",
        ),
        (not_found("No such resource: /x"), "NotFound", None, "No such resource: /x"),
        (
            OWSException("NoApplicableCode", "Internal error", None, 500),
            "NoApplicableCode",
            None,
            "Internal error",
        ),
    ],
)
def test_code_locator_and_text(
    exc: OWSException, code: str, locator: str | None, text: str
) -> None:
    exception = the_exception(parse(exc))
    assert exception.get("exceptionCode") == code
    assert exception.get("locator") == locator
    assert exception.findtext(f"{OWS}ExceptionText") == text


def test_empty_locator_is_left_out() -> None:
    exception = the_exception(parse(OWSException("NoApplicableCode", "x", "")))
    assert "locator" not in exception.attrib


@pytest.mark.parametrize(
    "text",
    [
        "<b>bold</b>",
        "a & b",
        "]]> <![CDATA[",
        "quotes \" and '",
        "&amp; already escaped",
        "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e 'boom'>]>&e;",
        "unicode: Zürich, 東京, 🗺",
    ],
)
def test_text_is_escaped(text: str) -> None:
    exception = the_exception(parse(OWSException("InvalidParameterValue", text, "layer")))
    assert exception.findtext(f"{OWS}ExceptionText") == text


@pytest.mark.parametrize("locator", ["a<b", "a&b", 'say "hi"', "it's", "<>&\"'"])
def test_locator_is_escaped(locator: str) -> None:
    exception = the_exception(parse(OWSException("InvalidParameterValue", "x", locator)))
    assert exception.get("locator") == locator


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nul\x00byte", "nul\ufffdbyte"),
        ("bell\x07 escape\x1b[31m", "bell\ufffd escape\ufffd[31m"),
        ("del\x7f", "del\ufffd"),
        ("c1\x85", "c1\ufffd"),
        ("surrogate \ud800", "surrogate \ufffd"),
        ("noncharacter \uffff", "noncharacter \ufffd"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
    ],
)
def test_control_characters_are_replaced(text: str, expected: str) -> None:
    exception = the_exception(parse(OWSException("InvalidParameterValue", text, "layer")))
    assert exception.findtext(f"{OWS}ExceptionText") == expected


def test_long_text_is_truncated() -> None:
    exception = the_exception(parse(OWSException("InvalidParameterValue", "x" * 10_000, "layer")))
    text = exception.findtext(f"{OWS}ExceptionText")
    assert text == "x" * 500 + "..."


def test_text_of_exactly_500_characters_is_kept() -> None:
    exception = the_exception(parse(OWSException("InvalidParameterValue", "y" * 500, "layer")))
    assert exception.findtext(f"{OWS}ExceptionText") == "y" * 500


def test_truncation_never_splits_an_escape() -> None:
    text = "&" * 1000
    exception = the_exception(parse(OWSException("InvalidParameterValue", text, "layer")))
    assert exception.findtext(f"{OWS}ExceptionText") == "&" * 500 + "..."


def test_long_locator_is_truncated() -> None:
    exception = the_exception(parse(OWSException("InvalidParameterValue", "x", "l" * 300)))
    assert exception.get("locator") == "l" * 100


def test_report_of_a_whole_client_value_stays_small() -> None:
    document = exception_report(OWSException("InvalidParameterValue", "<" * 100_000, "layer"))
    assert len(document) < 4000
