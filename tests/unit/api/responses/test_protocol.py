"""Responses wire types: input items, tools and options -> the core's ChatRequest."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from pydantic import ValidationError

from ggufd.api.errors import ParamError
from ggufd.api.limits import MAX_MESSAGES, MAX_TOOLS
from ggufd.api.responses.protocol import ResponsesRequest, convert_items
from ggufd.engine.types import SamplingParams
from ggufd.serving import types as T
from ggufd.tools.base import ToolGrammar
from tests.support.grammar import APPLY_PATCH

Mode = T.ToolChoiceMode
PATCH_TOOL: dict[str, Any] = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch",
    "format": {"type": "grammar", "syntax": "lark", "definition": APPLY_PATCH},
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def request(**kw: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate({"input": "hi"} | kw)


def core(**kw: Any) -> T.ChatRequest:
    return request(**kw).to_core()


def param_error(body: dict[str, Any]) -> tuple[str | None, str]:
    """(the param the request's first error names, its message)."""
    with pytest.raises(ValidationError) as info:
        ResponsesRequest.model_validate(body)
    err = info.value.errors()[0]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ParamError):
        return cause.param, str(cause)
    return ".".join(str(p) for p in err["loc"]), str(err["msg"])


# -- input -----------------------------------------------------------------------------
def test_input_as_a_string_is_one_user_turn() -> None:
    req = core(model="gpt-5")
    assert req.model == "gpt-5"
    assert req.messages == (T.Message("user", "hi"),)


def test_instructions_are_the_system_turn_first() -> None:
    req = core(instructions="Be brief.")
    assert req.messages == (T.Message("system", "Be brief."), T.Message("user", "hi"))


def test_message_items_of_every_role_and_part_type() -> None:
    items = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "D"}]},
        {"type": "message", "role": "system", "content": "S"},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}, {"type": "text", "text": "b"}],
        },
        {"role": "assistant", "content": [{"type": "output_text", "text": "A", "annotations": []}]},
        {"role": "user", "content": "again"},  # the "easy" form: no type
    ]
    assert core(input=items).messages == (
        T.Message("developer", "D"),
        T.Message("system", "S"),
        T.Message("user", "ab"),
        T.Message("assistant", "A"),
        T.Message("user", "again"),
    )


def test_output_items_sent_back_as_input_are_accepted() -> None:
    """What a client resends from an earlier response: ids, status, annotations, logprobs."""
    items = [
        {"role": "user", "content": "hi"},
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "sum"}],
            "content": [{"type": "reasoning_text", "text": "think"}],
            "encrypted_content": None,
        },
        {
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "ok", "annotations": [], "logprobs": []}],
        },
    ]
    assert core(input=items).messages[1] == T.Message("assistant", "ok", reasoning="sum\nthink")


def test_function_calls_and_outputs() -> None:
    items = [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"a":1}'},
        {"type": "function_call", "call_id": "c2", "name": "f", "namespace": "ns"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "x"}, {"type": "input_text", "text": "y"}],
        },
    ]
    assert core(input=items).messages[1:] == (
        T.Message(
            "assistant",
            None,
            tool_calls=(
                T.ToolCall("get_weather", '{"a":1}', "c1"),
                T.ToolCall("ns.f", "{}", "c2"),  # a namespace function, qualified
            ),
        ),
        T.Message("tool", "sunny", tool_call_id="c1"),
        T.Message("tool", "xy", tool_call_id="c2"),
    )


def test_custom_tool_calls_carry_their_text_as_the_input_argument() -> None:
    patch = '*** Begin Patch\n*** Delete File: "a"\n*** End Patch\n'
    items = [
        {"type": "custom_tool_call", "call_id": "c1", "name": "apply_patch", "input": patch},
        {"type": "custom_tool_call_output", "call_id": "c1", "output": "Done!"},
    ]
    call, output = core(input=items).messages
    (tc,) = call.tool_calls
    assert (tc.name, tc.id) == ("apply_patch", "c1")
    assert isinstance(tc.arguments, str) and json.loads(tc.arguments) == {"input": patch}
    assert output == T.Message("tool", "Done!", tool_call_id="c1")


