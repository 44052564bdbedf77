"""`load_chat_model`: the one place where `AGENT_MODEL` becomes a chat model.

`offline` (the default) is `OfflineChatModel`, a deterministic rule-based
stand-in that needs no API key and no network, so `make dev` and the tests run
anywhere. Any other value is handed to `langchain.chat_models.init_chat_model`
(`openai:gpt-4.1-mini`, `anthropic:claude-sonnet-4-5`, ...).

Provider base URLs are honoured by the provider packages themselves, nothing
here reads them: `ChatOpenAI` passes `OPENAI_BASE_URL` on to the `openai`
client (or `OPENAI_API_BASE`, read by LangChain), and `ChatAnthropic` reads
`ANTHROPIC_API_URL`, then `ANTHROPIC_BASE_URL` (langchain-openai 1.7,
langchain-anthropic 1.7).
"""

from __future__ import annotations

from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel

from onbehalf.offline_model import OfflineChatModel
from onbehalf.settings import AgentSettings

OFFLINE = "offline"

_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
"""Where the providers we document read their API key; used only to word errors."""

_EXAMPLES = "offline, openai:gpt-4.1-mini or anthropic:claude-sonnet-4-5"


class ModelConfigError(ValueError):
    """`AGENT_MODEL` names a model that cannot be built; the message says how to fix it."""


def load_chat_model(name: str | None = None) -> BaseChatModel:
    """The chat model named by `name`, or by `AGENT_MODEL` when `name` is None.

    Building a model makes no network call; provider packages only check that
    credentials exist. A blank value means `offline`.

    Raises:
        ModelConfigError: the name is unknown, its provider package is missing,
            or the provider's API key is not set.
    """
    if name is None:
        name = AgentSettings().agent_model
    name = name.strip() or OFFLINE
    if name == OFFLINE:
        return OfflineChatModel()
    return _init_provider_model(name)


def _init_provider_model(name: str) -> BaseChatModel:
    provider, sep, model = name.partition(":")
    if not sep:
        provider = _infer_provider(name)
    elif not model.strip():
        raise ModelConfigError(
            f"AGENT_MODEL={name!r} names a provider but no model; "
            f"set it to '{provider}:<model>', e.g. {_EXAMPLES}"
        )
    try:
        chat_model = init_chat_model(name)
    except ImportError as exc:
        raise ModelConfigError(
            f"AGENT_MODEL={name!r} needs a provider package that is not installed "
            f"({exc}); install it or set AGENT_MODEL to one of {_EXAMPLES}"
        ) from None
    except Exception as exc:  # provider packages raise assorted types
        key_env = _KEY_ENV.get(provider)
        if key_env and _mentions_credentials(str(exc)):
            raise _missing_key(name, key_env) from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelConfigError(
            f"AGENT_MODEL={name!r} is not a usable chat model ({reason}); "
            f"use 'offline' or '<provider>:<model>', e.g. {_EXAMPLES}"
        ) from None
    if not isinstance(chat_model, BaseChatModel):
        raise ModelConfigError(
            f"AGENT_MODEL={name!r} did not name one chat model; "
            f"use 'offline' or '<provider>:<model>', e.g. {_EXAMPLES}"
        )
    key_env = _KEY_ENV.get(provider)
    if key_env and _has_empty_key(chat_model, provider):
        raise _missing_key(name, key_env)
    return chat_model


def _infer_provider(name: str) -> str:
    lowered = name.lower()
    if lowered.startswith(("gpt-", "o1", "o3", "chatgpt")):
        return "openai"
    if lowered.startswith("claude"):
        return "anthropic"
    return ""


def _mentions_credentials(text: str) -> bool:
    lowered = text.lower()
    return "api_key" in lowered or "credentials" in lowered or "api key" in lowered


def _has_empty_key(chat_model: BaseChatModel, provider: str) -> bool:
    # ChatAnthropic builds without a key and only fails at the first call; catch it here.
    secret = getattr(chat_model, f"{provider}_api_key", None)
    if secret is None:  # credentials come some other way (e.g. a callable); trust them
        return False
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
    return isinstance(value, str) and not value.strip()


def _missing_key(name: str, key_env: str) -> ModelConfigError:
    return ModelConfigError(
        f"AGENT_MODEL={name!r} needs an API key: set {key_env}, "
        f"or set AGENT_MODEL=offline to run without one"
    )
