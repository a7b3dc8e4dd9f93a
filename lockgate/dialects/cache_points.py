"""LiteLLM's ``cache_control_injection_points`` on Anthropic-dialect bodies (Anthropic and Bedrock).

Markers are added server-side for clients that send none (the Cline CLI): ``{location: message, role:
system}`` marks the system prompt, ``{location: message, role: user|assistant}`` the last such message,
``{location: message, index: N}`` the N-th message (negative from the end). Never past Anthropic's limit
of four breakpoints; a block already marked is left alone.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_CACHE_BREAKPOINTS", "inject_cache_points", "valid_points"]

MAX_CACHE_BREAKPOINTS = 4


def inject_cache_points(body: dict[str, Any], points: Any) -> dict[str, Any] | None:
    """A new body with markers at ``points``, or None when there are none."""
    if not points:
        return None
    out = dict(body)
    system = out.get("system")
    if isinstance(system, str) and system:
        out["system"] = [{"type": "text", "text": system}]
    messages = [dict(m) if isinstance(m, dict) else m for m in out.get("messages") or []]
    out["messages"] = messages
    budget = MAX_CACHE_BREAKPOINTS - _count_markers(out)
    for point in points:
        if budget <= 0:
            break
        role, index = point.get("role"), point.get("index")
        if role == "system" and out.get("system"):
            blocks = [dict(b) for b in out["system"]]
            out["system"] = blocks
            budget -= _mark(blocks)
        elif isinstance(index, int) and -len(messages) <= index < len(messages):
            budget -= _mark_message(messages, index)
        elif role in ("user", "assistant"):
            for i in range(len(messages) - 1, -1, -1):
                if messages[i].get("role") == role:
                    budget -= _mark_message(messages, i)
                    break
    return out


def valid_points(points: Any) -> bool:
    return isinstance(points, list) and all(
        isinstance(p, dict)
        and p.get("location") == "message"
        and (p.get("role") in ("system", "user", "assistant") or isinstance(p.get("index"), int))
        for p in points
    )


def _count_markers(body: dict[str, Any]) -> int:
    count = 0
    for block in body.get("system") or []:
        count += isinstance(block, dict) and "cache_control" in block
    for tool in body.get("tools") or []:
        count += isinstance(tool, dict) and "cache_control" in tool
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            count += isinstance(block, dict) and "cache_control" in block
    return count


def _mark(blocks: list[dict[str, Any]]) -> int:
    """Put an ephemeral marker on the last block; 1 if a new marker was added."""
    if not blocks or "cache_control" in blocks[-1]:
        return 0
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
    return 1


def _mark_message(messages: list[Any], index: int) -> int:
    message = messages[index]
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return 0
    blocks = list(content)
    added = _mark(blocks)
    messages[index] = {**message, "content": blocks}
    return added
