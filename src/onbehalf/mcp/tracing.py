"""Keeping LangSmith's untraced bookkeeping off the thread pool.

langchain wraps every middleware hook in langsmith `traceable`, which hands
two small sync functions per call to a worker thread, even with tracing off.
Measured, that alone made any middleware cost ~1.26x an agent without one
(docs/performance.md). With tracing off those functions do no I/O, so we run
them inline through LangSmith's documented `set_runtime_overrides` hook; with
tracing on, LangSmith's default is used unchanged. Disable with
`ONBEHALF_LANGSMITH_INLINE=0`; a deployer's own override is never replaced.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from onbehalf.settings import KitSettings, current

_installed = False


async def _inline_when_untraced(
    default: Callable[..., Any], ctx: contextvars.Context, func: Callable[..., Any],
    /, *args: Any, **kwargs: Any,
) -> Any:
    from langsmith.utils import tracing_is_enabled

    if ctx.run(tracing_is_enabled):
        return await default(ctx, func, *args, **kwargs)
    return ctx.run(func, *args, **kwargs)


def inline_untraced_langsmith_hops() -> None:
    """Install the override once per process, unless disabled or already customised."""
    global _installed
    if _installed or not current(KitSettings).onbehalf_langsmith_inline:
        return
    try:
        from langsmith import set_runtime_overrides
        from langsmith._runtime_overrides import get_runtime_overrides
    except ImportError:  # an older langsmith without the hook: keep its default
        return
    if get_runtime_overrides().aio_to_thread is None:
        set_runtime_overrides(aio_to_thread=_inline_when_untraced)
    _installed = True
