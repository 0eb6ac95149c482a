"""PII detection and reversible redaction for privacy-aware routing.

A prompt with PII (or a task marked ``restricted``) may only reach a local model. With
redaction on, a remote call instead sees placeholders such as ``<EMAIL_1>``, and the answer has
them restored, so the values never leave the machine.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

# Each detector is a name and a pattern. Ordered: keys before card numbers before phones, so a
# long digit-bearing key is not mistaken for a phone number.
DEFAULT_PATTERNS: Mapping[str, str] = {
    "API_KEY": r"\b(?:sk|pk|rk|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{16,}\b|\bAKIA[0-9A-Z]{16}\b",
    "EMAIL": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
    "CARD": r"\b(?:\d[ -]?){13,19}\b",
    "PHONE": r"(?<![\w+])\+?\d{1,3}?[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}\b",
}


_KEY_PREFIXES = ("sk-", "sk_", "pk-", "pk_", "rk-", "rk_", "ghp-", "ghp_", "gho-", "gho_", "xoxa", "xoxb", "xoxp",
                 "AKIA")
_MIN_PHONE_DIGITS = 8  # the shortest number PHONE matches has 2 + 3 + 3 digits; CARD needs 13


def _enough_digits(text: str) -> bool:
    # \d also matches non-ASCII digits, which str.count below does not see: such texts are scanned.
    return not text.isascii() or sum(map(text.count, "0123456789")) >= _MIN_PHONE_DIGITS


# A cheap test, in C, that must pass before a default detector's regex can match: the regexes try
# every position of the text, which over a few kB of prompt was most of a routing decision.
_MAY_MATCH: Mapping[str, Callable[[str], bool]] = {
    "API_KEY": lambda t: any(p in t for p in _KEY_PREFIXES),
    "EMAIL": lambda t: "@" in t,
    "CARD": _enough_digits,
    "PHONE": _enough_digits,
}
_CACHE_SIZE = 256


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str


@dataclass
class PiiDetector:
    """Regex detectors by kind; card numbers must also pass the Luhn check."""

    patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))

    def __post_init__(self) -> None:
        # Prefilters apply only to the default patterns they were written for.
        self._compiled = [(kind, re.compile(p), _MAY_MATCH.get(kind) if p == DEFAULT_PATTERNS.get(kind) else None)
                          for kind, p in self.patterns.items()]
        self._seen: OrderedDict[str, bool] = OrderedDict()

    def find(self, text: str) -> list[Finding]:
        taken: list[tuple[int, int]] = []
        found: list[Finding] = []
        for kind, pattern, may_match in self._compiled:
            if may_match is not None and not may_match(text):
                continue
            for m in pattern.finditer(text):
                if any(m.start() < end and start < m.end() for start, end in taken):
                    continue  # already claimed by an earlier, more specific detector
                if kind == "CARD" and not _luhn_ok(re.sub(r"\D", "", m.group())):
                    continue
                taken.append((m.start(), m.end()))
                found.append(Finding(kind, m.start(), m.end(), m.group()))
        return sorted(found, key=lambda f: f.start)

    def contains_pii(self, texts: Iterable[str]) -> bool:
        return any(self._has_pii(t) for t in texts)

    def _has_pii(self, text: str) -> bool:
        # A role's system prompt is the same string on every call: remember recent answers.
        known = self._seen.get(text)
        if known is None:
            known = self._seen[text] = bool(self.find(text))
            if len(self._seen) > _CACHE_SIZE:
                self._seen.popitem(last=False)
        return known


@dataclass
class Redaction:
    """Placeholders for the values masked in one request, to restore them in the answer."""

    values: dict[str, str] = field(default_factory=dict)  # placeholder -> original
    _by_value: dict[str, str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def mask(self, text: str, detector: PiiDetector) -> str:
        out, last = [], 0
        for f in detector.find(text):
            out.append(text[last:f.start])
            placeholder = self._by_value.get(f.text)
            if placeholder is None:
                self._counts[f.kind] = self._counts.get(f.kind, 0) + 1
                placeholder = f"<{f.kind}_{self._counts[f.kind]}>"
                self._by_value[f.text] = placeholder
                self.values[placeholder] = f.text
            out.append(placeholder)
            last = f.end
        out.append(text[last:])
        return "".join(out)

    def restore(self, text: str) -> str:
        for placeholder, value in self.values.items():
            text = text.replace(placeholder, value)
        return text
