"""The offline provider: labelled, deterministic, task-shaped, and fast."""

from __future__ import annotations

from aios.agents.llm.base import ChatMessage, ChatRequest, Provider
from aios.agents.llm.offline import OFFLINE_LABEL, OfflineProvider


def _request(text: str) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("system", "You are the backend agent."), ChatMessage("user", text))
    )


async def test_answer_is_labelled_and_marked_offline() -> None:
    response = await OfflineProvider().complete(_request("Task: design the billing schema"))
    assert response.text.startswith(OFFLINE_LABEL)
    assert response.offline is True
    assert (response.provider, response.model) == ("offline", "echo")


async def test_same_input_same_output_different_input_different_output() -> None:
    provider = OfflineProvider()
    first = await provider.complete(_request("Task: write the invoice exporter"))
    second = await provider.complete(_request("Task: write the invoice exporter"))
    other = await provider.complete(_request("Task: review the login flow"))
    assert first.text == second.text
    assert other.text != first.text


async def test_answer_is_shaped_by_the_last_user_message() -> None:
    request = ChatRequest(
        messages=(
            ChatMessage("user", "Task: something older"),
            ChatMessage("assistant", "ok"),
            ChatMessage("user", "Task: implement pagination for the orders endpoint\nmore detail"),
        )
    )
    text = (await OfflineProvider().complete(request)).text
    assert "Request: implement pagination for the orders endpoint" in text
    assert "Plan:" in text
    assert "pagination" in text
    assert "older" not in text


async def test_usage_counts_whitespace_tokens() -> None:
    response = await OfflineProvider().complete(_request("one two three"))
    assert response.usage.input_tokens == 5 + 3
    assert response.usage.output_tokens == len(response.text.split())


async def test_empty_prompt_still_answers() -> None:
    response = await OfflineProvider().complete(ChatRequest(messages=()))
    assert response.text.startswith(OFFLINE_LABEL)
    assert "(empty request)" in response.text


def test_meets_the_provider_protocol() -> None:
    assert isinstance(OfflineProvider(), Provider)
