"""The extractive summariser: first sentences, a label, and a running token budget."""

from __future__ import annotations

from agents.memory import EXTRACTIVE_LABEL, extractive_summary, first_sentence, summary_lines


def words(text: str) -> int:
    return len(text.split())


def test_first_sentence_takes_the_first_sentence_or_line() -> None:
    assert first_sentence("Use Postgres. Then add indexes!") == "Use Postgres."
    assert first_sentence("\n\n[qa] task 1: check it\n=> ok") == "[qa] task 1: check it"
    assert first_sentence("   ") == ""
    assert len(first_sentence("x" * 1000)) == 240


def test_summary_is_labelled_and_folds_in_order() -> None:
    first = extractive_summary("", ["Alpha one. Detail.", "Beta two. More."], budget_tokens=100, count_tokens=words)
    assert first == f"{EXTRACTIVE_LABEL}\n- Alpha one.\n- Beta two."
    second = extractive_summary(first, ["Gamma three."], budget_tokens=100, count_tokens=words)
    assert summary_lines(second) == ["Alpha one.", "Beta two.", "Gamma three."]


def test_summary_drops_the_oldest_sentences_to_fit_its_budget() -> None:
    folded = [f"Sentence number {n} here. Rest." for n in range(20)]
    summary = extractive_summary("", folded, budget_tokens=30, count_tokens=words)
    assert words(summary) <= 30
    assert summary_lines(summary)[-1] == "Sentence number 19 here."
    assert "number 0 " not in summary
