"""UsageTap: events pass through unchanged, usage is captured, the usage chunk is dropped only when asked."""

from __future__ import annotations

import json

import pytest

from lockgate.streaming import UsageTap

CHUNK = b'data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n'
DONE = b"data: [DONE]\n\n"
STREAM = CHUNK * 3 + USAGE + DONE


def feed_all(tap: UsageTap, pieces: list[bytes]) -> bytes:
    return b"".join(tap.feed(p) for p in pieces) + tap.flush()


@pytest.mark.parametrize("size", [1, 2, 7, 50, len(STREAM)])
def test_any_split_gives_the_same_events(size: int) -> None:
    tap = UsageTap(strip_usage_chunk=False)
    out = feed_all(tap, [STREAM[i : i + size] for i in range(0, len(STREAM), size)])
    assert out == STREAM
    assert tap.usage == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert tap.done and tap.events == 5


@pytest.mark.parametrize("size", [1, 13, len(STREAM)])
def test_usage_chunk_stripped_when_client_did_not_ask(size: int) -> None:
    tap = UsageTap(strip_usage_chunk=True)
    out = feed_all(tap, [STREAM[i : i + size] for i in range(0, len(STREAM), size)])
    assert out == CHUNK * 3 + DONE
    assert tap.usage is not None and tap.usage["total_tokens"] == 5


def test_null_usage_on_every_chunk_is_not_parsed_as_usage() -> None:
    chunk = CHUNK.replace(b"]}\n\n", b'],"usage":null}\n\n')
    tap = UsageTap(strip_usage_chunk=True)
    assert tap.feed(chunk + DONE) == chunk + DONE
    assert tap.usage is None


def test_usage_on_a_content_chunk_is_kept_and_captured() -> None:
    # Some servers put usage on the last content chunk instead of a separate one.
    chunk = CHUNK.replace(b"]}\n\n", b'],"usage":{"total_tokens":9}}\n\n')
    tap = UsageTap(strip_usage_chunk=True)
    assert tap.feed(chunk) == chunk
    assert tap.usage == {"total_tokens": 9}


def test_crlf_framing_is_normalised() -> None:
    tap = UsageTap(strip_usage_chunk=False)
    out = tap.feed(STREAM.replace(b"\n", b"\r\n"))
    assert out == STREAM and tap.usage is not None


def test_spaced_json_from_python_servers() -> None:
    usage = b"data: " + json.dumps({"choices": [], "usage": {"total_tokens": 4}}).encode() + b"\n\n"
    tap = UsageTap(strip_usage_chunk=True)
    assert tap.feed(CHUNK + usage + DONE) == CHUNK + DONE
    assert tap.usage == {"total_tokens": 4}


def test_unterminated_tail_is_flushed() -> None:
    tap = UsageTap(strip_usage_chunk=False)
    assert tap.feed(CHUNK + b"data: {partial") == CHUNK
    assert tap.flush() == b"data: {partial"
    assert not tap.done


@pytest.mark.parametrize("size", [1, 3, 7])
def test_crlf_split_across_reads(size: int) -> None:
    crlf = STREAM.replace(b"\n", b"\r\n")
    tap = UsageTap(strip_usage_chunk=False)
    assert feed_all(tap, [crlf[i : i + size] for i in range(0, len(crlf), size)]) == STREAM
    assert tap.usage is not None and tap.done
