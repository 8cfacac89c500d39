"""Reply: engine streams of one or more choices -> reply events and whole results."""

from __future__ import annotations

import pytest

from ggufd.engine.types import (
    Accepted,
    ErrorEvent,
    ErrorKind,
    Event,
    FinishReason,
    PromptLogprobs,
    RequestPart,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
)
from ggufd.errors import EngineFailure, Origin
from ggufd.serving import types as T
from ggufd.serving.core import CHAT_ORIGINS
from ggufd.serving.reply import Choice, ParseSpec, Reply, merge, open_streams, usage
from ggufd.tools.detect import get_dialect
from tests.support.fakes import FakeStream

STOP, LENGTH = FinishReason.STOP, FinishReason.LENGTH


def lp(token: str, value: float | None = -0.5, top: tuple[TopLogprob, ...] = ()) -> TokenLogprob:
    return TokenLogprob(token, value, tuple(token.encode()), top)


def tok(
    rid: str, text: str, finish: FinishReason | None = None, n: int = 0, **kw: object
) -> TokenEvent:
    return TokenEvent(rid, text, 1, finish_reason=finish, completion_tokens=n, **kw)  # type: ignore[arg-type]


def choice_stream(rid: str, texts: list[str], prompt_tokens: int = 5, **kw: object) -> FakeStream:
    events: list[Event | BaseException] = [Accepted(rid, prompt_tokens, **kw)]  # type: ignore[arg-type]
    for k, t in enumerate(texts):
        last = k == len(texts) - 1
        events.append(tok(rid, t, STOP if last else None, k + 1))
    return FakeStream(events)


async def reply_of(
    streams: list[FakeStream], spec: ParseSpec | None = None, n_per_prompt: int = 1
) -> Reply:
    choices = await open_streams(streams, CHAT_ORIGINS)
    return Reply("r-1", "m", streams, choices, spec, CHAT_ORIGINS, n_per_prompt)


async def events_of(reply: Reply) -> list[T.ReplyEvent]:
    return [ev async for ev in reply.events()]


# -- merging streams -------------------------------------------------------------------
async def test_merge_one_stream() -> None:
    s = FakeStream([Accepted("a", 1), tok("a", "x")])
    got = [(i, ev) async for i, ev in merge([s])]
    assert got == [(0, Accepted("a", 1)), (0, tok("a", "x"))]


async def test_merge_tags_events_and_keeps_each_streams_order() -> None:
    streams = [FakeStream([tok(f"s{k}", str(j)) for j in range(5)]) for k in range(3)]
    got = [(i, ev) async for i, ev in merge(streams)]
    assert len(got) == 15
    for k in range(3):
        mine = [ev for i, ev in got if i == k]
        assert [e.request_id for e in mine] == [f"s{k}"] * 5
        assert [e.text for e in mine if isinstance(e, TokenEvent)] == ["0", "1", "2", "3", "4"]
    # Events of different streams interleave as they come.
    assert [i for i, _ in got][:3] != [0, 0, 0]
    assert all(s.closed for s in streams)


async def test_merge_closes_every_stream_when_the_consumer_stops() -> None:
    streams = [FakeStream([tok("a", str(j)) for j in range(100)]) for _ in range(2)]
    gen = merge(streams)
    async for _ in gen:
        break
    await gen.aclose()
    assert all(s.closed for s in streams)


@pytest.mark.parametrize("n_streams", [1, 2])
async def test_merge_propagates_a_stream_failure(n_streams: int) -> None:
    """BUG (n > 1): an exception raised by one stream is swallowed by merge().

    With one stream merge() iterates it directly and the exception propagates. With
    several, each is pumped by a task whose `finally` enqueues the end marker; the
    task's exception is then discarded by `gather(..., return_exceptions=True)`, so
    collect() returns normally with the choice unfinished (finish_reason None).
    """
    streams = [FakeStream([tok("a", "x"), RuntimeError("pipe broke")])]
    streams += [FakeStream([tok("b", "y", STOP)]) for _ in range(n_streams - 1)]
    with pytest.raises(RuntimeError, match="pipe broke"):
        async for _ in merge(streams):
            pass


# -- opening ---------------------------------------------------------------------------
async def test_open_streams_waits_for_every_accepted_event() -> None:
    streams = [choice_stream("a", ["x"], 3), choice_stream("b", ["y"], 4)]
    choices = await open_streams(streams, CHAT_ORIGINS)
    assert [(c.index, c.accepted.prompt_tokens) for c in choices] == [(0, 3), (1, 4)]
    assert not any(s.closed for s in streams)


