"""The LLM error tree: where each class sits and what it carries."""

from __future__ import annotations

import pytest

from aios.agents import errors
from aios.schemas.errors import AiosError, ConfigError


@pytest.mark.parametrize(
    "cls",
    [
        errors.ProviderAuthError,
        errors.RateLimitError,
        errors.OverloadedError,
        errors.ProviderTimeoutError,
        errors.BadRequestError,
        errors.ContextTooLongError,
        errors.ProviderUnavailableError,
        errors.MalformedResponseError,
    ],
)
def test_provider_errors_are_llm_errors_with_provider_and_status(cls: type[errors.LLMError]) -> None:
    exc = cls("boom", provider="openai", status_code=418)
    assert isinstance(exc, errors.LLMError) and isinstance(exc, AiosError)
    assert (str(exc), exc.provider, exc.status_code) == ("boom", "openai", 418)


def test_context_too_long_is_a_bad_request() -> None:
    assert issubclass(errors.ContextTooLongError, errors.BadRequestError)


def test_rate_limit_carries_retry_after() -> None:
    exc = errors.RateLimitError("slow", provider="openai", retry_after=1.5)
    assert (exc.status_code, exc.retry_after) == (429, 1.5)


def test_missing_credentials_is_a_config_error_naming_the_variable() -> None:
    exc = errors.MissingCredentialsError(provider="openai", env_var="AIOS_OPENAI_API_KEY", alternative="X=y")
    assert isinstance(exc, ConfigError) and not isinstance(exc, errors.LLMError)
    assert str(exc) == "AIOS_OPENAI_API_KEY is not set: export it, or choose X=y"
    assert exc.provider == "openai"
