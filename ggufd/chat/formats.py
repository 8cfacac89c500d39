"""Built-in chat formats: Jinja sources for models whose GGUF carries no usable template.

Each entry of :data:`FORMATS` is a Jinja chat template (rendered by
:class:`ggufd.chat.template.ChatTemplate`) written from the format's documented prompt
shape. Messages reach these templates normalized (see
:func:`ggufd.chat.template.normalize_messages`): roles are strings and ``content`` is a
string or ``None`` (rendered as empty). Every template uses ``{%- ... -%}`` tags so the
layout of the source below never leaks whitespace into the prompt; all literal prompt text
is inside ``{{ '...' }}`` expressions.

Role handling per format:

- ``chatml``: every role (``tool`` included) is its own ``<|im_start|>{role}`` turn; an
  assistant's ``tool_calls`` are rendered Hermes-style as ``<tool_call>{json}</tool_call>``.
- ``llama-3``: ``tool`` results are rendered with Llama 3.1's ``ipython`` role.
- ``llama-2``, ``mistral-instruct``, ``gemma``: there is no system turn, so system text is
  prepended to the next user turn; ``tool`` results (and other roles) are user turns. The
  ``llama-2`` and ``mistral-instruct`` user turn already ends in ``[/INST]``, so their
  generation prompt is empty.
- ``phi-3``: ``system``/``user``/``assistant`` turns; ``tool`` results are user turns.

The ``tools`` variable is not rendered by the built-in formats.
"""

from __future__ import annotations

__all__ = ["ALIASES", "FORMATS", "canonical_name", "format_names"]

_CHATML = r"""
{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') -}}
    {%- if message['role'] == 'assistant' and message['tool_calls'] -%}
        {%- for call in message['tool_calls'] -%}
            {%- if message['content'] or not loop.first -%}{{- '\n' -}}{%- endif -%}
            {{- '<tool_call>\n' -}}
            {{- {'name': call['function']['name'],
                 'arguments': call['function']['arguments']} | tojson -}}
            {{- '\n</tool_call>' -}}
        {%- endfor -%}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
"""

_LLAMA_2 = r"""
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
    {%- set content = (message['content'] or '') | trim -%}
    {%- if message['role'] == 'system' -%}
        {%- set ns.system = (ns.system + '\n\n' if ns.system else '') + content -%}
    {%- elif message['role'] == 'assistant' -%}
        {{- (' ' + content if content else '') + ' ' + eos_token -}}
    {%- else -%}
        {%- if ns.system -%}
            {%- set content = '<<SYS>>\n' + ns.system + '\n<</SYS>>\n\n' + content -%}
            {%- set ns.system = '' -%}
        {%- endif -%}
        {{- bos_token + '[INST] ' + content + ' [/INST]' -}}
    {%- endif -%}
{%- endfor -%}
{%- if ns.system -%}
    {{- bos_token + '[INST] <<SYS>>\n' + ns.system + '\n<</SYS>>\n\n [/INST]' -}}
{%- endif -%}
"""

_LLAMA_3 = r"""
{{- bos_token -}}
{%- for message in messages -%}
    {%- set role = 'ipython' if message['role'] == 'tool' else message['role'] -%}
    {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' -}}
    {{- (message['content'] or '') | trim -}}
    {{- '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
"""

_MISTRAL_INSTRUCT = r"""
{{- bos_token -}}
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
    {%- set content = message['content'] or '' -%}
    {%- if message['role'] == 'system' -%}
        {%- set ns.system = (ns.system + '\n\n' if ns.system else '') + content -%}
    {%- elif message['role'] == 'assistant' -%}
        {{- content + eos_token -}}
    {%- else -%}
        {%- if ns.system -%}
            {%- set content = ns.system + '\n\n' + content -%}
            {%- set ns.system = '' -%}
        {%- endif -%}
        {{- '[INST] ' + content + ' [/INST]' -}}
    {%- endif -%}
{%- endfor -%}
{%- if ns.system -%}
    {{- '[INST] ' + ns.system + ' [/INST]' -}}
{%- endif -%}
"""

_GEMMA = r"""
{{- bos_token -}}
{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
    {%- set content = (message['content'] or '') | trim -%}
    {%- if message['role'] == 'system' -%}
        {%- set ns.system = (ns.system + '\n\n' if ns.system else '') + content -%}
    {%- elif message['role'] == 'assistant' -%}
        {{- '<start_of_turn>model\n' + content + '<end_of_turn>\n' -}}
    {%- else -%}
        {%- if ns.system -%}
            {%- set content = ns.system + '\n\n' + content -%}
            {%- set ns.system = '' -%}
        {%- endif -%}
        {{- '<start_of_turn>user\n' + content + '<end_of_turn>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if ns.system -%}
    {{- '<start_of_turn>user\n' + ns.system + '<end_of_turn>\n' -}}
{%- endif -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""

_PHI_3 = r"""
{%- for message in messages -%}
    {%- set role = message['role'] -%}
    {%- if role not in ('system', 'user', 'assistant') -%}
        {%- set role = 'user' -%}
    {%- endif -%}
    {{- '<|' + role + '|>\n' + (message['content'] or '') + '<|end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|assistant|>\n' -}}
{%- endif -%}
"""

#: Canonical format name -> Jinja template source.
FORMATS: dict[str, str] = {
    "chatml": _CHATML,
    "gemma": _GEMMA,
    "llama-2": _LLAMA_2,
    "llama-3": _LLAMA_3,
    "mistral-instruct": _MISTRAL_INSTRUCT,
    "phi-3": _PHI_3,
}

# Text that ends an assistant turn in each format. A model whose vocabulary has these
# as special end-of-generation tokens stops by itself; one that does not (a base model
# given a fallback format) would write them out, so they are also stop strings.
STOPS: dict[str, tuple[str, ...]] = {
    "chatml": ("<|im_end|>", "<|im_start|>"),
    "llama-2": ("</s>", "[INST]"),
    "llama-3": ("<|eot_id|>", "<|start_header_id|>"),
    "mistral-instruct": ("</s>", "[INST]"),
    "gemma": ("<end_of_turn>", "<start_of_turn>"),
    "phi-3": ("<|end|>", "<|user|>", "<|endoftext|>"),
}

#: Alternative name -> canonical name in :data:`FORMATS`.
ALIASES: dict[str, str] = {
    "llama2": "llama-2",
    "llama3": "llama-3",
    "mistral": "mistral-instruct",
    "phi3": "phi-3",
    "qwen": "chatml",
}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def canonical_name(name: str) -> str | None:
    """The :data:`FORMATS` key ``name`` refers to (case-insensitive, ``_`` == ``-``), or None."""
    key = _key(name)
    if key in FORMATS:
        return key
    return ALIASES.get(key)


def format_names() -> list[str]:
    """Every accepted format name (canonical names and aliases), sorted."""
    return sorted({*FORMATS, *ALIASES})