def test_an_assistant_message_and_the_calls_after_it_are_one_turn() -> None:
    items = [
        {"role": "user", "content": "u"},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r"}]},
        {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "g", "input": "x"},
        {"type": "function_call_output", "call_id": "c1", "output": "1"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "2"},
        {"type": "function_call", "call_id": "c3", "name": "f", "arguments": "{}"},
    ]
    messages = convert_items(request(input=items).input)  # type: ignore[arg-type]
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    turn = messages[1]
    assert (turn.content, turn.reasoning) == ("Let me look.", "r")
    assert [c.id for c in turn.tool_calls] == ["c1", "c2"]
    assert [c.id for c in messages[4].tool_calls] == ["c3"]


def test_a_reasoning_item_starts_a_new_turn_for_the_call_after_it() -> None:
    items = [
        {"type": "function_call", "call_id": "c1", "name": "f"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "again"}]},
        {"type": "function_call", "call_id": "c2", "name": "f"},
    ]
    first, second = core(input=items).messages
    assert [c.id for c in first.tool_calls] == ["c1"] and first.reasoning is None
    assert [c.id for c in second.tool_calls] == ["c2"] and second.reasoning == "again"


@pytest.mark.parametrize("part", ["input_image", "input_file", "input_audio"])
def test_parts_a_text_model_cannot_read_are_refused_naming_the_part(part: str) -> None:
    body = {"input": [{"role": "user", "content": [{"type": part, "image_url": "data:,"}]}]}
    param, msg = param_error(body)
    assert param == "input[0].content[0]"
    assert "reads text only" in msg and part in msg


def test_an_image_in_a_tool_output_is_refused_too() -> None:
    output = [{"type": "input_image", "image_url": "data:,"}]
    body = {"input": [{"type": "function_call_output", "call_id": "c", "output": output}]}
    param, msg = param_error(body)
    assert param == "input[0].output[0]" and "reads text only" in msg


@pytest.mark.parametrize(
    ("item", "param", "words"),
    [
        ({"type": "item_reference", "id": "x"}, "input[0]", "item_reference"),
        ({"type": "message", "content": "x"}, "input[0]", "needs a role"),
        ({"role": "tool", "content": "x"}, "input[0].role", "user"),
        ({"type": "function_call", "name": "f"}, "input[0]", "call_id"),
        ({"type": "function_call_output", "output": "x"}, "input[0]", "call_id"),
        ({"role": "user", "content": [{"type": "input_text"}]}, "input[0].content[0]", "text"),
        ({"role": "user", "content": [{"type": "video"}]}, "input[0].content[0]", "video"),
    ],
)
def test_bad_items_name_the_item_and_the_rule(item: dict[str, Any], param: str, words: str) -> None:
    got, msg = param_error({"input": [{"role": "user", "content": "ok"}, item]})
    assert got == param.replace("input[0]", "input[1]")
    assert words in msg


def test_input_bounds() -> None:
    assert param_error({"input": ""})[0] == "input"
    assert core(input="", previous_response_id="resp_1").messages == ()
    many = [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)
    assert "at most" in param_error({"input": many})[1]


# -- tools -----------------------------------------------------------------------------
def test_function_tools_keep_parameters_and_strict() -> None:
    (spec,) = core(tools=[WEATHER]).tools
    assert spec == T.ToolSpec(
        "get_weather", "Weather in a city", WEATHER["parameters"], True, free_form=False
    )


