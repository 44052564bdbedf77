"""`OfflineChatModel`: a deterministic, rule-based stand-in for a chat model.

It is not a language model and never pretends to be one. It exists so that
`make dev`, Studio and the tests run with no API key and no network, while
still driving real agent loops: it calls the tools it is given and reports
what they returned. Every answer is a pure function of the messages and the
bound tools, so the same conversation always gets the same reply.

Rules (only the messages after the last human message decide the turn):

1. The last message is a tool result: answer with it, prefixed with the tool
   name ("list_tickets returned: ..."); JSON is laid out one item per line.
   A result with status "error" is answered "The tool <name> failed: <text>".
2. Otherwise read the last human message and pick one bound tool: the tool
   whose exact name appears as a word ("list_tickets"), or with spaces for
   underscores ("list tickets"); failing that, the tool sharing the most
   meaningful words with the message (name words count double; description
   and parameter names count once; stopwords are ignored). No match, or no
   tools bound: a plain answer saying so. A message that starts with a tool
   name no bound tool has ("list_notes" before that account is connected)
   is answered so, never matched to a look-alike.
3. Arguments come from `key=value` pairs (values may be quoted) and from a
   JSON object in the message; only keys in the tool's schema are kept, and
   values are coerced to the schema type (integer, number, boolean, ...).
4. A required argument is missing: no tool call; the answer names what is
   needed and shows an example ("To call get_ticket I need: ticket_id. ...").
5. Otherwise the reply is exactly one tool call with empty content and an id
   derived from the conversation position and the call itself.

Title mode: with no tools bound and a system message containing the words
"short title" (`TITLE_MARKER`), the reply is a title made of the first six
meaningful words of the first human message.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

TITLE_MARKER = "short title"
"""A system message containing these words (any case) asks for a conversation title."""

TITLE_MAX_WORDS = 6
TITLE_MAX_CHARS = 60
DEFAULT_TITLE = "New conversation"

_STOPWORDS = frozenset(
    {
        "a", "about", "all", "am", "an", "and", "any", "are", "as", "at", "be", "by", "can",
        "could", "do", "does", "for", "from", "get", "give", "have", "hello", "hi", "how", "i",
        "if", "in", "into", "is", "it", "its", "let", "me", "my", "of", "on", "or", "our", "please",
        "show", "some", "tell", "than", "that", "the", "their", "them", "then", "there", "these",
        "this", "to", "up", "us", "want", "was", "we", "what", "when", "where", "which", "who",
        "why", "will", "with", "would", "you", "your",
    }
)
_WORD = re.compile(r"[A-Za-z0-9]+")
_TITLE_WORD = re.compile(r"[\w'’-]+")
_KEY_VALUE = re.compile(
    r"""(?<![\w-])([A-Za-z_]\w*)\s*=\s*("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;]+)"""
)
_TRAILING_PUNCTUATION = ".,;:!?)"


class OfflineChatModel(BaseChatModel):
    """Deterministic rule-based chat model for running agents without a provider.

    Stateless: there are no fields and no counters, so one instance can serve
    every user and run concurrently. See the module docstring for the rules.
    """

    @property
    def _llm_type(self) -> str:
        return "onbehalf-offline"

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools the way provider models do: as OpenAI-format schemas in call kwargs."""
        formatted = [_as_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=[tool for tool in formatted if tool is not None], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = respond(messages, _bound_tools(kwargs))
        return ChatResult(generations=[ChatGeneration(message=reply)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop=stop, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from _chunks(respond(messages, _bound_tools(kwargs)))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in _chunks(respond(messages, _bound_tools(kwargs))):
            yield chunk


# --- the turn ----------------------------------------------------------------------------


def respond(messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]]) -> AIMessage:
    """The offline model's reply to `messages` with `tools` (OpenAI-format) bound."""
    last_human = _last_index(messages, HumanMessage)
    turn = messages[last_human + 1 :] if last_human is not None else messages
    results = _trailing_tool_results(turn)
    if results:
        return AIMessage(content="\n\n".join(_describe_result(m, messages) for m in results))
    if not tools:
        if _asks_for_title(messages):
            return AIMessage(content=title_for(messages))
        if last_human is None:
            return AIMessage(content="There is no question to answer yet.")
        return AIMessage(content=f"You said: {_text(messages[last_human].content).strip()}")
    names = ", ".join(_tool_name(tool) for tool in tools)
    if last_human is None:
        return AIMessage(content=f"Ask me to use one of these tools: {names}.")
    text = _text(messages[last_human].content)
    command = _COMMAND.match(text)
    if command and command.group(1) not in {_tool_name(tool) for tool in tools}:
        return AIMessage(content=f"There is no tool {command.group(1)} here. "
                         f"Available tools: {names}.")
    tool = _pick_tool(text, tools)
    if tool is None:
        return AIMessage(
            content=f"I can't help with that with the tools I have. Available tools: {names}."
        )
    function = tool["function"]
    schema = function.get("parameters") or {}
    args = _arguments(text, schema)
    missing = [key for key in schema.get("required", []) if key not in args]
    if missing:
        return AIMessage(content=_ask_for(function["name"], missing, args, schema))
    call_id = _call_id(last_human, text, function["name"], args)
    return AIMessage(
        content="",
        tool_calls=[{"name": function["name"], "args": args, "id": call_id, "type": "tool_call"}],
    )


