"""An agent-like conversation: a ~2,000-token history with tools, then more turns.

The history is what a coding agent resends on every turn: a system prompt with five tool
JSON schemas, then a task worked through with tool calls and tool results. The tools are
written into the system prompt (Hermes style: `<tool_call>` in the assistant's text, the
results as `<tool_response>` messages) rather than passed as the request's `tools`, so
every server sees the same prompt text whatever its own tool rendering is.

Each further turn appends the reply the server just gave and a new user message, and
records the time to the first token: with a prompt cache, only the new tail is computed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

TOOLS: list[dict[str, Any]] = [
    {
        "name": "read_file",
        "description": "Read a text file of the repository. Returns the content with line "
        "numbers; long files are cut at max_lines.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Path relative to the repository"},
                "start_line": {"type": "integer", "minimum": 1, "default": 1},
                "max_lines": {"type": "integer", "minimum": 1, "default": 200},
            },
            "required": ["path"],
        },
    },
    {
        "name": "write_file",
        "description": "Replace one exact snippet of a file with new text. Fails when the "
        "snippet is not found exactly once.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old_text": {"type": "string", "description": "Exact text to replace"},
                "new_text": {"type": "string", "description": "Replacement text"},
            },
            "required": ["path", "old_text", "new_text"],
        },
    },
    {
        "name": "run_command",
        "description": "Run a shell command in the repository root and return its exit "
        "status, stdout and stderr (each cut at 4,000 characters).",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string"},
                "timeout_s": {"type": "integer", "minimum": 1, "maximum": 600, "default": 120},
            },
            "required": ["command"],
        },
    },
    {
        "name": "search_code",
        "description": "Search the repository for a regular expression; returns matching "
        "lines as path:line: text.",
        "parameters": {
            "type": "object",
            "properties": {
                "pattern": {"type": "string"},
                "glob": {"type": "string", "description": "Only files matching, e.g. *.py"},
            },
            "required": ["pattern"],
        },
    },
    {
        "name": "list_directory",
        "description": "List the files and folders under a path, one level deep unless "
        "depth says otherwise.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "default": "."},
                "depth": {"type": "integer", "minimum": 1, "maximum": 4, "default": 1},
            },
            "required": [],
        },
    },
]

SYSTEM = """You are Tern, a careful coding assistant working inside the user's repository.
You can read and change files and run commands through the tools below. Work in small
steps: look before you change anything, explain what you found in one or two sentences,
then act. Keep the user's style. Never invent file contents: read them first. When tests fail,
fix the cause, not the test, unless the test itself is wrong.

To call a tool, answer with one or more blocks of the form
<tool_call>{"name": "<tool name>", "arguments": {<arguments as JSON>}}</tool_call>
and nothing after them. The results come back in <tool_response> blocks.

Available tools (JSON schema):
"""

INVOICE_PY = """from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal


@dataclass
class Line:
    sku: str
    quantity: int
    unit_price: Decimal
    discount: Decimal = Decimal("0")  # a fraction: 0.1 is 10 %


@dataclass
class Invoice:
    customer: str
    lines: list[Line] = field(default_factory=list)
    vat_rate: Decimal = Decimal("0.20")

    def add(self, sku: str, quantity: int, unit_price: str, discount: str = "0") -> None:
        self.lines.append(Line(sku, quantity, Decimal(unit_price), Decimal(discount)))

    def subtotal(self) -> Decimal:
        total = Decimal("0")
        for line in self.lines:
            total += line.quantity * line.unit_price * (1 - line.discount)
        return total

    def vat(self) -> Decimal:
        return (self.subtotal() * self.vat_rate).quantize(Decimal("0.01"))

    def total(self) -> Decimal:
        return self.subtotal() + self.vat()
"""

TEST_OUTPUT = """......F.....F.                                                          [100%]
=== FAILURES ===
___ test_total_with_discount ___

    def test_total_with_discount():
        inv = Invoice("ACME")
        inv.add("PEN-01", 3, "1.99", discount="0.15")
        inv.add("PAD-A4", 1, "4.35")
>       assert inv.total() == Decimal("11.31")
E       AssertionError: assert Decimal('11.3082') == Decimal('11.31')

tests/test_invoice.py:58: AssertionError
___ test_csv_totals ___

>       assert rows[1].endswith(";12.60;2.52;15.12")
E       AssertionError: assert False
E        +  where False = '2026-03-01;ACME;12.6000;2.52;15.1200'.endswith(...)

