"""PII detection and reversible redaction."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aios.agents.llm.privacy import PiiDetector, Redaction
from aios.schemas.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to ana.silva+work@mail.example.org", "EMAIL"),
        ("call +44 20 7946 0958 tomorrow", "PHONE"),
        ("card 4111-1111-1111-1111 exp 12/29", "CARD"),
        ("token sk-proj_ABCDEFGHIJKLMNOP1234 leaked", "API_KEY"),
        ("aws AKIAIOSFODNN7EXAMPLE in logs", "API_KEY"),
        ("HF_TOKEN=hf_QwErTyUiOpAsDfGhJkLzXcVbNm1234567890", "API_KEY"),
    ],
)
def test_detects_each_kind(text: str, kind: str) -> None:
    assert [f.kind for f in PiiDetector().find(text)] == [kind]


@pytest.mark.parametrize("text", ["order 12345 shipped", "version 3.9.2", "see RFC 2616", "no pii here at all",
                                  # issue 15: these failed tasks when only remote models were configured
                                  "port 9092 and 6379, pid 123456789", "build id 12345678901",
                                  "clone git@github.com:acme/shop.git", "ip 192.168.100.200, released 2024-05-01"])
def test_ordinary_text_is_not_pii(text: str) -> None:
    assert PiiDetector().find(text) == []


@pytest.mark.parametrize("number", ["(415) 555-0132", "+1 415 555 0132", "+14155550132", "020 7946 0321",
                                    "+44 (0)20 7946 0112", "0044 20 7946 0777", "06 12 34 56 78", "+33 6 12 34 56 78",
                                    "030 12345678", "+49 151 23456789", "03-1234-5678", "(11) 91234-5678",
                                    "+91 98765 43210", "(02) 9876 5432", "+86 138 0013 8000"])
def test_phone_numbers_in_national_and_international_formats(number: str) -> None:
    assert [(f.kind, f.text) for f in PiiDetector().find(f"reach her at {number}, ticket 88231")] == [
        ("PHONE", number)]


def test_bare_digits_are_a_phone_only_after_a_phone_word() -> None:
    detector = PiiDetector()
    assert detector.find("request 4155550176 took 12 ms") == []
    assert [f.text for f in detector.find("phone=4155550176&zip=94107")] == ["4155550176"]


def test_national_formats_follow_the_configured_regions() -> None:
    assert PiiDetector(phone_regions=("US",)).find("Paris: 01 42 68 53 00") == []
    assert [f.kind for f in PiiDetector(phone_regions=("FR",)).find("Paris: 01 42 68 53 00")] == ["PHONE"]
    assert [f.kind for f in PiiDetector(phone_regions=()).find("Paris: +33 1 42 68 53 00")] == ["PHONE"]
    with pytest.raises(ConfigError, match="unknown phone region 'XX'"):
        PiiDetector(phone_regions=("XX",))


def test_a_number_failing_luhn_is_not_a_card() -> None:
    assert "CARD" not in {f.kind for f in PiiDetector().find("1234 5678 9012 3456")}


def test_luhn_valid_numbers_outside_issuer_ranges_are_not_cards() -> None:
    # A barcode and a millisecond timestamp that pass Luhn; no card number starts with 59 or 17.
    assert PiiDetector().find("EAN 5901234123457 scanned at 1714566645129") == []


def test_the_detector_is_configurable() -> None:
    detector = PiiDetector(patterns={"EMPLOYEE_ID": r"\bEMP-\d{6}\b"})
    assert [f.kind for f in detector.find("ask EMP-004211 or bob@x.io")] == ["EMPLOYEE_ID"]


def test_redaction_is_reversible_and_consistent() -> None:
    d = PiiDetector()
    r = Redaction()
    text = "bob@x.io and bob@x.io, then amy@y.io"
    masked = r.mask(text, d)
    assert masked == "<EMAIL_1> and <EMAIL_1>, then <EMAIL_2>"
    assert r.restore(masked) == text
    assert r.restore("reply to <EMAIL_2>") == "reply to amy@y.io"


def test_redaction_masks_only_the_pii_among_engineering_numbers() -> None:
    r = Redaction()
    masked = r.mask("port 9092, pid 48213: call +44 20 7946 0958 at 2024-05-01T12:30:45Z", PiiDetector())
    assert masked == "port 9092, pid 48213: call <PHONE_1> at 2024-05-01T12:30:45Z"


def test_prefilters_never_hide_what_the_patterns_find() -> None:
    detector = PiiDetector()
    # Non-ASCII digits are matched by the regexes but not counted by the prefilter: such texts are scanned in full.
    for text in ("call +44 20 7946 0958 today", "card 4111 1111 1111 1111", "mail ann@example.org",
                 "key sk-abcdefghijklmnop1234", "AKIAABCDEFGHIJKLMNOP",
                 "tel \u0660\u0662\u0660 \u0667\u0669\u0664\u0666 \u0660\u0669\u0665\u0668"):  # 020 7946 0958
        assert detector.contains_pii([text]), text
    assert not detector.contains_pii(["order 123 shipped to the warehouse", "no digits here"])


# Engineering numbers as prompts carry them, each after its label: none is a phone number.
_MS = st.integers(946_684_800_000, 4_102_444_800_000)  # 2000 to 2100, in ms


def _at(fmt: str) -> st.SearchStrategy[str]:
    return _MS.map(lambda ms: datetime.fromtimestamp(ms / 1000, UTC).strftime(fmt))


def _joined(sep: str, *parts: st.SearchStrategy[object]) -> st.SearchStrategy[str]:
    return st.tuples(*parts).map(lambda values: sep.join(map(str, values)))


_BYTE = st.integers(0, 255)
_ENGINEERING_NUMBER = st.one_of(
    st.integers(1, 65535).map(str),  # ports
    st.integers(1, 4_194_304).map(str),  # pids
    st.integers(0, 10**19).map(str),  # ids, offsets, counts
    _joined("", _joined(".", st.integers(0, 99), st.integers(0, 99), st.integers(0, 999)),
            st.sampled_from(["", "-rc.1", "-beta.12", "+build.5678", "+20240501"])),  # semver
    _joined(".", st.integers(0, 200), st.integers(0, 9), st.integers(0, 9999), st.integers(0, 999)),  # browser builds
    st.text("0123456789abcdef", min_size=7, max_size=64),  # hashes
    st.uuids().map(str),
    _MS.map(str), _MS.map(lambda ms: str(ms // 1000)), _MS.map(lambda ms: str(ms * 1_000_000)),
    _at("%Y-%m-%d"), _at("%Y-%m-%dT%H:%M:%S.%fZ"), _at("%Y-%m-%d %H:%M:%S"), _at("%Y%m%d"),
    _at("%d.%m.%Y"), _at("%m/%d/%Y"),
    _joined(".", _BYTE, _BYTE, _BYTE, _BYTE),  # IPv4
    _joined(":", _joined(".", _BYTE, _BYTE, _BYTE, _BYTE), st.integers(1, 65535)),
    _joined(".", st.integers(0, 10**6), st.integers(0, 999_999)),  # decimals
    _joined("", st.integers(1, 99_999), st.sampled_from(["ms", "s", "h", "Mi", "Gi", " MB", " bytes", " rows"])),
    _joined("-", st.sampled_from(["PLAT", "ORD", "INV"]), st.integers(2000, 2030), st.integers(0, 999_999)),
)
_LABEL = st.sampled_from(["port", "pid", "build id", "offset", "version", "commit", "trace", "at", "took", "size",
                          "lag", "partition", "order", "id", "from", "limit", "uid", "seq", "epoch"])


_DETECTOR = PiiDetector()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_LABEL, _ENGINEERING_NUMBER), min_size=1, max_size=8),
       st.sampled_from([", ", " and ", "; ", "\n", " ", ": ", " | "]))
def test_engineering_numbers_are_never_phone_numbers(parts: list[tuple[str, str]], sep: str) -> None:
    text = sep.join(f"{label} {number}" for label, number in parts)
    assert [f for f in _DETECTOR.find(text) if f.kind == "PHONE"] == []
