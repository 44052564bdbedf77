"""An enormous tool result is cut with a note instead of flooding state and the model."""

from __future__ import annotations

from langchain_core.messages import ToolMessage

from onbehalf.mcp.results import bound_result


def test_small_results_are_untouched() -> None:
    message = ToolMessage(content="ok", tool_call_id="c1")
    assert bound_result(message, limit=10) is message


def test_large_text_is_cut_with_a_note() -> None:
    message = ToolMessage(content="x" * 1000, tool_call_id="c1", artifact={"big": "y" * 1000})
    cut = bound_result(message, limit=100)
    assert cut.content.startswith("x" * 100)
    assert "truncated by onbehalf" in cut.content and "1,000 characters" in cut.content
    assert cut.artifact is None and cut.tool_call_id == "c1"


def test_content_blocks_are_measured_and_flattened() -> None:
    blocks = [{"type": "text", "text": "a" * 80}, {"type": "text", "text": "b" * 80}]
    cut = bound_result(ToolMessage(content=blocks, tool_call_id="c1"), limit=100)
    assert cut.content.startswith("a" * 80 + "b" * 20)