tests/test_export.py:31: AssertionError
FAILED tests/test_invoice.py::test_total_with_discount - AssertionError
FAILED tests/test_export.py::test_csv_totals - AssertionError
2 failed, 12 passed in 0.41s
"""

EXPORT_GREP = """billing/export.py:12:    for inv in invoices:
billing/export.py:13:        sub, vat, tot = inv.subtotal(), inv.vat(), inv.total()
billing/export.py:14:        writer.writerow([inv.date.isoformat(), inv.customer, sub, vat, tot])
tests/test_invoice.py:58:    assert inv.total() == Decimal("11.31")
tests/test_export.py:31:    assert rows[1].endswith(";12.60;2.52;15.12")
"""


def _call(name: str, **arguments: Any) -> str:
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def _result(payload: Any) -> str:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"<tool_response>\n{text}\n</tool_response>"


def history(nonce: str = "") -> list[dict[str, str]]:
    """The ~2,000-token history; a nonce (first line) makes it unlike any cached prompt."""
    tools = "\n".join(json.dumps(t) for t in TOOLS)
    head = f"Session {nonce}.\n" if nonce else ""
    return [
        {"role": "system", "content": head + SYSTEM + tools},
        {
            "role": "user",
            "content": "Two tests started failing after I added discounts to invoice lines "
            "yesterday. Can you find out why and fix it? The package is in billing/.",
        },
        {
            "role": "assistant",
            "content": "I'll start by running the test suite to see the failures.\n"
            + _call("run_command", command="python -m pytest -q tests", timeout_s=120),
        },
        {"role": "user", "content": _result({"exit_status": 1, "stdout": TEST_OUTPUT})},
        {
            "role": "assistant",
            "content": "Both failures are about rounding: the total keeps four decimals "
            "(11.3082) where the tests expect cents. Let me read the invoice model.\n"
            + _call("read_file", path="billing/invoice.py"),
        },
        {"role": "user", "content": _result(INVOICE_PY)},
        {
            "role": "assistant",
            "content": "`vat()` is rounded to cents but `subtotal()` is not, so a discounted "
            "line leaves extra decimals in the subtotal and the total. Let me check who "
            "else relies on these values before changing them.\n"
            + _call("search_code", pattern=r"\.(subtotal|total|vat)\(\)", glob="*.py"),
        },
        {"role": "user", "content": _result(EXPORT_GREP)},
        {
            "role": "assistant",
            "content": "The CSV export writes the raw Decimals, which is why it shows "
            "12.6000. Rounding each line to cents (half up, as invoices do) fixes both.\n"
            + _call(
                "write_file",
                path="billing/invoice.py",
                old_text="            total += line.quantity * line.unit_price * "
                "(1 - line.discount)",
                new_text="            amount = line.quantity * line.unit_price * "
                "(1 - line.discount)\n            total += amount.quantize(Decimal"
                '("0.01"), rounding=ROUND_HALF_UP)',
            ),
        },
        {"role": "user", "content": _result({"ok": True, "replacements": 1})},
        {
            "role": "assistant",
            "content": "Now the tests again.\n"
            + _call("run_command", command="python -m pytest -q tests", timeout_s=120),
        },
        {
            "role": "user",
            "content": _result({"exit_status": 0, "stdout": "14 passed in 0.38s", "stderr": ""}),
        },
        {
            "role": "assistant",
            "content": "All 14 tests pass. The cause: discounted lines produced amounts "
            "with more than two decimals and `subtotal()` summed them unrounded; each line "
            "is now rounded to cents with ROUND_HALF_UP before summing, which also fixes the "
            "CSV export.",
        },
    ]


FOLLOW_UPS = [
    "Thanks. Could you also make the CSV export always write two decimals?",
    "What happens with a discount of exactly 1, is that handled?",
    "Please add a test for a 100 % discount line.",
    "Is ROUND_HALF_UP what accountants use in Germany too, or should it be configurable?",
    "Summarize the changes in one commit message, please.",
]


@dataclass
class TurnResult:
    turn: int
    ttft: float | None
    seconds: float
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    reply: str = ""
    error: str | None = None
    retried: bool = False


async def _turn(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], turn: int, retry: bool = True
) -> TurnResult:
    res = TurnResult(turn, None, 0.0)
    parts: list[str] = []
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread())[:300]!r}"
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                usage = chunk.get("usage")
                if usage:
                    res.prompt_tokens = usage.get("prompt_tokens")
                    res.completion_tokens = usage.get("completion_tokens")
                    details = usage.get("prompt_tokens_details") or {}
                    res.cached_tokens = details.get("cached_tokens")
                for ch in chunk.get("choices", []):
                    delta = ch.get("delta") or {}
                    text = delta.get("content")
                    if (text or ch.get("finish_reason")) and res.ttft is None:
                        res.ttft = time.perf_counter() - t0
                    if text:
                        parts.append(text)
    except httpx.RemoteProtocolError as e:
        # The server closed the kept-alive connection before it answered (llama-server
        # does, now and then): the request was not served, so send it once more.
        if retry and res.ttft is None:
            again = await _turn(client, url, body, turn, retry=False)
            again.retried = True
            return again
        res.error = repr(e)
    except httpx.HTTPError as e:
        res.error = repr(e)
    res.seconds = time.perf_counter() - t0
    res.reply = "".join(parts)
    return res


async def run_agent(
    base_url: str,
    turns: int,
    max_tokens: int,
    nonce_each_turn: bool = False,
    extra: dict[str, Any] | None = None,
) -> list[TurnResult]:
    """Turn 0 sends the history; turns 1..`turns` each add the reply and a follow-up.

    `nonce_each_turn` gives every turn a new first line, so no server can reuse a cached
    prefix (the cold run of a server that has no switch to turn its cache off).
    """
    url = f"{base_url}/v1/chat/completions"
    messages = history()
    results: list[TurnResult] = []
    async with httpx.AsyncClient(timeout=600) as client:
        for turn in range(turns + 1):
            if turn > 0:
                messages.append({"role": "assistant", "content": results[-1].reply})
                messages.append(
                    {"role": "user", "content": FOLLOW_UPS[(turn - 1) % len(FOLLOW_UPS)]}
                )
            sent = messages
            if nonce_each_turn:
                sent = [*history(nonce=f"{time.time_ns():x}")[:1], *messages[1:]]
            body: dict[str, Any] = {
                "model": "local",
                "messages": sent,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "seed": 1234,
                "stream": True,
                "stream_options": {"include_usage": True},
                **(extra or {}),
            }
            results.append(await _turn(client, url, body, turn))
    return results
