"""Tools for chat templates that know nothing of tools: the generic system-prompt format.

A template that never reads the `tools` variable would drop the tools silently. For such
templates the tools are described in the system message instead, and the conversation's
tool traffic is rewritten into plain turns the template can render:

- the tool list and the calling convention go at the end of the system message (one is
  added when the conversation has none);
- an assistant turn's `tool_calls` become `<tool_call>{"name": ..., "arguments": ...}</tool_call>`
  lines in its content;
- a `tool` message becomes a user turn holding `<tool_response>...</tool_response>`
  (results in a row share one turn, for templates that insist on alternating roles).

The model is asked to answer in the same `<tool_call>` form, which the Hermes parser reads.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

_USES_TOOLS = re.compile(r"\btools\b")

INSTRUCTIONS = (
    "You can call functions. The functions available are listed below as JSON schemas.\n"
    "To call a function, answer with one line per call, in exactly this form:\n"
    '<tool_call>{"name": "<function name>", "arguments": <arguments as a JSON object>}'
    "</tool_call>\n"
    "Function results come back inside <tool_response></tool_response>. If no function "
    "is needed, answer normally.\n\nFunctions:\n"
)


def template_reads_tools(source: str) -> bool:
    """Whether a Jinja chat template uses the `tools` variable at all."""
    return bool(_USES_TOOLS.search(source))


def _call_text(call: dict[str, Any]) -> str:
    fn = call.get("function") or {}
    args = fn.get("arguments", {})
    if isinstance(args, str):
        with contextlib.suppress(ValueError):  # (else keep the text as the model wrote it)
            args = json.loads(args) if args.strip() else {}
    body = json.dumps({"name": fn.get("name", ""), "arguments": args}, ensure_ascii=False)
    return f"<tool_call>{body}</tool_call>"


def tool_system_text(tools: list[dict[str, Any]]) -> str:
    lines = [json.dumps(t.get("function", t), ensure_ascii=False) for t in tools]
    return INSTRUCTIONS + "\n".join(lines)


def with_generic_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages rewritten for a template without tool support (see the module doc)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            calls = "\n".join(_call_text(c) for c in m["tool_calls"])
            text = m.get("content") or ""
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
        elif role in ("tool", "function"):
            text = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
            if out and out[-1].get("role") == "user":  # several results: one user turn
                out[-1] = out[-1] | {"content": f"{out[-1].get('content') or ''}\n{text}"}
            else:
                out.append({"role": "user", "content": text})
        else:
            out.append({k: v for k, v in m.items() if k != "tool_calls"})
    if tools:
        text = tool_system_text(tools)
        if out and out[0].get("role") in ("system", "developer"):
            first = out[0]
            out[0] = first | {"content": f"{first.get('content') or ''}\n\n{text}".lstrip()}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out