def test_custom_tools_are_free_form_with_their_grammar() -> None:
    tools = [
        PATCH_TOOL,
        {"type": "custom", "name": "note"},
        {"type": "custom", "name": "plain", "format": {"type": "text"}},
        {
            "type": "custom",
            "name": "sum",
            "format": {"type": "grammar", "syntax": "regex", "definition": r"\d+"},
        },
    ]
    req = core(tools=tools)
    patch, note, plain, total = req.tools
    assert all(s.free_form for s in req.tools)
    assert patch.grammar == ToolGrammar("lark", APPLY_PATCH)
    assert note.grammar is None and plain.grammar is None
    assert total.grammar == ToolGrammar("regex", r"\d+")
    # shown to the model as a function of one text input, the grammar in its description
    assert patch.parameters is not None
    assert patch.parameters["required"] == ["input"]
    assert patch.parameters["properties"]["input"]["type"] == "string"
    assert "*** Begin Patch" in patch.parameters["properties"]["input"]["description"]
    assert request(tools=tools).custom_tools() == {"apply_patch", "note", "plain", "sum"}


def test_a_grammar_outside_the_subset_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    tool = {
        "type": "custom",
        "name": "odd",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: %declare X\n"},
    }
    with caplog.at_level(logging.WARNING, "ggufd.api"):
        spec = core(tools=[tool]).tools[0]
        core(tools=[tool])
    assert spec.free_form and spec.grammar is not None  # (the tools layer falls back)
    lines = [r.getMessage() for r in caplog.records if "odd" in r.getMessage()]
    assert len(lines) == 1 and "any text" in lines[0]


def test_namespace_tools_offer_their_functions_qualified() -> None:
    ns = {
        "type": "namespace",
        "name": "files",
        "description": "File tools",
        "tools": [
            {"type": "function", "name": "read", "parameters": {"type": "object"}},
            {"type": "custom", "name": "write"},
            {"type": "web_search"},
        ],
    }
    req = request(tools=[WEATHER, ns])
    assert [s.name for s in req.to_core().tools] == ["get_weather", "files.read", "files.write"]
    assert req.namespaced() == {
        "files.read": ("files", "read"),
        "files.write": ("files", "write"),
    }
    assert req.custom_tools() == {"files.write"}


def test_tools_ggufd_cannot_run_are_left_out_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tools = [
        {"type": "web_search"},
        {"type": "image_generation"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "mcp", "server_label": "x"},
        WEATHER,
    ]
    with caplog.at_level(logging.INFO, "ggufd.api"):
        req = core(tools=tools)
    assert [s.name for s in req.tools] == ["get_weather"]
    (line,) = [r.getMessage() for r in caplog.records if "cannot run" in r.getMessage()]
    for kind in ("web_search", "image_generation", "file_search", "mcp"):
        assert kind in line


def test_tool_rules() -> None:
    dup = [WEATHER, WEATHER | {"description": "again"}]
    assert param_error({"input": "x", "tools": dup})[0] == "tools"
    assert "at most" in param_error({"input": "x", "tools": [WEATHER] * (MAX_TOOLS + 1)})[1]


# -- tool_choice and parallel_tool_calls -------------------------------------------------
@pytest.mark.parametrize(
    ("choice", "mode", "name"),
    [
        (None, Mode.AUTO, None),
        ("auto", Mode.AUTO, None),
        ("none", Mode.NONE, None),
        ("required", Mode.REQUIRED, None),
        ({"type": "function", "name": "get_weather"}, Mode.NAMED, "get_weather"),
        ({"type": "custom", "name": "apply_patch"}, Mode.NAMED, "apply_patch"),
        ({"type": "allowed_tools", "mode": "auto", "tools": []}, Mode.AUTO, None),
        ({"type": "allowed_tools", "mode": "required", "tools": []}, Mode.REQUIRED, None),
    ],
)
def test_tool_choice(choice: Any, mode: T.ToolChoiceMode, name: str | None) -> None:
    body: dict[str, Any] = {"tools": [WEATHER, PATCH_TOOL]}
    if choice is not None:
        body["tool_choice"] = choice
    assert core(**body).tool_choice == T.ToolChoice(mode, name)


