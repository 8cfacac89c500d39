"""Anthropic request bodies (api/anthropic/protocol.py): validated, then a core ChatRequest."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from ggufd.api.anthropic.protocol import CountTokensRequest, MessagesRequest
from ggufd.engine.types import SamplingParams
from ggufd.serving import types as T

USER = {"role": "user", "content": "hi"}
BASE: dict[str, Any] = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [USER]}
SCHEMA = {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}
READ = {"name": "Read", "description": "Read a file", "input_schema": SCHEMA}
BILLING = "x-anthropic-billing-header: cc_version=2.1.37.a1b; cc_entrypoint=cli; cch=9f3e1;"


def core(**fields: Any) -> T.ChatRequest:
    return MessagesRequest.model_validate(BASE | fields).to_core()


def refused(**fields: Any) -> str:
    """The validation error's text for a body with these fields."""
    with pytest.raises(ValidationError) as info:
        MessagesRequest.model_validate(BASE | fields)
    return str(info.value)


# -- the basics --------------------------------------------------------------------------
def test_a_minimal_request() -> None:
    req = core()
    assert req.model == "claude-sonnet-4-5"
    assert req.messages == (T.Message("user", "hi"),)
    assert req.generation.max_tokens == 64 and req.generation.stop == ()
    assert req.generation.sampling == SamplingParams()
    assert req.tools == () and req.tool_choice == T.ToolChoice()
    assert req.parallel_tool_calls is None and req.stream is False and req.reasoning is None


def test_max_tokens_is_required() -> None:
    body = {"model": "m", "messages": [USER]}
    with pytest.raises(ValidationError) as info:
        MessagesRequest.model_validate(body)
    (error,) = info.value.errors()
    assert error["loc"] == ("max_tokens",) and error["type"] == "missing"
    assert "max_tokens" in refused(max_tokens=0)  # at least 1


def test_count_tokens_needs_no_max_tokens() -> None:
    req = CountTokensRequest.model_validate({"model": "m", "messages": [USER]})
    assert req.to_core().messages == (T.Message("user", "hi"),)


def test_messages_may_not_be_empty() -> None:
    assert "messages" in refused(messages=[])


# -- system --------------------------------------------------------------------------------
def test_system_as_a_string() -> None:
    assert core(system="Be terse.").messages[0] == T.Message("system", "Be terse.")


def test_system_as_blocks_with_cache_control() -> None:
    blocks = [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
    ]
    req = core(system=blocks)
    assert req.messages[0] == T.Message("system", "You are Claude Code.\n\nBe terse.")
    assert req.messages[1] == T.Message("user", "hi")


def test_the_billing_header_block_is_dropped() -> None:
    first = core(system=[{"type": "text", "text": BILLING}, {"type": "text", "text": "Be terse."}])
    other = BILLING.replace("cch=9f3e1", "cch=0c77d")
    second = core(system=[{"type": "text", "text": other}, {"type": "text", "text": "Be terse."}])
    assert first.messages == second.messages  # the nonce does not reach the prompt
    assert first.messages[0] == T.Message("system", "Be terse.")


def test_a_system_of_only_the_billing_header_is_no_system() -> None:
    assert core(system=[{"type": "text", "text": BILLING}]).messages == (T.Message("user", "hi"),)


def test_a_billing_header_line_joined_into_a_string_keeps_the_rest() -> None:
    req = core(system=f"{BILLING}\nYou are Claude Code.\nBe terse.")
    assert req.messages[0] == T.Message("system", "You are Claude Code.\nBe terse.")


def test_a_billing_header_later_in_the_system_prompt_stays() -> None:
    text = f"Quote this: {BILLING}"
    assert core(system=text).messages[0].content == text


def test_a_system_role_inside_messages() -> None:
    messages = [USER, {"role": "system", "content": "Be terse."}]
    assert core(messages=messages).messages == (
        T.Message("user", "hi"),
        T.Message("system", "Be terse."),
    )
    blocks = [USER, {"role": "system", "content": [{"type": "text", "text": "Be terse."}]}]
    assert core(messages=blocks).messages[1] == T.Message("system", "Be terse.")


def test_unknown_roles_are_refused() -> None:
    assert "messages.0.role" in refused(messages=[{"role": "tool", "content": "x"}])


