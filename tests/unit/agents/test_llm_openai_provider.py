"""OpenAIProvider with the real openai SDK against a local server speaking the real wire format."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aios.agents.errors import (
    BadRequestError,
    ContextTooLongError,
    LLMError,
    MalformedResponseError,
    OverloadedError,
    ProviderAuthError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from aios.agents.llm import wire
from aios.agents.llm.base import ChatMessage, ChatRequest, LlmConfig, ToolCall, ToolSpec
from aios.agents.llm.openai_provider import OpenAIProvider, _message, _tool
from aios.agents.llm.router import Route, Router, RouterConfig
from aios.agents.llm.servers.openai import (
    FakeOpenAI,
    context_too_long,
    malformed,
    ok,
    slow_first_token,
    status,
)

MakeProvider = Callable[..., OpenAIProvider]

REQUEST = ChatRequest(
    messages=(ChatMessage("system", "You are terse."), ChatMessage("user", "Say hello to the team")),
    max_tokens=64,
    temperature=0.0,
)


async def test_streams_text_usage_and_timings(fake_openai: FakeOpenAI, make_openai: MakeProvider) -> None:
    fake_openai.script(ok("Hello, team! All good."))
    response = await make_openai("gpt-4o-mini").complete(REQUEST)

    assert response.text == "Hello, team! All good."
    assert (response.provider, response.model, response.offline) == ("openai", "gpt-4o-mini", False)
    assert response.usage.input_tokens == 8  # whitespace words of both messages, as the fake counts
    assert response.usage.output_tokens == 4
    assert response.ttft_ms is not None
    assert 0 < response.ttft_ms <= response.latency_ms


async def test_sends_a_streaming_chat_request(fake_openai: FakeOpenAI, make_openai: MakeProvider) -> None:
    await make_openai("gpt-4o-mini").complete(REQUEST)

    (sent,) = fake_openai.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.body["model"] == "gpt-4o-mini"
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_completion_tokens"] == 64
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to the team"},
    ]


async def test_default_reply_is_deterministic(make_openai: MakeProvider) -> None:
    provider = make_openai()
    first, second = await provider.complete(REQUEST), await provider.complete(REQUEST)
    assert first.text == second.text == "fake-openai reply to: Say hello to the team"


async def test_slow_first_token_shows_in_ttft(fake_openai: FakeOpenAI, make_openai: MakeProvider) -> None:
    fake_openai.script(slow_first_token(0.3, "late"))
    response = await make_openai().complete(REQUEST)
    assert response.text == "late"
    assert response.ttft_ms is not None and response.ttft_ms >= 300


async def test_rate_limit_maps_with_retry_after(fake_openai: FakeOpenAI, make_openai: MakeProvider) -> None:
    fake_openai.script(status(429, retry_after=7))
    with pytest.raises(RateLimitError) as caught:
        await make_openai().complete(REQUEST)
    assert caught.value.retry_after == 7.0
    assert caught.value.status_code == 429
    assert caught.value.provider == "openai"
    assert len(fake_openai.requests) == 1


async def test_the_router_retries_429_honouring_retry_after(
    fake_openai: FakeOpenAI, make_openai: MakeProvider
) -> None:
    fake_openai.script(status(429, retry_after=0.2), ok("second time lucky"))
    started = time.perf_counter()
    routed = await Router.single(make_openai(), config=RouterConfig(max_retries=1)).complete(Route(REQUEST))
    assert routed.response.text == "second time lucky"
    assert len(fake_openai.requests) == 2
    assert time.perf_counter() - started >= 0.2


async def test_the_sdk_never_retries_on_its_own(
    fake_openai: FakeOpenAI, make_openai: MakeProvider
) -> None:
    """Retries are decided once, by the router: the provider alone gives up on the first 500."""
    fake_openai.script(status(500), ok("too late"))
    with pytest.raises(ProviderUnavailableError):
        await make_openai().complete(REQUEST)
    assert len(fake_openai.requests) == 1


async def test_500_then_200_is_one_router_retry(
    fake_openai: FakeOpenAI, make_openai: MakeProvider
) -> None:
    fake_openai.script(status(500), ok("recovered"))
    router = Router.single(make_openai(), config=RouterConfig(max_retries=2, retry_base_s=0.01))
    routed = await router.complete(Route(REQUEST))
    assert routed.response.text == "recovered"
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize(
    ("behaviour", "expected", "code"),
    [
        (status(500), ProviderUnavailableError, 500),
        (status(503), ProviderUnavailableError, 503),
        (status(529), OverloadedError, 529),
        (status(401), ProviderAuthError, 401),
        (status(403), ProviderAuthError, 403),
        (status(404), BadRequestError, 404),
        (status(400), BadRequestError, 400),
        (context_too_long(), ContextTooLongError, 400),
    ],
)
async def test_status_errors_map_to_specific_classes(
    fake_openai: FakeOpenAI,
    make_openai: MakeProvider,
    behaviour: object,
    expected: type[LLMError],
    code: int,
) -> None:
    fake_openai.script(behaviour)  # type: ignore[arg-type]
    with pytest.raises(expected) as caught:
        await make_openai().complete(REQUEST)
    assert type(caught.value) is expected
    assert caught.value.status_code == code
    assert caught.value.__cause__ is not None  # wrapped with `from exc`


async def test_plain_bad_request_is_not_context_too_long(
    fake_openai: FakeOpenAI, make_openai: MakeProvider
) -> None:
    fake_openai.script(status(400, error_code="invalid_value"))
    with pytest.raises(BadRequestError) as caught:
        await make_openai().complete(REQUEST)
    assert not isinstance(caught.value, ContextTooLongError)


async def test_malformed_stream(fake_openai: FakeOpenAI, make_openai: MakeProvider) -> None:
    fake_openai.script(malformed())
    with pytest.raises(MalformedResponseError):
        await make_openai().complete(REQUEST)


async def test_timeout(fake_openai: FakeOpenAI, make_openai: MakeProvider) -> None:
    fake_openai.script(slow_first_token(1.0))
    with pytest.raises(ProviderTimeoutError):
        await make_openai(timeout_s=0.2).complete(REQUEST)


async def test_connection_refused_is_unavailable(fake_openai: FakeOpenAI, make_openai: MakeProvider) -> None:
    provider = make_openai()
    fake_openai.stop()
    with pytest.raises(ProviderUnavailableError):
        await provider.complete(REQUEST)


async def test_fake_server_also_speaks_non_streaming(fake_openai: FakeOpenAI) -> None:
    # Other suites may call the SDK without streaming; the fake must answer that format too.
    import openai

    async with openai.AsyncOpenAI(api_key="sk-test", base_url=fake_openai.base_url, max_retries=0) as client:
        fake_openai.script(ok("plain answer"), malformed())
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi there"}]
        )
        assert completion.choices[0].message.content == "plain answer"
        assert completion.usage is not None and completion.usage.prompt_tokens == 2
        with pytest.raises(ValueError, match="Expecting property name"):  # the SDK's own JSON error
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
            )


# The provider sends messages, tools and the answer format as the SDK's extra_body, skipping the
# SDK's per-call walk of them against its TypedDicts. The wire must not change: generated requests
# (numbers, any text, tool calls and their results, tools, a response schema) go out as the same
# JSON the SDK's typed parameters send.
_text = st.text(max_size=40)
_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                            max_leaves=8)
_calls = st.lists(st.builds(ToolCall, id=st.from_regex(r"call_[a-z0-9]{1,8}", fullmatch=True),
                            name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True),
                            arguments=st.dictionaries(_text, _json_values, max_size=3)), min_size=1, max_size=2)
_messages = st.lists(st.one_of(
    st.builds(ChatMessage, role=st.sampled_from(["system", "user", "assistant"]), content=_text),
    st.builds(ChatMessage, role=st.just("assistant"), content=_text, tool_calls=_calls.map(tuple)),
    st.builds(ChatMessage, role=st.just("tool"), content=_text, tool_call_id=st.just("call_1")),
), min_size=1, max_size=5)
_tools = st.lists(st.builds(ToolSpec, name=st.from_regex(r"[a-z_]{1,12}", fullmatch=True), description=_text,
                            parameters=st.fixed_dictionaries({"type": st.just("object"), "properties": st.dictionaries(
                                st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                                st.fixed_dictionaries({"type": st.sampled_from(["string", "number"])}), max_size=3)})),
                  max_size=2)
_requests = st.builds(ChatRequest, messages=_messages.map(tuple), max_tokens=st.integers(1, 4096),
                      temperature=st.floats(0, 2), tools=_tools.map(tuple),
                      response_schema=st.none() | st.just({"type": "object", "properties": {"n": {"type": "number"}}}))


async def _typed_sdk_body(fake: FakeOpenAI, request: ChatRequest) -> dict[str, Any]:
    """The body the SDK sends for ``request`` given as its typed parameters."""
    extra: dict[str, Any] = {}
    if request.tools:
        extra["tools"] = [_tool(t) for t in request.tools]
    if request.response_schema is not None and not request.tools:
        extra["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": dict(request.response_schema), "strict": False}}
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[_message(m) for m in request.messages],
            max_completion_tokens=request.max_tokens, temperature=request.temperature, stream=True,
            stream_options={"include_usage": True}, **extra)
        async for _ in stream:
            pass
    finally:
        await client.close()
    return fake.requests[-1].body


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=_requests)
def test_the_wire_body_is_what_the_sdks_typed_parameters_send(fake_openai: FakeOpenAI, request: ChatRequest) -> None:
    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        config = LlmConfig(spec="openai:gpt-4o-mini", openai_api_key="sk-test", openai_base_url=fake_openai.base_url)
        provider = OpenAIProvider("gpt-4o-mini", config=config)
        try:
            await provider.complete(request)
        finally:
            await provider.aclose()
        ours = fake_openai.requests[-1].body
        return ours, await _typed_sdk_body(fake_openai, request)

    ours, typed = asyncio.run(both())
    assert ours == typed


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
async def test_either_http_client_streams_and_says_unavailable_when_refused(fake_openai: FakeOpenAI, kind: str) -> None:
    # The SDK's aiohttp transport reports a refused connection as a connect time-out; the provider
    # still says "cannot reach", as with httpx, so the message points at the right thing to fix.
    config = LlmConfig(spec="openai:gpt-4o-mini", openai_api_key="sk-test", openai_base_url=fake_openai.base_url,
                       http_client=kind)
    provider = OpenAIProvider("gpt-4o-mini", config=config)
    try:
        fake_openai.script(ok("Hello, team!"))
        assert (await provider.complete(REQUEST)).text == "Hello, team!"
        fake_openai.stop()
        with pytest.raises(ProviderUnavailableError, match="cannot reach the provider"):
            await provider.complete(REQUEST)
    finally:
        await provider.aclose()


@pytest.mark.parametrize(("kind", "proxy", "expected"), [
    ("auto", None, "aiohttp"), ("auto", "http://proxy.internal:3128", "httpx"), ("aiohttp", None, "aiohttp"),
    ("aiohttp", "http://proxy.internal:3128", "aiohttp"), ("httpx", None, "httpx"),
])
def test_the_http_client_setting_and_proxies(monkeypatch: pytest.MonkeyPatch, kind: str, proxy: str | None,
                                             expected: str) -> None:
    for variable in wire.PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    if proxy is not None:
        monkeypatch.setenv("HTTPS_PROXY", proxy)  # only httpx reads it: auto keeps httpx then
    chosen = wire.http_client(openai, kind, 5.0)
    assert ("aiohttp" if isinstance(chosen.get("http_client"), openai.DefaultAioHttpClient) else "httpx") == expected


@pytest.mark.parametrize("sdk", [openai, anthropic])
def test_every_aiohttp_client_shares_one_tls_context(sdk: Any) -> None:
    # Each client built its own, loading the CA bundle each time: most of a property test's 33 s.
    first, second = (wire.http_client(sdk, "aiohttp", 5.0)["http_client"] for _ in range(2))
    assert first._transport.ssl_context is second._transport.ssl_context is wire.shared_tls()
    assert wire.shared_tls().verify_mode == ssl.CERT_REQUIRED and wire.shared_tls().check_hostname
