"""The one set of limits every entry point shares, so all of them accept exactly the same things.

The API's models (and so its OpenAPI document), ``aios submit``, the JSON ingress, the plan model
and every processor (``schemas/checks.py``) check records against these constants. A value over a
limit is refused where it enters, with the limit in the message; a record over one that reaches a
processor anyway (any Kafka producer can write the topics) is dead-lettered with the reason.

Sizes of free text are in characters where people write them (descriptions), and in UTF-8 bytes
where they bound a Kafka message (outputs, memory turns): a character is up to four bytes.
"""

from __future__ import annotations

import math
import re

from aios.schemas.sealed import is_sealed, plaintext_bytes

# --- identifiers ----------------------------------------------------------------------------
MAX_ID_CHARS = 128
# Task, project and scope ids: no '/', no spaces, no control characters. Ids become Kafka keys,
# Redis keys, Qdrant payloads, state-log keys (joined with \x1f) and URL path segments.
ID_PATTERN = r"^[A-Za-z0-9._:-]+$"
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,39}$"
MAX_EVENT_ID_CHARS = 128  # event_id and trace_id: printable ASCII
# Memory ids join a kind, quoted project and task ids (a ':' quotes to 3 characters) and a number.
MAX_MEMORY_ID_CHARS = 1_024
MAX_NAME_CHARS = 200  # submitted_by, requested_by, agent ids, speakers, providers, models
MAX_PRIVACY_CHARS = 32  # anything but "normal" is restricted (fail closed), but bounded

# --- what people write ----------------------------------------------------------------------
# A blank text is one with nothing but ASCII whitespace. Spelled as a class rather than \S: Python,
# the Rust regex engine pydantic uses and JSON Schema clients disagree on what \s covers.
NOT_BLANK_PATTERN = r"[^ \t\n\r\f\v]"
MAX_DESCRIPTION_CHARS = 20_000
MAX_GOAL_CHARS = 20_000
MAX_ACCEPTANCE_CHARS = 5_000
MAX_REASON_CHARS = 2_000  # a control's reason; a task's reason in a status is cut to this
MIN_PRIORITY = -1_000
MAX_PRIORITY = 1_000
MAX_BUDGET_USD = 1_000_000.0
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 2_000

# --- graphs -----------------------------------------------------------------------------------
MAX_DEPENDENCIES = 1_000  # per task
MAX_PLAN_TASKS = 10_000  # per plan
MAX_MILESTONES = 50  # sprints per plan (each runs, is reviewed and re-planned in turn)
MAX_TITLE_CHARS = 500  # a milestone's title
MAX_ESTIMATE_TOKENS = 100_000_000  # a task's estimate (tokens in and out)
MAX_ESTIMATE_SECONDS = 30 * 24 * 3600.0

# --- what agents produce ------------------------------------------------------------------------
MAX_ATTEMPT = 10_000
MAX_OUTPUT_BYTES = 256 * 1024  # a task's output; larger ones fail the attempt with the reason
MAX_ERROR_CHARS = 4_000
MAX_MEMORY_CONTENT_BYTES = 512 * 1024  # a turn is the description and the output
MAX_RECALL = 100  # memory ids a result cites
MAX_STRATEGY_CHARS = 64
MAX_TOOL_RESULT_CHARS = 8_000  # a tool's result is a prompt part too (an MCP server may set less)

# --- what the orchestrator sends ----------------------------------------------------------------
# An assignment carries each dependency's output cut to an excerpt, with a reference to the whole
# (the read_dependency_output tool follows it): DEPENDENCY_EXCERPT_BYTES each at most, and all of
# them within MAX_CONTEXT_BYTES however many dependencies a task has.
DEPENDENCY_EXCERPT_BYTES = 8_000
MAX_CONTEXT_BYTES = 256 * 1024
# An excerpt's closing note (how much was cut, the reference) is not squeezed below its own length,
# so a task with many dependencies may carry this much more per dependency.
MAX_EXCERPT_NOTE_BYTES = 200
STATUS_MAX_TASKS = 200  # tasks listed in a ProjectStatus, unfinished first
STATUS_MAX_PATH = 1_000  # ids of the critical path in a ProjectStatus (the rest is counted in a note)

# --- Kafka --------------------------------------------------------------------------------------
# librdkafka's default message.max.bytes; the broker's default for a topic is 1,048,588.
DEFAULT_MAX_MESSAGE_BYTES = 1_000_000
# What a record adds to its key and value in a batch (headers, varints, the batch's own header).
RECORD_OVERHEAD_BYTES = 512
# librdkafka's message.max.bytes bounds a whole produce request as well as one record, and a
# topic's max.message.bytes a whole record batch: room above AIOS_MAX_MESSAGE_BYTES for the framing.
PRODUCER_HEADROOM_BYTES = 64 * 1024
# A dead letter keeps at most this much of the original record (and says so when it cut it), so
# the letter of a record at the size limit still fits.
MAX_DEAD_LETTER_PAYLOAD_BYTES = 640 * 1024
MAX_DEAD_LETTER_KEY_BYTES = 10 * 1024
MAX_DEAD_LETTER_ERRORS = 20
# Every event above is bounded by these limits to well under this; AIOS_MAX_MESSAGE_BYTES may not
# be set lower.
MIN_MAX_MESSAGE_BYTES = 768 * 1024