# -- message content ---------------------------------------------------------------------
def test_text_blocks_are_joined() -> None:
    content = [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two", "cache_control": {"type": "ephemeral"}},
    ]
    assert core(messages=[{"role": "user", "content": content}]).messages == (
        T.Message("user", "one\ntwo"),
    )


def test_a_tool_round_trip_from_earlier_turns() -> None:
    messages = [
        USER,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should read it.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "b3BhcXVl"},
                {"type": "text", "text": "Reading."},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"path": "a"}},
                {"type": "tool_use", "id": "toolu_02", "name": "Read", "input": {"path": "b"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "A"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": [{"type": "text", "text": "no such file"}],
                    "is_error": True,
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "Go on."},
            ],
        },
    ]
    req = core(messages=messages, tools=[READ])
    assert req.messages == (
        T.Message("user", "hi"),
        T.Message(
            "assistant",
            "Reading.",
            tool_calls=(
                T.ToolCall("Read", '{"path": "a"}', "toolu_01"),
                T.ToolCall("Read", '{"path": "b"}', "toolu_02"),
            ),
            reasoning="I should read it.",
        ),
        T.Message("tool", "A", tool_call_id="toolu_01"),
        T.Message("tool", "Error: no such file", tool_call_id="toolu_02"),
        T.Message("user", "Go on."),
    )


def test_an_assistant_turn_of_only_tool_use_has_no_content() -> None:
    turn = {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read"}]}
    (msg,) = core(messages=[USER, turn]).messages[1:]
    assert msg.content is None and msg.tool_calls == (T.ToolCall("Read", "{}", "t"),)


def test_tool_result_contents() -> None:
    def result(**block: Any) -> T.Message:
        content = [{"type": "tool_result", "tool_use_id": "t"} | block]
        return core(messages=[{"role": "user", "content": content}]).messages[0]

    assert result().content == ""
    assert result(content="plain").content == "plain"
    assert result(content="bad", is_error=True).content == "Error: bad"
    blocks = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert result(content=blocks, is_error=False).content == "a\nb"
    assert result(content=[]).content == ""


@pytest.mark.parametrize(
    ("block", "needs"),
    [
        ({"type": "text"}, "a text block needs text"),
        ({"type": "tool_use", "id": "t"}, "a tool_use block needs an id and a name"),
        ({"type": "tool_result"}, "a tool_result block needs a tool_use_id"),
        ({"type": "hologram"}, "content blocks of type 'hologram' are not supported"),
    ],
)
def test_malformed_blocks_are_refused(block: dict[str, Any], needs: str) -> None:
    assert needs in refused(messages=[{"role": "user", "content": [block]}])


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
DOCUMENT = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}


@pytest.mark.parametrize(
    "content",
    [
        [IMAGE],
        [{"type": "text", "text": "look"}, DOCUMENT],
        [{"type": "tool_result", "tool_use_id": "t", "content": [IMAGE]}],  # nested
    ],
)
def test_images_and_documents_are_refused_as_text_only(content: list[Any]) -> None:
    with pytest.raises(ValidationError) as info:
        MessagesRequest.model_validate(BASE | {"messages": [{"role": "user", "content": content}]})
    (error,) = info.value.errors()
    assert error["loc"] == ("messages", 0, "content")
    assert "this model reads text only" in error["msg"]


# -- tools and tool choice ---------------------------------------------------------------
def test_tools_with_input_schema_and_server_tools_skipped(caplog: pytest.LogCaptureFixture) -> None:
    tools = [
        READ | {"cache_control": {"type": "ephemeral"}},
        {"type": "custom", "name": "Grep", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "bash_20250124", "name": "bash"},
    ]
    with caplog.at_level("INFO", logger="ggufd.api"):
        req = core(tools=tools)
    assert req.tools == (
        T.ToolSpec("Read", "Read a file", SCHEMA),
        T.ToolSpec("Grep", None, {"type": "object"}),
    )
    assert "web_search" in caplog.text and "bash" in caplog.text
    assert req.offered_tools() == req.tools and req.forced_tools() is None


