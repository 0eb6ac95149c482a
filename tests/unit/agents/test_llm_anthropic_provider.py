"""AnthropicProvider with the real anthropic SDK against a local server speaking the Messages API."""

from __future__ import annotations

import time
from collections.abc import Callable

import anthropic
import pytest

from aios.agents.errors import (
    BadRequestError,
    ContextTooLongError,
    LLMError,
    MalformedResponseError,
    MissingCredentialsError,
    OverloadedError,
    ProviderAuthError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from aios.agents.llm.anthropic_provider import AnthropicProvider
from aios.agents.llm.base import ChatMessage, ChatRequest, LlmConfig
from aios.agents.llm.router import Route, Router, RouterConfig
from aios.agents.llm.servers.anthropic import (
    Behaviour,
    FakeAnthropic,
    context_too_long,
    malformed,
    ok,
    overloaded,
    slow_first_token,
    status,
    stream_error,
    truncated,
)

MakeProvider = Callable[..., AnthropicProvider]

REQUEST = ChatRequest(
    messages=(ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello to the team")),
    max_tokens=64,
    temperature=0.0,
)


async def test_streams_text_usage_and_timings(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(ok("Hello, team! All good."))
    response = await make_anthropic("claude-haiku-4-5").complete(REQUEST)

    assert response.text == "Hello, team! All good."
    assert (response.provider, response.model, response.offline) == ("anthropic", "claude-haiku-4-5", False)
    assert response.usage.input_tokens == 8  # whitespace words of system prompt and message
    assert response.usage.output_tokens == 4  # message_delta's total, not message_start's 1
    assert response.usage.cached_input_tokens == 0
    assert response.ttft_ms is not None
    assert 0 < response.ttft_ms <= response.latency_ms


async def test_cache_reads_count_as_cached_input(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(ok("cached", cache_read_input_tokens=3))
    usage = (await make_anthropic().complete(REQUEST)).usage
    # The API's input_tokens excludes cache reads; Usage.input_tokens counts the whole prompt.
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (8, 3, 1)


async def test_sends_a_streaming_messages_request(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    await make_anthropic("claude-haiku-4-5").complete(REQUEST)

    (sent,) = fake_anthropic.requests
    assert sent.path == "/v1/messages"
    # SDKs before 2.x send the key as x-api-key; 2.x sends it as a bearer token. Either is the key.
    assert "sk-ant-test" in (sent.headers.get("x-api-key"), sent.headers.get("authorization", "")[7:])
    assert sent.headers["anthropic-version"]  # the SDK pins the API version it speaks
    assert sent.body["model"] == "claude-haiku-4-5"
    assert sent.body["stream"] is True
    assert sent.body["max_tokens"] == 64
    # The system prompt is a parameter of its own; messages hold only user/assistant turns.
    assert sent.body["system"] == "You are terse."
    assert sent.body["messages"] == [{"role": "user", "content": "Say hello to the team"}]


async def test_no_system_prompt_sends_no_system_field(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    await make_anthropic().complete(ChatRequest(messages=(ChatMessage("user", "hi"),)))
    assert "system" not in fake_anthropic.requests[0].body


async def test_several_system_messages_are_joined(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    request = ChatRequest(
        messages=(ChatMessage("system", "One."), ChatMessage("user", "hi"), ChatMessage("system", "Two."))
    )
    await make_anthropic().complete(request)
    assert fake_anthropic.requests[0].body["system"] == "One.\n\nTwo."


async def test_default_reply_is_deterministic(make_anthropic: MakeProvider) -> None:
    provider = make_anthropic()
    first, second = await provider.complete(REQUEST), await provider.complete(REQUEST)
    assert first.text == second.text == "fake-anthropic reply to: Say hello to the team"


async def test_slow_first_token_shows_in_ttft(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(slow_first_token(0.3, "late"))
    response = await make_anthropic().complete(REQUEST)
    assert response.text == "late"
    assert response.ttft_ms is not None and response.ttft_ms >= 300


async def test_rate_limit_maps_with_retry_after(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(status(429, retry_after=7))
    with pytest.raises(RateLimitError) as caught:
        await make_anthropic().complete(REQUEST)
    assert caught.value.retry_after == 7.0
    assert caught.value.status_code == 429
    assert caught.value.provider == "anthropic"
    assert len(fake_anthropic.requests) == 1


async def test_the_router_retries_429_honouring_retry_after(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(status(429, retry_after=0.2), ok("second time lucky"))
    started = time.perf_counter()
    routed = await Router.single(make_anthropic(), config=RouterConfig(max_retries=1)).complete(Route(REQUEST))
    assert routed.response.text == "second time lucky"
    assert len(fake_anthropic.requests) == 2
    assert time.perf_counter() - started >= 0.2


async def test_the_sdk_never_retries_on_its_own(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    """Retries are decided once, by the router: the provider alone gives up on the first 500."""
    fake_anthropic.script(status(500), ok("too late"))
    with pytest.raises(ProviderUnavailableError):
        await make_anthropic().complete(REQUEST)
    assert len(fake_anthropic.requests) == 1


async def test_500_then_200_is_one_router_retry(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(status(500), ok("recovered"))
    router = Router.single(make_anthropic(), config=RouterConfig(max_retries=2, retry_base_s=0.01))
    routed = await router.complete(Route(REQUEST))
    assert routed.response.text == "recovered"
    assert len(fake_anthropic.requests) == 2


async def test_overloaded_is_retried_by_the_router(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(status(529, retry_after=0.05, error_type="overloaded_error"), ok("recovered"))
    routed = await Router.single(make_anthropic(), config=RouterConfig(max_retries=1)).complete(Route(REQUEST))
    assert routed.response.text == "recovered"


@pytest.mark.parametrize(
    ("behaviour", "expected", "code"),
    [
        (status(500), ProviderUnavailableError, 500),
        (status(503), ProviderUnavailableError, 503),
        (overloaded(), OverloadedError, 529),
        (status(401), ProviderAuthError, 401),
        (status(403), ProviderAuthError, 403),
        (status(404), BadRequestError, 404),
        (status(400), BadRequestError, 400),
        (status(413), BadRequestError, 413),  # request_too_large is bytes, not the context window
        (status(408), ProviderTimeoutError, 408),
        (context_too_long(), ContextTooLongError, 400),
    ],
)
async def test_status_errors_map_to_specific_classes(
    fake_anthropic: FakeAnthropic,
    make_anthropic: MakeProvider,
    behaviour: Behaviour,
    expected: type[LLMError],
    code: int,
) -> None:
    fake_anthropic.script(behaviour)
    with pytest.raises(expected) as caught:
        await make_anthropic().complete(REQUEST)
    assert type(caught.value) is expected
    assert caught.value.status_code == code
    assert caught.value.provider == "anthropic"
    assert isinstance(caught.value.__cause__, anthropic.APIStatusError)  # wrapped with `from exc`


async def test_plain_bad_request_is_not_context_too_long(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(status(400, message="max_tokens: Field required"))
    with pytest.raises(BadRequestError) as caught:
        await make_anthropic().complete(REQUEST)
    assert not isinstance(caught.value, ContextTooLongError)


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", OverloadedError),
        ("rate_limit_error", RateLimitError),
        ("api_error", ProviderUnavailableError),
    ],
)
async def test_error_event_mid_stream_maps_by_its_type(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider, error_type: str, expected: type[LLMError]
) -> None:
    fake_anthropic.script(stream_error(error_type))
    with pytest.raises(expected) as caught:
        await make_anthropic().complete(REQUEST)
    assert type(caught.value) is expected
    assert caught.value.status_code is None  # the HTTP status was 200; it says nothing here


async def test_malformed_stream(fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider) -> None:
    fake_anthropic.script(malformed())
    with pytest.raises(MalformedResponseError):
        await make_anthropic().complete(REQUEST)


async def test_stream_without_message_stop_is_malformed(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    fake_anthropic.script(truncated())
    with pytest.raises(MalformedResponseError, match="message_stop"):
        await make_anthropic().complete(REQUEST)


async def test_timeout(fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider) -> None:
    fake_anthropic.script(slow_first_token(1.0))
    with pytest.raises(ProviderTimeoutError):
        await make_anthropic(timeout_s=0.2).complete(REQUEST)


async def test_connection_refused_is_unavailable(
    fake_anthropic: FakeAnthropic, make_anthropic: MakeProvider
) -> None:
    provider = make_anthropic()
    fake_anthropic.stop()
    with pytest.raises(ProviderUnavailableError):
        await provider.complete(REQUEST)


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key_names_the_variables(key: str | None) -> None:
    with pytest.raises(MissingCredentialsError) as caught:
        AnthropicProvider("claude-haiku-4-5", config=LlmConfig(anthropic_api_key=key))
    assert "AIOS_ANTHROPIC_API_KEY (or ANTHROPIC_API_KEY)" in str(caught.value)
    assert caught.value.provider == "anthropic"


async def test_fake_server_also_speaks_non_streaming(fake_anthropic: FakeAnthropic) -> None:
    # Other suites may call the SDK without streaming; the fake must answer that format too.
    async with anthropic.AsyncAnthropic(
        api_key="sk-ant-test", base_url=fake_anthropic.base_url, max_retries=0
    ) as client:
        fake_anthropic.script(ok("plain answer"))
        message = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi there"}]
        )
        block = message.content[0]
        assert block.type == "text" and block.text == "plain answer"
        assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 2)
        assert message.stop_reason == "end_turn"
