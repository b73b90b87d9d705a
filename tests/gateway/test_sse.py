"""Relaying streams: whole events only, what the client was sent, and the request that resumes it."""

from __future__ import annotations

from collections.abc import AsyncIterator

from edgeplane.gateway._sse import EventReader, StreamProgress, event_data, is_error_event, resume_body


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_events_are_cut_whole_whatever_the_chunking() -> None:
    reader = EventReader(_chunks(b'data: {"a"', b': 1}\n\ndata: {"b": 2}\r\n\r\nda', b"ta: [DONE]\n\n"))
    events = [await reader.next() for _ in range(4)]
    assert events == [b'data: {"a": 1}\n\n', b'data: {"b": 2}\r\n\r\n', b"data: [DONE]\n\n", None]


def test_progress_knows_the_partial_answer_and_whether_the_model_finished() -> None:
    progress = StreamProgress()
    progress.observe(b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]}\n\n')
    progress.observe(b'data: {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}]}\n\n')
    assert (progress.partial, progress.tokens, progress.finished, progress.done) == ("Hello", 2, False, False)
    progress.observe(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')
    progress.observe(b"data: [DONE]\n\n")
    assert progress.finished and progress.done
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    again = resume_body(body, progress, chat=True)
    assert again["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert again["continue_final_message"] is True and again["max_tokens"] == 8
    assert resume_body({"prompt": "Once", "max_tokens": 3}, progress, chat=False)["prompt"] == "OnceHello"


def test_error_events_are_told_apart_from_completions() -> None:
    assert is_error_event(event_data(b'data: {"error": {"message": "boom"}}\n\n'))
    assert not is_error_event(event_data(b'data: {"choices": [{"delta": {"content": "x"}}]}\n\n'))
    assert event_data(b": a comment\n\n") is None
