"""Reasoning split: `<think>...</think>` in a reply -> reasoning text and answer text.

Models such as Qwen3 and the DeepSeek-R1 distills think before they answer. Their
thinking goes to `reasoning_content`, the rest to `content`. A template whose generation
prompt already opens `<think>` makes the reply start inside the thinking; `ThinkSplitter`
is told so by `starts_inside`. Streaming holds back text that may be the start of a tag.
"""

from __future__ import annotations

from dataclasses import dataclass

from ggufd.text import partial_marker_len

OPEN = "<think>"
CLOSE = "</think>"


@dataclass(frozen=True)
class Split:
    reasoning: str = ""
    content: str = ""


def prompt_opens_thinking(prompt: str) -> bool:
    """True when a rendered prompt ends inside an open `<think>` block."""
    tail = prompt.rstrip()
    return tail.endswith(OPEN)


class ThinkSplitter:
    """Feeds reply text in pieces; gives back what is known to be reasoning or content."""

    def __init__(self, starts_inside: bool = False) -> None:
        # "start": nothing seen yet (a leading <think> may come); "think"; "answer".
        self._state = "think" if starts_inside else "start"
        self._held = ""
        self._skip_newlines = False  # right after a tag: its newlines belong to the tag

    def feed(self, text: str) -> Split:
        self._held += text
        reasoning, content = [], []
        while self._held:
            if self._skip_newlines:
                self._held = self._held.lstrip("\n")
                if not self._held:
                    break
                self._skip_newlines = False
            if self._state == "start":
                stripped = self._held.lstrip()
                if stripped.startswith(OPEN):
                    self._held = stripped[len(OPEN) :]
                    self._state, self._skip_newlines = "think", True
                    continue
                if OPEN.startswith(stripped):  # maybe the tag, not complete yet
                    break
                self._state = "answer"
                continue
            if self._state == "think":
                at = self._held.find(CLOSE)
                if at >= 0:
                    reasoning.append(self._held[:at])
                    self._held = self._held[at + len(CLOSE) :]
                    self._state, self._skip_newlines = "answer", True
                    continue
                keep = partial_marker_len(self._held, (CLOSE,))
                reasoning.append(self._held[: len(self._held) - keep])
                self._held = self._held[len(self._held) - keep :]
                break
            content.append(self._held)
            self._held = ""
        return Split("".join(reasoning), "".join(content))

    def finish(self) -> Split:
        """End of reply: whatever is held is released (unfinished thinking stays reasoning)."""
        held, self._held = self._held, ""
        if self._state == "think":
            return Split(reasoning=held)
        return Split(content=held)
