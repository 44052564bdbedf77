"""`thread_title`: a short title for a conversation; needs no token and no MCP server."""

import re
from functools import cache
from typing import Annotated, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from onbehalf.models import load_chat_model

INSTRUCTION = "Write a short title (max 6 words) for this conversation. Reply with the title only."
DEFAULT_TITLE = "New conversation"
MAX_CHARS = 60


class TitleState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    title: str


@cache
def _model() -> BaseChatModel:
    # Built at the first run, not at import: loading the graph needs no settings or keys.
    return load_chat_model()


async def write_title(state: TitleState) -> dict[str, str]:
    """Ask the model for a title of the conversation's opening text (tool traffic left out)."""
    conversation = [
        type(m)(content=str(m.text))
        for m in state.get("messages", [])
        if isinstance(m, HumanMessage | AIMessage) and m.text.strip()
    ][:6]
    if not any(isinstance(m, HumanMessage) for m in conversation):
        return {"title": DEFAULT_TITLE}
    reply = await _model().ainvoke([SystemMessage(INSTRUCTION), *conversation])
    return {"title": clean_title(reply.text) or DEFAULT_TITLE}


def clean_title(text: str) -> str:
    """The first line of a reply without quotes, a "Title:" label or trailing punctuation."""
    line = next((part for part in text.splitlines() if part.strip()), "")
    line = re.sub(r"^\s*title\s*:\s*", "", line, flags=re.IGNORECASE)
    line = " ".join(line.strip(" \t\"'`*“”‘’").split()).rstrip(".!?:;,")
    if len(line) > MAX_CHARS:
        cut = line[: MAX_CHARS + 1]
        line = cut.rsplit(" ", 1)[0] if " " in cut else cut[:MAX_CHARS]
    return line.rstrip(" .,;:")


graph = (
    StateGraph(TitleState)
    .add_node(write_title)
    .add_edge(START, "write_title")
    .add_edge("write_title", END)
    .compile(name="thread_title")
)