@pytest.mark.parametrize(
    ("choice", "mode", "name", "parallel"),
    [
        ({"type": "auto"}, T.ToolChoiceMode.AUTO, None, None),
        ({"type": "any"}, T.ToolChoiceMode.REQUIRED, None, None),
        ({"type": "tool", "name": "Read"}, T.ToolChoiceMode.NAMED, "Read", None),
        ({"type": "none"}, T.ToolChoiceMode.NONE, None, None),
        ({"type": "auto", "disable_parallel_tool_use": True}, T.ToolChoiceMode.AUTO, None, False),
        (
            {"type": "any", "disable_parallel_tool_use": False},
            T.ToolChoiceMode.REQUIRED,
            None,
            True,
        ),
    ],
)
def test_tool_choice(
    choice: dict[str, Any], mode: T.ToolChoiceMode, name: str | None, parallel: bool | None
) -> None:
    req = core(tools=[READ], tool_choice=choice)
    assert req.tool_choice == T.ToolChoice(mode, name)
    assert req.parallel_tool_calls is parallel


def test_tool_choice_none_offers_no_tools_and_any_forces_one() -> None:
    assert core(tools=[READ], tool_choice={"type": "none"}).offered_tools() == ()
    assert core(tools=[READ], tool_choice={"type": "any"}).forced_tools() == (
        T.ToolSpec("Read", "Read a file", SCHEMA),
    )
    named = core(tools=[READ], tool_choice={"type": "tool", "name": "Read"})
    assert [t.name for t in named.forced_tools() or ()] == ["Read"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"tools": [READ], "tool_choice": {"type": "tool"}}, "needs a name"),
        ({"tools": [READ], "tool_choice": {"type": "tool", "name": "Edit"}}, "not in tools"),
        ({"tool_choice": {"type": "any"}}, "needs tools"),
        ({"tools": [READ, READ]}, "tool names must be unique"),
        ({"tools": [READ], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"tools": [{"name": "", "input_schema": {}}]}, "tools.0.name"),
    ],
)
def test_bad_tools_are_refused(fields: dict[str, Any], says: str) -> None:
    assert says in refused(**fields)


# -- generation ----------------------------------------------------------------------------
def test_stop_sequences_and_sampling() -> None:
    req = core(stop_sequences=["END", "\n\nHuman:"], temperature=0, top_p=0.5, top_k=7)
    assert req.generation.stop == ("END", "\n\nHuman:")
    sampling = req.generation.sampling
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.0, 0.5, 7)
    assert sampling.min_p == SamplingParams().min_p  # what Anthropic has no field for


@pytest.mark.parametrize(
    "fields",
    [{"temperature": 1.5}, {"temperature": -0.1}, {"top_p": 0}, {"top_k": -1}],
)
def test_sampling_out_of_range_is_refused(fields: dict[str, Any]) -> None:
    assert next(iter(fields)) in refused(**fields)


def test_too_many_stop_sequences_are_refused() -> None:
    assert "at most 16 stop sequences" in refused(stop_sequences=[str(i) for i in range(17)])


def test_stream_and_metadata() -> None:
    assert core(stream=True, metadata={"user_id": "user_abc_session_1"}).stream is True


@pytest.mark.parametrize(
    ("thinking", "reasoning"),
    [
        ({"type": "enabled", "budget_tokens": 2048}, True),
        ({"type": "adaptive"}, True),
        ({"type": "disabled"}, None),
        (None, None),
    ],
)
def test_thinking_maps_to_reasoning(
    thinking: dict[str, Any] | None, reasoning: bool | None
) -> None:
    assert core(thinking=thinking).reasoning is reasoning


def test_what_claude_code_sends_is_accepted() -> None:
    """The fields of a `claude -p` request (see ../shared/AGENT-CLIENTS.md), extras included."""
    body = BASE | {
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": BILLING},
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            {"role": "system", "content": "Reminder."},
        ],
        "tools": [READ],
        "stream": True,
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": "user_x_account__session_y"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "medium"},
    }
    req = MessagesRequest.model_validate(body).to_core()
    assert [m.role for m in req.messages] == ["system", "user", "system"]
    assert req.messages[0].content == "You are Claude Code."
    assert req.stream and req.reasoning is True and req.generation.max_tokens == 32000
    json.dumps(body)  # (a plain JSON body, as sent)