def test_tool_choice_none_offers_no_tools() -> None:
    assert core(tools=[WEATHER], tool_choice="none").offered_tools() == ()


def test_a_forced_custom_tool_is_the_one_forced() -> None:
    req = core(tools=[WEATHER, PATCH_TOOL], tool_choice={"type": "custom", "name": "apply_patch"})
    forced = req.forced_tools()
    assert forced is not None and [t.name for t in forced] == ["apply_patch"]
    assert forced[0].grammar == ToolGrammar("lark", APPLY_PATCH)


def test_allowed_tools_narrow_what_is_offered() -> None:
    choice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "custom", "name": "apply_patch"}],
    }
    req = core(tools=[WEATHER, PATCH_TOOL], tool_choice=choice)
    assert [t.name for t in req.tools] == ["apply_patch"]
    assert req.tool_choice.mode is Mode.REQUIRED


def test_a_named_tool_choice_must_name_an_offered_tool() -> None:
    body = {"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}
    param, msg = param_error(body)
    assert param == "tool_choice" and "nope" in msg


@pytest.mark.parametrize("parallel", [None, True, False])
def test_parallel_tool_calls_pass_through(parallel: bool | None) -> None:
    assert core(parallel_tool_calls=parallel).parallel_tool_calls is parallel


# -- generation options ------------------------------------------------------------------
def test_sampling_and_limits() -> None:
    default = SamplingParams()
    plain = core()
    assert plain.generation.max_tokens is None
    assert plain.generation.sampling.temperature == default.temperature
    assert plain.generation.sampling.top_p == default.top_p
    req = core(max_output_tokens=16, temperature=0, top_p=0.5)
    assert req.generation.max_tokens == 16
    assert (req.generation.sampling.temperature, req.generation.sampling.top_p) == (0, 0.5)


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_output_tokens", 0), ("temperature", 2.5), ("top_p", 0), ("top_p", 1.5)],
)
def test_out_of_range_options_are_refused(field: str, value: Any) -> None:
    assert param_error({"input": "x", field: value})[0] == field


def test_text_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "out", "schema": schema, "strict": True}
    assert core(text={"format": fmt}).response_format == T.JsonFormat(schema)
    assert core(text={"format": {"type": "json_object"}}).response_format == T.JsonFormat(None)
    assert core(text={"format": {"type": "text"}}).response_format is None
    assert core(text={}).response_format is None
    assert param_error({"input": "x", "text": {"format": {"type": "json_schema"}}})[0] == (
        "text.format"
    )
    grammar = {"type": "grammar", "syntax": "regex", "definition": "a"}
    assert param_error({"input": "x", "text": {"format": grammar}})[0] == "text.format"


def test_reasoning_stream_cache_key_and_accepted_fields() -> None:
    plain = core()
    assert (plain.reasoning, plain.stream, plain.cache_key) == (None, False, None)
    req = core(
        reasoning={"effort": "medium", "summary": "auto"},
        stream=True,
        store=False,
        prompt_cache_key="conv-7",
        metadata={"k": "v"},
        include=["reasoning.encrypted_content"],
        client_metadata={"x": "y"},  # Codex sends it; accepted, unused
    )
    assert (req.reasoning, req.stream, req.cache_key) == (True, True, "conv-7")


def test_history_goes_between_instructions_and_input() -> None:
    history = (T.Message("user", "before"), T.Message("assistant", "ok"))
    req = request(instructions="sys", input="now").to_core(history)
    assert [m.content for m in req.messages] == ["sys", "before", "ok", "now"]


def test_the_core_shows_any_free_form_tool_as_taking_one_text_input() -> None:
    shown = T.tool_template(T.ToolSpec("apply_patch", free_form=True))
    assert shown["function"]["parameters"]["required"] == ["input"]