_ID = re.compile(r"[A-Za-z0-9._:-]+")
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,39}")
_NOT_BLANK = re.compile(NOT_BLANK_PATTERN)
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


def is_id(value: object) -> bool:
    """A task, project or scope id: 1-128 of A-Z a-z 0-9 . _ : - (no '/', no control characters)."""
    return isinstance(value, str) and len(value) <= MAX_ID_CHARS and _ID.fullmatch(value) is not None


def is_role(value: object) -> bool:
    return isinstance(value, str) and _ROLE.fullmatch(value) is not None


def is_printable(value: object, max_chars: int) -> bool:
    """1 to ``max_chars`` printable ASCII characters (no spaces): event, trace and memory ids."""
    return isinstance(value, str) and len(value) <= max_chars and _PRINTABLE_ASCII.fullmatch(value) is not None


def is_event_id(value: object) -> bool:
    """An event or trace id: 1-128 printable ASCII characters."""
    return is_printable(value, MAX_EVENT_ID_CHARS)


def not_blank(value: str) -> bool:
    """Whether ``value`` has a character other than ASCII whitespace."""
    return _NOT_BLANK.search(value) is not None


def within_chars(value: str, max_chars: int) -> bool:
    """Whether ``value`` is within ``max_chars``. A sealed value (a restricted field encrypted with
    AIOS_ENCRYPTION_KEY, schemas/sealed.py) is longer than its text: its limit is the text's, at
    most four UTF-8 bytes per character, read from the ciphertext's size without the key."""
    sealed = plaintext_bytes(value)
    return len(value) <= max_chars if sealed is None else sealed <= 4 * max_chars


def within_bytes(value: str, max_bytes: int) -> bool:
    """Whether ``value`` is within ``max_bytes`` of UTF-8; a sealed value's text, as above."""
    sealed = plaintext_bytes(value)
    return utf8_len(value) <= max_bytes if sealed is None else sealed <= max_bytes


def utf8_len(value: str) -> int:
    """The UTF-8 size of ``value`` (a lone surrogate counts as three bytes; it cannot be encoded)."""
    return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))


def cut(value: str, max_chars: int) -> str:
    """``value`` within ``max_chars``, saying how much was cut."""
    if len(value) <= max_chars:
        return value
    marker = f" … [{len(value) - max_chars} characters cut]"
    return value[:max(max_chars - len(marker), 0)] + marker


def cut_utf8(value: str, max_bytes: int) -> str:
    """The longest prefix of ``value`` whose UTF-8 form fits in ``max_bytes`` (whole characters)."""
    if utf8_len(value) <= max_bytes:
        return value
    return value.encode("utf-8", "surrogatepass")[:max_bytes].decode("utf-8", "ignore")


def finite(value: object, low: float, high: float) -> bool:
    """A real number (not a bool, not NaN or infinite) within [low, high]."""
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


def message_size(key: bytes | str | None, value: bytes | None) -> int:
    """What a record weighs against a topic's max.message.bytes."""
    key_len = len(key.encode()) if isinstance(key, str) else len(key or b"")
    return key_len + len(value or b"") + RECORD_OVERHEAD_BYTES


# --- excerpts of outputs, with a reference to the whole ----------------------------------------
# The reference is a URI the worker knows how to read: today ``kafka://<topic>/<partition>/<offset>``
# (the attempt that produced the output); an artifact store would add its own scheme.
_EXCERPT_TAIL = re.compile(r"\n… \[(\d+) characters cut; the whole output: (\S+)\]\Z")


def excerpt(output: str, max_bytes: int, ref: str) -> str:
    """``output`` within ``max_bytes`` of UTF-8 (the note included, unless the note alone is
    longer), ending with a reference to the whole when anything was cut."""
    if utf8_len(output) <= max_bytes:
        return output
    tail_len = utf8_len(f"\n… [{len(output)} characters cut; the whole output: {ref or '(none)'}]")
    # A sealed output cannot be cut (it would not open): it is carried whole or not at all.
    kept = "" if is_sealed(output) else cut_utf8(output, max(max_bytes - tail_len, 0))
    return f"{kept}\n… [{len(output) - len(kept)} characters cut; the whole output: {ref or '(none)'}]"


def excerpt_ref(text: str) -> str | None:
    """The reference at the end of an :func:`excerpt`, or None when the text is whole."""
    match = _EXCERPT_TAIL.search(text)
    return match.group(2) if match and match.group(2) != "(none)" else None
