"""PII detection and reversible redaction for privacy-aware routing.

A prompt with PII may reach a remote model only masked: the call sees placeholders such as
``<EMAIL_1>``, and the answer has them restored, so the values never leave the machine (or, as a
setting, such prompts stay on local models). A task marked ``restricted`` never leaves.

Engineering prompts are full of ports, pids, ids, versions and timestamps, and each one taken for
PII is a value masked from the model (or a task kept off remote models). So phone numbers are
validated with ``phonenumbers`` (libphonenumber's metadata: valid ranges and how each country
groups its digits), and card numbers by issuer range and Luhn. ``tests/data/pii_corpus.jsonl``
measures precision and recall (docs/privacy.md).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import Leniency, PhoneMetadata, PhoneNumberMatcher

from aios.schemas.errors import ConfigError

# Each detector is a name and a pattern. Ordered: keys before card numbers before phones, so a
# long digit-bearing key is not mistaken for a phone number.
DEFAULT_PATTERNS: Mapping[str, str] = {
    "API_KEY": r"\b(?:sk|pk|rk|ghp|gho|xox[abp])[-_][A-Za-z0-9_-]{16,}\b|\bAKIA[0-9A-Z]{16}\b"
               r"|\bgithub_pat_[A-Za-z0-9_]{22,}\b|\bglpat-[A-Za-z0-9_-]{20,}\b|\bhf_[A-Za-z0-9]{30,}\b"
               r"|\bAIza[0-9A-Za-z_-]{35}\b",
    # Not user@host:path, which is an scp or git remote (git@github.com:org/repo.git), not a mailbox.
    "EMAIL": r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b(?![\w.-]*:[\w~/])",
    "CARD": r"\b(?:\d[ -]?){13,19}\b",
    # Candidates only: digit groups joined by single separators, maybe after a + and an area code
    # in brackets, not part of a word, path, version or key. libphonenumber decides. (The leading
    # lookahead lets most positions fail at once: a quarter faster over digit-heavy text.)
    "PHONE": r"(?=[+(\d])(?<![\w+.\-/#@$%&\\])(?:\+ ?)?(?:\(\d{1,5}\) ?)?\d[\d().\- ]{5,22}\d(?!\w|[.\-:/]\w)",
}

# The regions whose national formats (no + or 00 prefix) are recognised: each adds recall for its
# own formats and some risk of reading an ordinary number as a phone (docs/privacy.md). Numbers
# written with their country code are recognised from every region.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "ES", "IT", "NL",
                                          "KR", "CH")

# Written without separators, a ten-digit number is far more often an id, a timestamp or a count
# than a phone: it counts as one only right after a word like these.
_PHONE_WORDS = re.compile(r"(?i)\b(?:phone|tel|mobile|cell|call|ring|dial|fax|sms|whatsapp|contact)\w*\W{0,4}$")
_PHONE_WORD_WINDOW = 24
# Shapes that are never phone numbers, whatever their digits: IPv4 addresses, dates (year first
# or last), decimals, and dotted numbers other than 3.3.4 (North America) or in four or more
# groups (01.42.68.53.00), which are versions. A regex turns them away before any libphonenumber
# call (~100 µs each).
_NOT_PHONE = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b|\b0\.\d|^(?!\d{3}\.\d{3}\.\d{4}$)\d+(?:\.\d+){1,2}$"
                        r"|\b(?:19|20)\d\d([-./])\d\d?\1\d\d?\b|\b\d\d?([-./])\d\d?\2(?:19|20)\d\d\b")
_GROUPS = re.compile(r"\d+")
_PHONE_DIGITS = (7, 17)  # the shortest national numbers; E.164's 15 plus an international prefix

# Issuer ranges and lengths (Visa, Mastercard, Amex, Discover, UnionPay, JCB, Diners, Maestro,
# Mir). One random digit string in ten passes Luhn, so without them millisecond timestamps, ids
# and barcodes were read as cards.
_CARD_ISSUERS = re.compile(
    r"4\d{15}(?:\d{3})?|(?:5[1-5]\d\d|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)\d{12}|3[47]\d{13}"
    r"|(?:6011|64[4-9]\d|65\d\d)\d{12,15}|62\d{14,17}|35(?:2[89]|[3-8]\d)\d{12,15}|3(?:0[0-5]|[689]\d)\d{11,16}"
    r"|(?:5018|5020|5038|5893|6304|6759|676[1-3])\d{9,15}|220[0-4]\d{12,15}")

_KEY_PREFIXES = ("sk-", "sk_", "pk-", "pk_", "rk-", "rk_", "ghp-", "ghp_", "gho-", "gho_", "xoxa", "xoxb", "xoxp",
                 "AKIA", "github_pat_", "glpat-", "hf_", "AIza")


def _digit_count(text: str) -> int:
    return sum(map(text.count, "0123456789"))


def _enough_digits(minimum: int) -> Callable[[str], bool]:
    # \d also matches non-ASCII digits, which str.count does not see: such texts are scanned.
    return lambda text: not text.isascii() or _digit_count(text) >= minimum


# A cheap test, in C, that must pass before a default detector's regex can match: the regexes try
# every position of the text, which over a few kB of prompt was most of a routing decision.
_MAY_MATCH: Mapping[str, Callable[[str], bool]] = {
    "API_KEY": lambda t: any(p in t for p in _KEY_PREFIXES),
    "EMAIL": lambda t: "@" in t,
    "CARD": _enough_digits(13),
    "PHONE": _enough_digits(_PHONE_DIGITS[0]),
}
_CACHE_SIZE = 256
_NUMBERS_CACHE_SIZE = 4096


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(digits: str) -> bool:
    return _CARD_ISSUERS.fullmatch(digits) is not None and _luhn_ok(digits)


def _card(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The card number that ``text[start:end]`` (digit groups) begins with, if any.

    The groups may run on into an expiry or a security code ("4111 1111 1111 1111 12/29 737"), so
    each group boundary is tried as the card's end, longest first.
    """
    for stop in range(end, start, -1):
        if stop == end or text[stop] in " -":
            digits = re.sub(r"\D", "", text[start:stop])
            if len(digits) < 13:
                break
            if len(digits) <= 19 and _card_ok(digits):
                return [(start, stop)]
    return []