@pytest.mark.parametrize(
    ("part", "origin"),
    [
        (RequestPart.PROMPT, Origin.MESSAGES),
        (RequestPart.GRAMMAR, Origin.GRAMMAR),
        (RequestPart.LOGIT_BIAS, Origin.LOGIT_BIAS),
        (None, None),
    ],
)
async def test_open_streams_raises_the_first_error_naming_its_origin(
    part: RequestPart | None, origin: Origin | None
) -> None:
    good = choice_stream("a", ["x"])
    bad = FakeStream([ErrorEvent("b", ErrorKind.CONTEXT_LENGTH, "nope", part)])
    with pytest.raises(EngineFailure) as info:
        await open_streams([good, bad], CHAT_ORIGINS)
    assert (info.value.kind, info.value.message) == (ErrorKind.CONTEXT_LENGTH, "nope")
    assert info.value.origin is origin
    assert good.closed and bad.closed


async def test_open_streams_reraises_an_exception() -> None:
    with pytest.raises(RuntimeError, match="down"):
        await open_streams([FakeStream([RuntimeError("down")]), choice_stream("a", ["x"])], {})


async def test_open_streams_rejects_events_out_of_order() -> None:
    with pytest.raises(EngineFailure) as info:
        await open_streams([FakeStream([tok("a", "x")])], {})
    assert info.value.kind is ErrorKind.INTERNAL


# -- usage -----------------------------------------------------------------------------
def make_choice(i: int, prompt: int, completion: int, cached: int = 0) -> Choice:
    return Choice(i, Accepted(f"r{i}", prompt), completion_tokens=completion, cached_tokens=cached)


@pytest.mark.parametrize(
    ("choices", "n", "expected"),
    [
        ([make_choice(0, 10, 5, 3)], 1, (10, 5, 15, 3)),
        # two prompts, one choice each
        ([make_choice(0, 10, 5), make_choice(1, 7, 2)], 1, (17, 7, 24, 0)),
        # one prompt, n=3: its tokens count once
        ([make_choice(i, 10, 4, 6) for i in range(3)], 3, (10, 12, 22, 6)),
        # two prompts, n=2, prompt-major order
        (
            [
                make_choice(0, 10, 1),
                make_choice(1, 10, 2),
                make_choice(2, 4, 3),
                make_choice(3, 4, 4),
            ],
            2,
            (14, 10, 24, 0),
        ),
    ],
)
def test_usage(choices: list[Choice], n: int, expected: tuple[int, int, int, int]) -> None:
    u = usage(choices, n)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens) == expected


# -- events ----------------------------------------------------------------------------
async def test_plain_text_events_then_the_end_then_usage() -> None:
    reply = await reply_of([choice_stream("a", ["Hel", "lo"])])
    events = await events_of(reply)
    assert events == [
        T.TextDelta(0, "Hel"),
        T.TextDelta(0, "lo"),
        T.ChoiceEnd(0, T.Finish.STOP, None, 2),
        T.UsageReport(5, 2, 0),
    ]
    assert reply.streams[0].closed  # type: ignore[attr-defined]


async def test_tool_calls_and_reasoning_are_parsed_with_the_spec() -> None:
    spec = ParseSpec(get_dialect("hermes"), split_reasoning=True)
    texts = [
        "<think>hmm</think>",
        "Sure.",
        '<tool_call>\n{"name": "f", ',
        '"arguments": {"x": 1}}\n</tool_call>',
    ]
    reply = await reply_of([choice_stream("a", texts)], spec)
    events = await events_of(reply)
    kinds = [type(ev).__name__ for ev in events]
    assert kinds == [
        "ReasoningDelta",
        "TextDelta",
        "ToolCallStart",
        "ToolCallArgs",
        "ToolCallEnd",
        "ChoiceEnd",
        "UsageReport",
    ]
    start, args, end = events[2], events[3], events[5]
    assert isinstance(start, T.ToolCallStart) and start.name == "f" and start.call == 0
    assert start.id.startswith("call_")
    assert isinstance(args, T.ToolCallArgs) and args.delta == '{"x":1}'
    assert isinstance(end, T.ChoiceEnd) and end.finish is T.Finish.TOOL_CALLS


async def test_without_a_dialect_tool_syntax_is_text() -> None:
    texts = ['<tool_call>{"name": "f", "arguments": {}}</tool_call>']
    reply = await reply_of([choice_stream("a", texts)], ParseSpec(None, split_reasoning=False))
    result = await reply.collect()
    assert result.choices[0].content == texts[0] and not result.choices[0].calls
    assert result.choices[0].finish is T.Finish.STOP


async def test_the_stop_string_and_length_reach_the_end_event() -> None:
    a = FakeStream([Accepted("a", 1), tok("a", "x", STOP, 1, stop_string="###")])
    b = FakeStream([Accepted("b", 1), tok("b", "y", LENGTH, 1)])
    events = await events_of(await reply_of([a, b]))
    ends = {ev.choice: ev for ev in events if isinstance(ev, T.ChoiceEnd)}
    assert (ends[0].finish, ends[0].stop_string) == (T.Finish.STOP, "###")
    assert (ends[1].finish, ends[1].stop_string) == (T.Finish.LENGTH, None)


