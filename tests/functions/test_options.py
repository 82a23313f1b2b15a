"""The one option parser, through `App.handle` from every source a client can use: JSON
values, query strings, multipart fields and urlencoded forms. Generated values of every
kind get a 200 or a 400 ``invalid_option`` naming the field, never a 500.

The backend is the in-process fake of test_app.py (fixed scores for 10 classes): these
tests are about parsing, not the model.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from functions.httpio import Headers, HttpRequest
from functions.request.options import MAX_TOP_K, describe
from tests.functions.test_app import B64, PNG, make_app

APP = make_app()


def ask(source: str, value: object) -> tuple[int, dict]:
    """A predict request carrying ``top_k=value`` in ``source``."""
    query: dict[str, str] = {}
    if source == "json":
        body, content_type = json.dumps({"image": B64, "top_k": value}).encode(), \
            "application/json"
    elif source == "query":
        body, content_type = json.dumps({"image": B64}).encode(), "application/json"
        query = {"top_k": str(value)}
    elif source == "form":
        body = urlencode({"image": B64, "top_k": str(value)}).encode()
        content_type = "application/x-www-form-urlencoded"
    else:  # multipart, as wx.uploadFile sends formData
        boundary = "b0undary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"top_k\"\r\n\r\n"
                f"{value}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"tmp.png\"\r\nContent-Type: image/png\r\n\r\n").encode(
                    "utf-8", "surrogatepass") + PNG + f"\r\n--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    response = APP.handle(HttpRequest("POST", "/", Headers({"Content-Type": content_type}),
                                      body, query))
    return response.status, json.loads(response.body)


SOURCES = ("json", "query", "form", "multipart")
TEXT_SOURCES = ("query", "form", "multipart")


def expect_refused(status: int, body: dict) -> None:
    assert status == 400, body
    assert body["error"]["code"] == "invalid_option"
    assert body["error"]["message"].startswith(
        f"top_k must be a positive whole number from 1 to {MAX_TOP_K:,}, got ")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("3", 3), ("0010", 10), ("9", 9),
                                                ("1000", 10), ("4\n", 4)])
def test_good_values_from_every_source(source, text, expected):
    if source == "multipart" and text.endswith("\n"):
        text = text.rstrip("\n")  # the multipart framing of this test adds its own CRLF
    status, body = ask(source, int(text) if source == "json" else text)
    assert status == 200, body
    assert len(body["predictions"][0]["top_k"]) == expected


@pytest.mark.parametrize("source", TEXT_SOURCES)
@pytest.mark.parametrize("text", ["٣", "²", "３", "1" * 5000, "9" * 19, "1001", "0", "-1",
                                  "+3", "1_0", "3.0", "1e3", "0x10", "", " ", "\u00a03",
                                  "3\u2003", "NaN", "true", "𝟑"])
def test_unicode_digits_huge_numbers_and_other_text_are_400(source, text):
    status, body = ask(source, text)
    expect_refused(status, body)


@pytest.mark.parametrize("value", [0, -1, 1001, 10**4000, -(10**300), 1.5, 3.0, 1e308, True,
                                   False, None, [], [3], {}, {"top_k": 3}, "٣", "1" * 4000])
def test_json_values_of_every_kind_outside_the_range_are_400(value):
    status, body = ask("json", value)
    expect_refused(status, body)


def test_a_huge_json_integer_is_described_without_its_digits():
    status, body = ask("json", 10**4000)
    assert body["error"]["message"].endswith("got an integer of more digits than allowed")
    status, body = ask("json", 1001)
    assert body["error"]["message"].endswith("got 1001")


@settings(max_examples=400, deadline=None)
@given(source=st.sampled_from(TEXT_SOURCES),
       text=st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n-"),
                    max_size=30))
def test_generated_text_is_accepted_exactly_when_it_is_ascii_digits_in_range(source, text):
    status, body = ask(source, text)
    stripped = text.strip(" \t")
    valid = stripped.isascii() and stripped.isdigit() and len(stripped) <= 18 \
        and 1 <= int(stripped) <= MAX_TOP_K
    if valid:
        assert status == 200, body
        assert len(body["predictions"][0]["top_k"]) == min(int(stripped), 10)
    else:
        assert status == 400, body
        assert body["error"]["code"] in ("invalid_option", "bad_request")


@settings(max_examples=300, deadline=None)
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3), max_leaves=8))
def test_generated_json_values_get_200_or_a_400_naming_top_k(value):
    status, body = ask("json", value)
    if status == 200:
        assert isinstance(value, (int, str)) and not isinstance(value, bool)
    else:
        expect_refused(status, body)


@pytest.mark.parametrize(("value", "status"), [("png", 400), ("PNG", 400), (5, 400),
                                               ("x" * 500, 400), ("\ud800", 400)])
def test_mask_format_on_a_classifier_is_refused_whatever_its_value(value, status):
    raw = json.dumps({"image": B64, "mask_format": value}).encode()
    response = APP.handle(HttpRequest("POST", "/", Headers(
        {"Content-Type": "application/json"}), raw))
    assert response.status == status
    assert json.loads(response.body)["error"]["code"] == "invalid_option"


@pytest.mark.parametrize(("value", "shown"), [
    (None, "null"), (True, "true"), (12, "12"), (10**30, "an integer of more digits than "
                                                 "allowed"),
    ("abc", "'abc'"), ("a\nb", "'a\\nb'"), ("x" * 60, "'" + "x" * 40 + "...'"),
    ([1], "an array"), ({}, "an object"), (2.5, "2.5")])
def test_values_are_described_safely(value, shown):
    assert describe(value) == shown
