"""Errors of the LLM layer, one class per failure a caller handles differently.

    AiosError                          (schemas.errors)
    ├── ConfigError                    (schemas.errors)
    │   └── MissingCredentialsError    a provider was chosen but its key is not set
    ├── TaskCancelledError             the task was cancelled while an agent worked on it
    └── LLMError                       every provider failure; carries provider and status_code
        ├── ProviderAuthError          401/403: the key is wrong or lacks access
        ├── RateLimitError             429; carries the provider's retry_after
        │   ├── CoolingDownError       every eligible deployment of the router is cooling down
        │   └── QueueTimeoutError      no eligible deployment had room within the router's queue time
        ├── OverloadedError            529: the provider is shedding load
        ├── ProviderTimeoutError       no answer within the configured timeout
        ├── BadRequestError            400/404/422: our request is wrong; retrying will not help
        │   └── ContextTooLongError    the prompt does not fit the model's context window
        ├── ProviderUnavailableError   connection failures and 5xx
        ├── MalformedResponseError     the provider answered something we cannot read
        ├── UnknownModelError          the model has no entry (and so no price) in the catalogue
        ├── NoDeploymentError          the router has no deployment that may take the call
        └── BudgetExceededError        every eligible deployment could cost more than the budget left

Retries are not decided here: the router (agents/llm/router.py) retries the transient ones
(rate limits, overload, timeouts, unavailability) honouring retry-after; the vendor SDKs' own
retries are off, so an error that reaches the caller has been through the router's policy once.
"""

from __future__ import annotations

from aios.schemas.errors import AiosError, ConfigError


class LLMError(AiosError):
    """Root of provider failures; ``provider`` names who failed, ``status_code`` the HTTP status."""

    def __init__(self, message: str, *, provider: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code


class ProviderAuthError(LLMError):
    """The credentials were rejected (401) or lack permission (403)."""


class RateLimitError(LLMError):
    """The provider rate-limited us; ``retry_after`` is its hint in seconds, when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = 429,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status_code=status_code)
        self.retry_after = retry_after


class OverloadedError(LLMError):
    """The provider is overloaded (529); back off longer than for a plain 5xx."""


class ProviderTimeoutError(LLMError):
    """No (complete) answer arrived within the configured timeout."""


class BadRequestError(LLMError):
    """The provider rejected the request itself; resending it unchanged cannot succeed."""


class ContextTooLongError(BadRequestError):
    """The prompt exceeds the model's context window; trim context and try again."""


class ProviderUnavailableError(LLMError):
    """The provider could not be reached or failed on its side (connection error, 5xx)."""


class MalformedResponseError(LLMError):
    """The provider's answer did not follow its own wire format."""


class UnknownModelError(LLMError):
    """A model is missing from the catalogue, so its cost is unknown; it is never priced at $0."""

    def __init__(self, *, provider: str, model: str, catalogue: str, version: int) -> None:
        super().__init__(
            f"model {model!r} of provider {provider!r} is not in the catalogue ({catalogue}, "
            f"version {version}); add it with its prices to a [[models]] entry of the file AIOS_LLM_CONFIG "
            "names (docs/agents.md)",
            provider=provider,
        )
        self.model = model


class NoDeploymentError(LLMError):
    """No deployment may take the call (privacy, tier, context window); the message says which."""


class CoolingDownError(RateLimitError):
    """Every eligible deployment is cooling down after failures; retry after ``retry_after`` s."""

    def __init__(self, message: str, *, provider: str, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, status_code=None, retry_after=retry_after)


class QueueTimeoutError(RateLimitError):
    """No eligible deployment had room (its concurrency, rpm or tpm limit) within the router's
    queue time; retry after ``retry_after`` s, or raise the limits."""

    def __init__(self, message: str, *, provider: str, retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider, status_code=None, retry_after=retry_after)


class BudgetExceededError(LLMError):
    """The call could cost more than the budget has left, on every deployment that was eligible."""


class MissingCredentialsError(ConfigError):
    """A provider was selected but no key was configured; the message names the variable to set."""

    def __init__(self, *, provider: str, env_var: str, alternative: str | None = None) -> None:
        message = f"{env_var} is not set: export it"
        if alternative:
            message += f", or choose {alternative}"
        super().__init__(message)
        self.provider = provider
        self.env_var = env_var


class TaskCancelledError(AiosError):
    """The task was cancelled (by a person, the API or a spent budget) while an agent worked on it;
    ``reason`` says by whom and why. Not an LLM failure: the attempt ends as cancelled."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cancelled: {reason}")
        self.reason = reason
