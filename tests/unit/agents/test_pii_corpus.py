"""Precision and recall of the PII detector over a labelled corpus of prompts.

``tests/data/pii_corpus.jsonl``: one prompt per line, ``{"id", "text", "pii": [{"kind", "start",
"end", "value"}], "set"}``. ``eng-*`` prompts are engineering text full of numbers (ports, pids, ids,
versions, hashes, dates, IPs, stack traces, SQL, manifests) with no PII; ``pii-*`` prompts hold
phone numbers in many national and international formats, e-mail addresses, card numbers that
pass Luhn and API keys, mostly among engineering numbers too. ``set`` is ``dev`` for the prompts
written while the detector was built, ``holdout`` for those written after (docs/privacy.md).

A finding counts when it has the labelled kind and covers the labelled value (surrounding
brackets and a leading + aside, which reveal nothing). Run as a script to print the figures per
kind and the detection cost per prompt::

    .venv/bin/python tests/unit/agents/test_pii_corpus.py

Only the standard library and ``agents.llm.privacy`` are imported, so the same script measures
another checkout's detector: ``PYTHONPATH=/path/to/checkout python tests/unit/agents/test_pii_corpus.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aios.agents.llm.privacy import PiiDetector

CORPUS = Path(__file__).resolve().parents[2] / "data" / "pii_corpus.jsonl"
KINDS = ("PHONE", "EMAIL", "CARD", "API_KEY")


def load_corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class Scores:
    tp: Counter[str] = field(default_factory=Counter)  # findings that cover a labelled value of their kind
    fp: Counter[str] = field(default_factory=Counter)
    labelled: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)
    prompts_misjudged: int = 0  # PII found in a prompt without any, or none in one with some
    errors: list[str] = field(default_factory=list)

    def precision(self, kind: str | None = None) -> float:
        tp = self.tp[kind] if kind else sum(self.tp.values())
        fp = self.fp[kind] if kind else sum(self.fp.values())
        return tp / (tp + fp) if tp + fp else 1.0

    def recall(self, kind: str | None = None) -> float:
        n = self.labelled[kind] if kind else sum(self.labelled.values())
        missed = self.missed[kind] if kind else sum(self.missed.values())
        return (n - missed) / n if n else 1.0


def _core(label: dict[str, Any]) -> tuple[int, int]:
    value: str = label["value"]
    return (label["start"] + len(value) - len(value.lstrip("(+")),
            label["end"] - (len(value) - len(value.rstrip(")"))))


def score(detector: PiiDetector, corpus: list[dict[str, Any]]) -> Scores:
    s = Scores()
    for row in corpus:
        found = detector.find(row["text"])
        labels = [(lab["kind"], *_core(lab), lab["value"]) for lab in row["pii"]]
        for kind, start, end, value in labels:
            s.labelled[kind] += 1
            if not any(f.kind == kind and f.start <= start and end <= f.end for f in found):
                s.missed[kind] += 1
                s.errors.append(f"missed   {row['id']} {kind} {value!r}")
        for f in found:
            if any(f.kind == kind and f.start <= start and end <= f.end for kind, start, end, _ in labels):
                s.tp[f.kind] += 1
            else:
                s.fp[f.kind] += 1
                s.errors.append(f"wrong    {row['id']} {f.kind} {f.text!r}")
        s.prompts_misjudged += bool(found) != bool(labels)
    return s


def test_the_corpus_is_labelled_consistently() -> None:
    corpus = load_corpus()
    assert len(corpus) >= 200
    assert len({row["id"] for row in corpus}) == len(corpus)
    for row in corpus:
        for label in row["pii"]:
            assert label["kind"] in KINDS, row["id"]
            assert row["text"][label["start"]:label["end"]] == label["value"], row["id"]
    kinds = Counter(label["kind"] for row in corpus for label in row["pii"])
    assert all(kinds[k] >= 15 for k in KINDS), kinds
    assert sum(not row["pii"] for row in corpus) >= 150  # mostly ordinary engineering prompts


def test_precision_and_recall_over_the_corpus() -> None:
    s = score(PiiDetector(), load_corpus())
    assert s.precision() >= 0.98, s.errors
    assert s.recall() >= 0.95, s.errors


def _cost_us(detector: PiiDetector, texts: list[str], *, cold: bool, rounds: int = 15) -> float:
    """Least time per prompt over ``rounds`` passes (the noise on a shared machine only adds)."""
    best = float("inf")
    for _ in range(rounds):
        numbers = getattr(detector, "_numbers", None)
        if cold and numbers is not None:
            numbers.clear()  # as if every number were new (the first prompt of each)
        started = time.perf_counter_ns()
        for text in texts:
            detector.find(text)
        best = min(best, (time.perf_counter_ns() - started) / 1000 / len(texts))
    return best


def main() -> None:
    corpus = load_corpus()
    detector = PiiDetector()
    s = score(detector, corpus)
    print(f"corpus: {len(corpus)} prompts ({sum(not r['pii'] for r in corpus)} without PII), "
          f"{sum(s.labelled.values())} labelled values; detector from {sys.modules[PiiDetector.__module__].__file__}")
    print(f"{'kind':8} {'labelled':>8} {'found':>6} {'wrong':>6} {'missed':>6} {'precision':>9} {'recall':>7}")
    for kind in (*KINDS, None):
        name = kind or "all"
        tp = s.tp[kind] if kind else sum(s.tp.values())
        fp = s.fp[kind] if kind else sum(s.fp.values())
        n = s.labelled[kind] if kind else sum(s.labelled.values())
        missed = s.missed[kind] if kind else sum(s.missed.values())
        print(f"{name:8} {n:>8} {tp + fp:>6} {fp:>6} {missed:>6} {s.precision(kind):>9.4f} {s.recall(kind):>7.4f}")
    print(f"prompts misjudged (PII or not): {s.prompts_misjudged} of {len(corpus)}")
    for name in sorted({row.get("set", "dev") for row in corpus}):
        part = score(PiiDetector(), [row for row in corpus if row.get("set", "dev") == name])
        print(f"  set {name}: precision {part.precision():.4f}, recall {part.recall():.4f}")
    for line in s.errors:
        print("  " + line)
    groups = {"without PII": [r["text"] for r in corpus if not r["pii"]],
              "with PII": [r["text"] for r in corpus if r["pii"]], "all": [r["text"] for r in corpus]}
    print("find() µs per prompt, least of 15 passes (cold: numbers not seen before; warm: seen):")
    for name, texts in groups.items():
        cold, warm = _cost_us(detector, texts, cold=True), _cost_us(detector, texts, cold=False)
        print(f"  {name:12} ({len(texts):>3}): cold {cold:7.1f}  warm {warm:7.1f}  "
              f"(median prompt {statistics.median(len(t) for t in texts):.0f} chars)")


if __name__ == "__main__":
    main()
