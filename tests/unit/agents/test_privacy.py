"""PII detection and reversible redaction."""

from __future__ import annotations

import pytest

from aios.agents.llm.privacy import PiiDetector, Redaction


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to ana.silva+work@mail.example.org", "EMAIL"),
        ("call +44 20 7946 0958 tomorrow", "PHONE"),
        ("card 4111-1111-1111-1111 exp 12/29", "CARD"),
        ("token sk-proj_ABCDEFGHIJKLMNOP1234 leaked", "API_KEY"),
        ("aws AKIAIOSFODNN7EXAMPLE in logs", "API_KEY"),
    ],
)
def test_detects_each_kind(text: str, kind: str) -> None:
    assert [f.kind for f in PiiDetector().find(text)] == [kind]


@pytest.mark.parametrize("text", ["order 12345 shipped", "version 3.9.2", "see RFC 2616", "no pii here at all"])
def test_ordinary_text_is_not_pii(text: str) -> None:
    assert PiiDetector().find(text) == []


def test_a_number_failing_luhn_is_not_a_card() -> None:
    # Flagging it as something else (a phone) errs on the private side, which is acceptable.
    assert "CARD" not in {f.kind for f in PiiDetector().find("1234 5678 9012 3456")}


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


def test_prefilters_never_hide_what_the_patterns_find() -> None:
    detector = PiiDetector()
    # Non-ASCII digits are matched by the regexes but not counted by the prefilter: such texts are scanned in full.
    for text in ("call +44 20 7946 0958 today", "card 4111 1111 1111 1111", "mail ann@example.org",
                 "key sk-abcdefghijklmnop1234", "AKIAABCDEFGHIJKLMNOP", "tel \u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669"):
        assert detector.contains_pii([text]), text
    assert not detector.contains_pii(["order 123 shipped to the warehouse", "no digits here"])
