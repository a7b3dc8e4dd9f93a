"""ThinkingMemory: signatures by a hash of the thinking text, bounded in size and time, no text kept."""

from __future__ import annotations

import time

from lockgate.dialects.thinking import ThinkingMemory


def test_remember_and_restore() -> None:
    memory = ThinkingMemory()
    memory.remember("a long chain of thought", "sig-1")
    assert memory.signature("a long chain of thought") == "sig-1"
    assert memory.signature("a long chain of thought!") is None
    memory.remember("", "sig")
    memory.remember("x", "")
    assert len(memory) == 1


def test_bounded_in_size_oldest_first() -> None:
    memory = ThinkingMemory(max_entries=3)
    for i in range(5):
        memory.remember(f"thought {i}", f"sig {i}")
    assert len(memory) == 3
    assert memory.signature("thought 0") is None and memory.signature("thought 4") == "sig 4"


def test_bounded_in_time() -> None:
    memory = ThinkingMemory(ttl_seconds=0.01)
    memory.remember("fleeting", "sig")
    time.sleep(0.02)
    assert memory.signature("fleeting") is None and len(memory) == 0


def test_the_text_itself_is_not_kept() -> None:
    memory = ThinkingMemory()
    memory.remember("secret prompt-derived reasoning", "sig")
    assert "secret" not in repr(memory._entries)