def title_for(messages: Sequence[BaseMessage]) -> str:
    """A title from the first human message: its first meaningful words, capitalised."""
    first = next((m for m in messages if isinstance(m, HumanMessage)), None)
    if first is None:
        return DEFAULT_TITLE
    words = [
        word.strip("'’-")
        for word in _TITLE_WORD.findall(_text(first.content))
        if word.lower() not in _STOPWORDS and word.strip("'’-_")
    ][:TITLE_MAX_WORDS]
    title = ""
    for word in words:
        candidate = f"{title} {word}".strip()
        if len(candidate) > TITLE_MAX_CHARS:
            break
        title = candidate
    if not title:
        return DEFAULT_TITLE
    return title[0].upper() + title[1:]


def _asks_for_title(messages: Sequence[BaseMessage]) -> bool:
    return any(
        isinstance(m, SystemMessage) and TITLE_MARKER in _text(m.content).lower()
        for m in messages
    )


# --- tool results ------------------------------------------------------------------------


def _trailing_tool_results(turn: Sequence[BaseMessage]) -> list[ToolMessage]:
    results: list[ToolMessage] = []
    for message in reversed(turn):
        if not isinstance(message, ToolMessage):
            break
        results.append(message)
    return results[::-1]


def _describe_result(result: ToolMessage, messages: Sequence[BaseMessage]) -> str:
    name = result.name or _name_of_call(result.tool_call_id, messages) or "the tool"
    text = _text(result.content).strip()
    if result.status == "error":
        return f"The tool {name} failed: {text or 'no details given'}"
    parsed = _parsed(result.content, text)
    rendered = _render(parsed)
    if not rendered:
        return f"{name} returned nothing."
    separator = "\n" if isinstance(parsed, list) or "\n" in rendered else " "
    return f"{name} returned:{separator}{rendered}"


def _name_of_call(call_id: str, messages: Sequence[BaseMessage]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, AIMessage):
            for call in message.tool_calls:
                if call.get("id") == call_id:
                    return call["name"]
    return None


def _parsed(content: Any, text: str) -> Any:
    """JSON in the result, if any; MCP tools often send one JSON text block per item."""
    blocks = [b for b in content if _is_text_block(b)] if isinstance(content, list) else []
    if len(blocks) > 1:
        items = [_json_or_none(b if isinstance(b, str) else b["text"]) for b in blocks]
        if all(item is not None for item in items):
            return items
    parsed = _json_or_none(text)
    return text if parsed is None else parsed


def _json_or_none(text: str) -> Any:
    text = text.strip()
    if not text or (text[0] not in "[{\"" and text not in ("true", "false", "null")):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _render(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"- {_inline(item)}" for item in value)
    return _inline(value)


def _inline(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_inline(item)}" for key, item in value.items())
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


# --- picking a tool ----------------------------------------------------------------------


_COMMAND = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+)(?![\w=-])")
"""A message that starts with a tool name: `list_notes`, `get_ticket ticket_id=...`."""