@dataclass(frozen=True)
class _Region:
    """What a national number of one region can be, judged from its digits alone.

    libphonenumber costs ~100 µs per candidate and region; this costs ~1 µs, and turns most
    regions away first (a number of the wrong length, or that no range of the region begins with).
    """

    code: str
    national_prefix: re.Pattern[str] | None
    international_prefix: re.Pattern[str] | None
    lengths: frozenset[int]
    national_number: re.Pattern[str]

    @classmethod
    def load(cls, code: str) -> _Region:
        meta = PhoneMetadata.metadata_for_region(code)
        desc = meta.general_desc if meta is not None else None
        if meta is None or desc is None or desc.national_number_pattern is None:
            raise ConfigError(f"unknown phone region {code!r}: use ISO 3166 codes such as US, GB or DE")
        prefix = meta.national_prefix_for_parsing or meta.national_prefix
        return cls(code, re.compile(prefix) if prefix else None,
                   re.compile(meta.international_prefix) if meta.international_prefix else None,
                   frozenset(desc.possible_length), re.compile(desc.national_number_pattern))

    def may_be(self, digits: str) -> bool:
        if self.international_prefix is not None and self.international_prefix.match(digits):
            return True  # dialled abroad from here (0044 …): libphonenumber reads the country code
        prefix = self.national_prefix.match(digits) if self.national_prefix is not None else None
        number = digits[prefix.end():] if prefix else digits
        return len(number) in self.lengths and self.national_number.fullmatch(number) is not None


