"""Running summaries: the extractive summariser (first sentences, a label, a token budget) and the
LLM one, through the real OpenAI SDK against the local wire-format fake server."""

from __future__ import annotations

from collections.abc import Callable

from aios.agents.llm.openai_provider import OpenAIProvider
from aios.agents.llm.servers.openai import FakeOpenAI, ok, status
from aios.agents.memory import (
    EXTRACTIVE_LABEL,
    EXTRACTIVE_SOURCE,
    SUMMARY_SYSTEM,
    extractive_summary,
    first_sentence,
    fold_summary,
    summary_lines,
    summary_request,
)


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


# --- summaries from an LLM, through the real OpenAI SDK against a wire-format fake server -------

def truncate_words(text: str, budget: int) -> str:
    return " ".join(text.split()[:budget]) if budget > 0 else ""


FOLDED = ["[backend] task t-1: choose the ledger database\n=> Postgres, with one schema per tenant. Reviewed.",
          "[qa] task t-2: plan load tests\n=> 500 rps for ten minutes against staging."]


async def test_the_llm_writes_the_summary_from_the_earlier_one_and_the_folded_turns(
        fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(ok("The team chose Postgres with a schema per tenant and will load-test at 500 rps."))
    provider = make_openai()

    summary = await fold_summary("Earlier: the API is REST.", FOLDED, budget_tokens=60, count_tokens=words,
                                 truncate=truncate_words, complete=provider.complete)

    assert summary.text == "The team chose Postgres with a schema per tenant and will load-test at 500 rps."
    assert summary.source == "openai:gpt-4o-mini" and summary.error is None
    assert summary.response is not None and summary.response.usage.output_tokens > 0
    body = fake_openai.requests[0].body
    system, user = (m["content"] for m in body["messages"])
    assert system == SUMMARY_SYSTEM and body["max_completion_tokens"] == 60
    assert "Earlier: the API is REST." in user and "Postgres, with one schema per tenant" in user
    assert user.index("ledger database") < user.index("plan load tests")  # oldest first


async def test_an_overlong_llm_summary_is_cut_to_its_budget(
        fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(ok("word " * 500))
    summary = await fold_summary("", FOLDED, budget_tokens=40, count_tokens=words, truncate=truncate_words,
                                 complete=make_openai().complete)
    assert words(summary.text) == 40 and summary.source == "openai:gpt-4o-mini"


async def test_a_failing_llm_falls_back_to_the_labelled_extractive_summary(
        fake_openai: FakeOpenAI, make_openai: Callable[..., OpenAIProvider]) -> None:
    fake_openai.script(status(503))
    summary = await fold_summary("", FOLDED, budget_tokens=60, count_tokens=words, truncate=truncate_words,
                                 complete=make_openai().complete)
    assert summary.text.startswith(EXTRACTIVE_LABEL) and summary.source == EXTRACTIVE_SOURCE
    assert summary.error is not None and "ProviderUnavailableError" in summary.error
    assert summary_lines(summary.text) == ["[backend] task t-1: choose the ledger database",
                                           "[qa] task t-2: plan load tests"]


async def test_without_a_provider_the_summary_is_extractive_and_labelled() -> None:
    summary = await fold_summary("", FOLDED, budget_tokens=60, count_tokens=words, truncate=truncate_words,
                                 complete=None)
    assert summary.text.startswith(EXTRACTIVE_LABEL) and summary.source == EXTRACTIVE_SOURCE
    assert summary.error is None and summary.response is None


def test_the_summary_request_shares_the_input_budget_between_the_turns() -> None:
    huge = "tokens " * 5000
    request = summary_request("previous", [huge, "a short last turn"], budget_tokens=50, input_tokens=450,
                              truncate=truncate_words)
    user = request.last_user_text()
    assert words(user) <= 450 and "a short last turn" in user  # the huge turn did not crowd it out