def _pick_tool(text: str, tools: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    named = []
    for order, tool in enumerate(tools):
        name = _tool_name(tool)
        spaced = r"\s+".join(re.escape(part) for part in name.split("_") if part)
        pattern = rf"(?<![\w-])(?:{re.escape(name)}|{spaced})(?![\w-])"
        found = re.search(pattern, text, flags=re.IGNORECASE)
        if found:
            named.append((found.start(), -len(name), order, tool))
    if named:
        return min(named, key=lambda entry: entry[:3])[3]
    words = _meaningful(_without_values(text))
    best, best_rank = None, (0, 0.0)
    for tool in tools:
        function = tool["function"]
        own = _meaningful(function["name"])
        related = _meaningful(function.get("description") or "") | _meaningful(
            " ".join((function.get("parameters") or {}).get("properties", {}))
        )
        score = 2 * len(words & own) + len(words & (related - own))
        # on a tie, the tool whose name the message covers best ("ticket" -> get_ticket)
        rank = (score, len(words & own) / len(own) if own else 0.0)
        if score > 0 and rank > best_rank:
            best, best_rank = tool, rank
    return best


def _meaningful(text: str) -> set[str]:
    words = (word.lower() for word in _WORD.findall(text.replace("_", " ")))
    return {_stem(word) for word in words if word not in _STOPWORDS and len(word) > 1}


def _stem(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _without_values(text: str) -> str:
    """The message with its JSON object and the values of key=value pairs taken out."""
    text = _remove_json_object(text)
    return _KEY_VALUE.sub(lambda match: match.group(1), text)


# --- arguments ---------------------------------------------------------------------------


def _arguments(text: str, schema: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = schema.get("properties") or {}
    by_lower = {key.lower(): key for key in properties}
    raw: dict[str, Any] = {}
    embedded = _json_object(text)
    if embedded is not None:
        raw.update(embedded)
    for match in _KEY_VALUE.finditer(_remove_json_object(text)):
        raw[match.group(1)] = _unquote(match.group(2))
    args: dict[str, Any] = {}
    for key, value in raw.items():
        name = key if key in properties else by_lower.get(key.lower())
        if name is not None:
            args[name] = _coerce(value, properties[name]) if isinstance(value, str) else value
    return args


def _json_object(text: str) -> dict[str, Any] | None:
    span = _json_span(text)
    return None if span is None else span[2]


def _remove_json_object(text: str) -> str:
    span = _json_span(text)
    return text if span is None else text[: span[0]] + " " + text[span[1] :]


def _json_span(text: str) -> tuple[int, int, dict[str, Any]] | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return match.start(), end, value
    return None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        return re.sub(r"\\(.)", r"\1", inner) if value[0] == '"' else inner
    return value.rstrip(_TRAILING_PUNCTUATION) or value


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    types = _types(schema)
    lowered = value.strip().lower()
    if "null" in types and lowered in ("null", "none"):
        return None
    if "integer" in types:
        try:
            return int(value)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(value)
        except ValueError:
            pass
    if "boolean" in types and lowered in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return lowered in ("true", "yes", "on", "1")
    if types & {"array", "object"}:
        parsed = _json_or_none(value)
        if parsed is not None:
            return parsed
        if "array" in types:
            return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    for option in (*schema.get("anyOf", ()), *schema.get("oneOf", ())):
        if isinstance(option, dict):
            types |= _types(option)
    return types


def _ask_for(
    name: str, missing: Sequence[str], given: dict[str, Any], schema: dict[str, Any]
) -> str:
    properties = schema.get("properties") or {}
    example = [f"{key}={_example_value(value)}" for key, value in given.items()]
    example += [f"{key}={_placeholder(properties.get(key) or {}, key)}" for key in missing]
    return f"To call {name} I need: {', '.join(missing)}. Say e.g. {name} {' '.join(example)}"


def _placeholder(schema: dict[str, Any], key: str) -> str:
    for field in ("examples", "example", "default"):
        value = schema.get(field)
        if isinstance(value, list) and value:
            return _example_value(value[0])
        if value is not None and not isinstance(value, list):
            return _example_value(value)
    return f"<{key}>"


def _example_value(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False) if re.search(r"[\s\"',;=]", value) else value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _call_id(position: int, text: str, name: str, args: dict[str, Any]) -> str:
    seed = json.dumps([position, text, name, args], sort_keys=True, default=str)
    return "call_" + hashlib.sha256(seed.encode()).hexdigest()[:16]


# --- plumbing ----------------------------------------------------------------------------


def _as_openai_tool(tool: Any) -> dict[str, Any] | None:
    try:
        formatted = convert_to_openai_tool(tool)
    except Exception:  # provider built-ins (web search, ...) cannot be called offline
        return None
    function = formatted.get("function") if isinstance(formatted, dict) else None
    return formatted if isinstance(function, dict) and function.get("name") else None


def _bound_tools(kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = list(kwargs.get("tools") or [])
    choice = kwargs.get("tool_choice")
    if choice == "none" or choice is False:
        return []
    wanted = None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name") or choice.get("name")
    elif isinstance(choice, str) and choice not in ("auto", "any", "required"):
        wanted = choice
    if wanted:
        return [tool for tool in tools if _tool_name(tool) == wanted]
    return tools


def _tool_name(tool: dict[str, Any]) -> str:
    return str(tool["function"]["name"])


def _last_index(messages: Sequence[BaseMessage], kind: type[BaseMessage]) -> int | None:
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], kind):
            return index
    return None


def _is_text_block(block: Any) -> bool:
    return isinstance(block, str) or (
        isinstance(block, dict) and block.get("type") == "text" and "text" in block
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or ():
        if _is_text_block(block):
            parts.append(block if isinstance(block, str) else str(block["text"]))
        elif isinstance(block, dict):
            kind = block.get("type", "content")
            where = block.get("url") or block.get("mime_type") or ""
            parts.append(f"[{kind}{' ' + where if where else ''}]")
    return "\n".join(parts)


def _chunks(reply: AIMessage) -> Iterator[ChatGenerationChunk]:
    """Split a reply the way a streaming provider would: words, then the tool call."""
    text = _text(reply.content)
    for token in re.split(r"(\s+)", text) if text else ():
        if token:
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))
    for index, call in enumerate(reply.tool_calls):
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                tool_call_chunks=[
                    {
                        "name": call["name"],
                        "args": json.dumps(call["args"], ensure_ascii=False),
                        "id": call["id"],
                        "index": index,
                        "type": "tool_call_chunk",
                    }
                ],
            )
        )