def _valid_spans(candidate: str, region: str) -> tuple[tuple[int, int], ...]:
    """Where ``candidate`` holds valid numbers, dialled from ``region`` (``ZZ``: with a + only)."""
    try:
        valid = phonenumbers.is_valid_number(phonenumbers.parse(candidate, region))
    except phonenumbers.NumberParseException:
        valid = False
    if candidate.startswith("+"):
        # The country code is evidence enough, however the rest is grouped (+20 10 1234 5678).
        return ((0, len(candidate)),) if valid else ()
    if not valid:
        return ()  # the usual answer, at a third of the matcher's cost
    # A national number must also be grouped as its country writes it: "9092 6379" and
    # "61950-6700" are valid numbers by their digits (German, Spanish), but nobody writes them so.
    exact = tuple((m.start, m.end) for m in PhoneNumberMatcher(candidate, region, leniency=Leniency.EXACT_GROUPING))
    if exact or len(_GROUPS.findall(candidate)) != 2:
        return exact
    # Or as an area code and the rest run together ("011 1234567" for Turin's "011 123 4567").
    return tuple((m.start, m.end) for m in PhoneNumberMatcher(candidate, region, leniency=Leniency.STRICT_GROUPING)
                 if _GROUPS.findall(m.raw_string)[0] == _GROUPS.findall(
                     phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.NATIONAL))[0])


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str


@dataclass
class PiiDetector:
    """Regex detectors by kind. Card numbers must also be in an issuer's range and pass Luhn;
    phone numbers must be valid for their country code, or for one of ``phone_regions``."""

    patterns: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERNS))
    phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS

    def __post_init__(self) -> None:
        # libphonenumber compiles its metadata's patterns as it uses them. A few regions' worth
        # overflow the re module's cache (512), and recompiling was two thirds of the detector's time.
        phonenumbers.enable_pattern_cache()
        self._regions = [_Region.load(code.upper()) for code in self.phone_regions]
        # Prefilters apply only to the default patterns they were written for.
        self._compiled = [(kind, re.compile(p), _MAY_MATCH.get(kind) if p == DEFAULT_PATTERNS.get(kind) else None)
                          for kind, p in self.patterns.items()]
        self._seen: OrderedDict[str, bool] = OrderedDict()
        self._numbers: dict[str, tuple[tuple[int, int], ...]] = {}  # candidate -> where numbers are

    def find(self, text: str) -> list[Finding]:
        taken: list[tuple[int, int]] = []
        found: list[Finding] = []
        for kind, pattern, may_match in self._compiled:
            if may_match is not None and not may_match(text):
                continue
            for m in pattern.finditer(text):
                if kind == "PHONE":
                    spans = self._phones(text, m.start(), m.end())
                elif kind == "CARD":
                    spans = _card(text, m.start(), m.end())
                else:
                    spans = [(m.start(), m.end())]
                for start, end in spans:
                    if any(start < e and s < end for s, e in taken):
                        continue  # already claimed by an earlier, more specific detector
                    taken.append((start, end))
                    found.append(Finding(kind, start, end, text[start:end]))
        return sorted(found, key=lambda f: f.start)

    def _phones(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """The phone numbers in one candidate ``text[start:end]``, as spans of ``text``."""
        candidate = text[start:end]
        if candidate.isdigit() and not self._phone_word_before(text, start):
            return []  # most candidates: ids, timestamps, counts
        digits = re.sub(r"\D", "", candidate)
        if not digits.isascii():  # other scripts' digits (٠٢٠ …): libphonenumber's metadata is ASCII
            digits = phonenumbers.normalize_digits_only(digits)
        if not _PHONE_DIGITS[0] <= len(digits) <= _PHONE_DIGITS[1] or _NOT_PHONE.search(candidate):
            return []
        return [(start + s, start + e) for s, e in self._numbers_in(candidate, digits)
                if not text[start + s:start + e].isdigit() or self._phone_word_before(text, start + s)]

    def _numbers_in(self, candidate: str, digits: str) -> tuple[tuple[int, int], ...]:
        # The same numbers recur across prompts (a customer's phone, a build's ids), and asking
        # libphonenumber costs ~100 µs per region: remember the answers, a bounded number of them.
        spans = self._numbers.get(candidate)
        if spans is None:
            if len(self._numbers) >= _NUMBERS_CACHE_SIZE:
                self._numbers.clear()
            regions = ["ZZ"] if candidate.startswith("+") else [r.code for r in self._regions if r.may_be(digits)]
            spans = self._numbers[candidate] = next(filter(None, (_valid_spans(candidate, r) for r in regions)), ())
        return spans

    @staticmethod
    def _phone_word_before(text: str, start: int) -> bool:
        return _PHONE_WORDS.search(text, max(0, start - _PHONE_WORD_WINDOW), start) is not None

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