async def test_a_tokens_logprobs_go_with_its_first_event() -> None:
    events_in: list[Event | BaseException] = [
        Accepted("r", 1),
        TokenEvent("r", "", 1, (lp("<"),)),  # held back text, logprob already known
        TokenEvent("r", "<b", 1, (lp("b"),), STOP, 2),
    ]
    events = await events_of(await reply_of([FakeStream(events_in)]))
    assert events[:2] == [T.TextDelta(0, "", (lp("<"),)), T.TextDelta(0, "<b", (lp("b"),))]


async def test_an_error_mid_reply_ends_it_without_usage() -> None:
    events_in: list[Event | BaseException] = [
        Accepted("r", 1),
        tok("r", "partial"),
        ErrorEvent("r", ErrorKind.ENGINE_DOWN, "the model worker exited (-11)"),
        tok("r", "never sent", STOP),
    ]
    reply = await reply_of([FakeStream(events_in)])
    events = await events_of(reply)
    assert events[0] == T.TextDelta(0, "partial")
    assert isinstance(events[-1], T.ReplyError)
    err = events[-1].error
    assert isinstance(err, EngineFailure) and err.kind is ErrorKind.ENGINE_DOWN
    assert not any(isinstance(ev, T.UsageReport) for ev in events)
    assert reply.streams[0].closed  # type: ignore[attr-defined]


async def test_prompt_logprobs_are_reported() -> None:
    prompt_lps = (lp("a", None), lp("b", -1.0))
    events_in: list[Event | BaseException] = [
        Accepted("r", 2, prompt_text="ab"),
        PromptLogprobs("r", prompt_lps),
        tok("r", "c", STOP, 1),
    ]
    reply = await reply_of([FakeStream(events_in)])
    events = await events_of(reply)
    assert events[0] == T.PromptScored(0, prompt_lps)
    assert reply.choices[0].prompt_logprobs == prompt_lps


# -- collect ---------------------------------------------------------------------------
async def test_collect_builds_the_choices() -> None:
    top = (TopLogprob("x", -0.1, (120,)),)
    events: list[Event | BaseException] = [
        Accepted("a", 2),
        TokenEvent("a", "He", 1, (lp("He", -0.2, top),), completion_tokens=1),
        TokenEvent("a", "llo", 1, (lp("llo"),), STOP, completion_tokens=2, cached_tokens=1),
    ]
    reply = await reply_of([FakeStream(events), choice_stream("b", ["Bye"])])
    result = await reply.collect()
    a, b = result.choices
    assert (a.text, a.content, a.finish, a.completion_tokens) == (
        "Hello",
        "Hello",
        T.Finish.STOP,
        2,
    )
    assert [x.token for x in a.logprobs] == ["He", "llo"]
    assert (b.text, b.finish) == ("Bye", T.Finish.STOP)
    assert result.usage == T.UsageReport(7, 3, 1)
    assert reply.choices[0].cached_tokens == 1


async def test_collect_raises_the_error() -> None:
    events: list[Event | BaseException] = [
        Accepted("a", 1),
        tok("a", "x"),
        ErrorEvent("a", ErrorKind.ENGINE_DOWN, "gone"),
    ]
    reply = await reply_of([FakeStream(events)])
    with pytest.raises(EngineFailure) as info:
        await reply.collect()
    assert info.value.kind is ErrorKind.ENGINE_DOWN and info.value.message == "gone"


async def test_collect_counts_the_prompt_once_with_n_choices() -> None:
    streams = [choice_stream(f"r{i}", t, 5) for i, t in enumerate([["a"], ["b", "c"], ["d"]])]
    result = await (await reply_of(streams, n_per_prompt=3)).collect()
    assert result.usage == T.UsageReport(5, 4, 0)


async def test_streamed_and_whole_replies_agree() -> None:
    spec = ParseSpec(get_dialect("hermes"), split_reasoning=True)
    texts = ["<thi", "nk>a</think>b", "<tool_", 'call>{"name": "g", "arguments": {}}</tool_call>']
    whole = await (await reply_of([choice_stream("a", texts)], spec)).collect()
    events = await events_of(await reply_of([choice_stream("a", texts)], spec))
    content = "".join(ev.text for ev in events if isinstance(ev, T.TextDelta))
    reasoning = "".join(ev.text for ev in events if isinstance(ev, T.ReasoningDelta))
    names = [ev.name for ev in events if isinstance(ev, T.ToolCallStart)]
    c = whole.choices[0]
    assert (c.content, c.reasoning, [x.name for x in c.calls]) == (content, reasoning, names)
    assert (content, reasoning, names) == ("b", "a", ["g"])
