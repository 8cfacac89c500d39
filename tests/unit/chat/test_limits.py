"""Malicious chat templates: no escape from the sandbox, bounded time, bounded size.

A GGUF's chat template is untrusted. Each hostile template here must fail with a
ChatTemplateError (TemplateLimitError for limits) quickly and without a large allocation;
ordinary templates (loops with ``loop.*``, macros, filters) must render as before.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ggufd.chat import ChatTemplate, ChatTemplateError
from ggufd.chat.limits import MAX_RENDER_SECONDS, TemplateLimitError, weight

BIG = "{% set big = 'x' * 10000000 %}"  # 10 M characters: under the 16 M limit by itself
MB = 1024  # ru_maxrss is in KiB


def render(source: str, **kwargs: Any) -> str:
    return ChatTemplate(source=source, name="gguf", **kwargs).render(
        [{"role": "user", "content": "hi"}]
    )


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture
def bounded() -> Iterator[None]:
    """The test's render must end within 5 s and grow the process by less than 1 GiB.

    The address space is capped meanwhile (2 GiB over the current size), so a regression
    fails with a MemoryError here instead of taking the machine's memory.
    """
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    old = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + 2 * 1024**3, old[1]))
    start = time.monotonic()
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, old)
    assert time.monotonic() - start < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 1024 * MB


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% for a in 'x' * 100000 %}{% for b in 'y' * 100000 %}{{ '' }}{% endfor %}{% endfor %}",
        "{% for i in range(100000) recursive %}{% if loop.depth < 5 %}"
        "{{ loop(range(100000)) }}{% endif %}{% endfor %}",
        "{% macro m(n) %}{% for i in range(100000) %}{{ caller() if n }}{% endfor %}{% endmacro %}"
        "{% for i in range(100000) %}{% call m(0) %}{% endcall %}{% endfor %}",
        "{% for i in range(100000) %}{% for j in range(100000) if j is odd %}"
        "{% continue %}{% endfor %}{% endfor %}",
        "{% for i in range(100000) %}{% set x = range(100000)|list|sort|length %}{% endfor %}",
    ],
)
@pytest.mark.usefixtures("bounded")
def test_long_running_templates_stop_at_the_deadline(source: str) -> None:
    start = time.monotonic()
    with pytest.raises(TemplateLimitError, match=r"longer than 0\.3 s"):
        render(source, max_seconds=0.3)
    assert time.monotonic() - start < 2.0


def test_default_deadline() -> None:
    assert ChatTemplate(source="x", name="gguf").max_seconds == MAX_RENDER_SECONDS == 2.0


def test_one_deadline_covers_the_retry_with_empty_content() -> None:
    # The first try fails on null content; the retry must not get a fresh budget.
    source = (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        "{{ messages[0]['content'] + '' }}"
    )
    template = ChatTemplate(source=source, name="gguf", max_seconds=0.3)
    start = time.monotonic()
    with pytest.raises(TemplateLimitError):
        template.render([{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}])
    assert time.monotonic() - start < 1.5


# --------------------------------------------------------------------------- size


@pytest.mark.parametrize(
    "source",
    [
        # Output collected by macros and blocks counts, not only what reaches the prompt.
        "{% macro twice(s) %}{{ s }}{{ s }}{% endmacro %}{% set ns = namespace(s='x') %}"
        "{% for i in range(64) %}{% set ns.s = twice(ns.s) %}{% endfor %}{{ ns.s|length }}",
        "{% set s %}{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}{% endset %}"
        "{{ s|length }}",
        # ~ concatenation
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        BIG + "{{ (big ~ big ~ big)|length }}",
        # nested repetition: each step is small, the text would be billions of characters
        "{{ [[['x'] * 1000] * 1000] * 100 }}",
        "{{ [[[0] * 1000] * 1000] * 100 ~ '' }}",
        "{{ ([[['x'] * 1000] * 1000] * 100)|tojson }}",
        "{{ ([[['x'] * 1000] * 1000] * 100)|string }}",
        "{{ ([[['x'] * 1000] * 1000] * 100)|pprint }}",
        "{{ ([['x' * 1000] * 1000] * 100)|map('join')|join }}",
        # printf-style and str.format widths and repeated arguments
        "{{ '%999999999d' % 1 }}",
        "{{ '%*d' % (999999999, 1) }}",
        "{{ '%.999999999f' % 1.5 }}",
        BIG + "{{ '%s%s%s' % (big, big, big) }}",
        BIG + "{{ '%(a)s%(a)s%(a)s' % {'a': big} }}",
        "{{ '%999999999d'|format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        BIG + "{{ '{0}{0}{0}'.format(big) }}",
        BIG + "{{ '{a}{a}{a}'.format_map({'a': big}) }}",
        # string methods that grow their input
        BIG + "{{ big.replace('x', 'xx') }}",
        "{{ ('x' * 1000).replace('', 'y' * 100000) }}",
        "{{ 'x'.center(999999999) }}",
        "{{ 'x'.ljust(999999999) }}",
        "{{ 'x'.rjust(999999999) }}",
        "{{ '1'.zfill(999999999) }}",
        "{{ ('\t' * 1000000).expandtabs(100) }}",
        "{{ ('y' * 100000).join(['z'] * 1000) }}",
        "{{ ('x' * 1000000).translate({120: 'y' * 100}) }}",
        "{{ 'x'.encode().center(999999999) }}",
        "{{ (1).to_bytes(999999999, 'big') }}",
        # filters that grow their input
        "{{ 'x'|center(999999999) }}",
        "{{ ('a\n' * 1000000)|indent(100) }}",
        "{{ ('a\n' * 1000000)|indent('-' * 100) }}",
        BIG + "{{ big|replace('x', 'xx') }}",
        "{{ (['y' * 1000000] * 100)|join }}",
        "{{ (['y'] * 1000)|join('z' * 100000) }}",
        "{{ ('x' * 1000000)|wordwrap(1, wrapstring='y' * 100) }}",
        "{{ [1]|batch(999999999, 0)|list }}",
        "{{ [1]|slice(999999999)|list }}",
        "{{ ([['x' * 1000000]] * 100)|sum(start=[]) }}",
        "{{ {'a': 1}|tojson(indent=1000) }}",
        # integer arithmetic
        "{{ 2 ** 100000 }}",
        "{{ (10 ** 1000) ** 1000 }}",
    ],
)
@pytest.mark.usefixtures("bounded")
def test_values_over_the_size_limits_are_refused_before_they_are_built(source: str) -> None:
    with pytest.raises(TemplateLimitError, match=r"size limit|too much output|too large|limited"):
        render(source)


def test_output_budget_counts_buffers() -> None:
    source = "{% set s %}{% for i in range(1000) %}0123456789{% endfor %}{% endset %}{{ s|length }}"
    assert render(source, max_output_chars=100_000) == "10000"
    with pytest.raises(TemplateLimitError, match="too much output"):
        render(source, max_output_chars=1000)  # the budget is 4x the output limit


def test_limit_errors_are_chat_template_errors() -> None:
    assert issubclass(TemplateLimitError, ChatTemplateError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc", 3),
        (["ab", "c"], 2 + (2 + 2) + (2 + 1)),
        ({"k": "vv"}, 2 + (2 + 1) + (2 + 2)),
        ([7], 2 + 2 + 8),
    ],
)
def test_weight(value: Any, expected: int) -> None:
    assert weight(value) == expected


def test_weight_counts_shared_items_each_time() -> None:
    inner = ["x"] * 1000
    assert weight([inner] * 1000) == 2 + 1000 * (2 + weight(inner))
    with pytest.raises(TemplateLimitError):
        weight([[inner] * 1000] * 1000)


def test_weight_of_deep_nesting_does_not_overflow_the_stack() -> None:
    value: Any = "x"
    for _ in range(100_000):
        value = [value]
    assert weight(value) == 1 + 4 * 100_000


# --------------------------------------------------------------------------- sandbox


@pytest.mark.parametrize(
    "source",
    [
        "{{ self.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ joiner.__init__.__globals__['os'] }}",
        "{{ strftime_now.__globals__['datetime'] }}",
        "{{ dict.mro()[-1].__subclasses__() }}",
        "{{ messages|attr('__class__') }}",
        "{{ ''|attr('__class__')|attr('__base__') }}",
        "{{ (messages|map(attribute='__class__'))|list }}",
        "{{ '{0.__class__.__base__}'.format(messages) }}",
        "{{ '{f.__globals__}'.format_map({'f': raise_exception}) }}",
        "{{ messages.pop() }}",
        "{{ (tools or {}).clear() }}",
        "{{ loop.__class__ }}{% for x in [1] %}{{ loop.__class__ }}{% endfor %}",
        "{{ range.__self__.open('/etc/passwd').read() }}",
    ],
)
def test_sandbox_escapes_are_refused(source: str) -> None:
    with pytest.raises(ChatTemplateError) as info:
        render(source)
    assert any(w in str(info.value) for w in ("unsafe", "undefined", "has no attribute"))


@pytest.mark.parametrize(
    "source",
    [
        "{% include 'secrets.txt' %}",
        "{% import 'os' as os %}{{ os.system('true') }}",
        "{% extends '/etc/passwd' %}",
        "{{ lipsum(999999999) }}",
        "{{ strftime_now('%999999999Y') }}",
        "{{ '{:{w}}'.format(1, w=5) }}",
    ],
)
def test_loading_files_and_unbounded_helpers_are_refused(source: str) -> None:
    with pytest.raises(ChatTemplateError):
        render(source)


# --------------------------------------------------------------------------- still works


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "{% for x in 'abc' %}{{ loop.index }}/{{ loop.length }}{{ '!' if loop.last }}"
            "{{ loop.revindex0 }}{{ loop.cycle('a', 'b') }} {% endfor %}",
            "1/32a 2/31b 3/3!0a ",
        ),
        ("{% for x in range(10) if x is odd %}{{ x }}{% else %}none{% endfor %}", "13579"),
        ("{% for x in [] %}{{ x }}{% else %}none{% endfor %}", "none"),
        ("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}", "a=1;b=2;"),
        (
            "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
            "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}",
            "013",
        ),
        (
            "{% for n in [[1, [2]], [3]] recursive %}{% if n is iterable %}({{ loop(n) }})"
            "{% else %}{{ n }}{% endif %}{% endfor %}",
            "(1(2))(3)",
        ),
        (
            "{% macro m(x) %}<{{ x }}{{ caller() }}>{% endmacro %}{% call m(1) %}c{% endcall %}",
            "<1c>",
        ),
        ("{{ 'a' ~ 1 ~ none ~ [2] }}", "a1None[2]"),
        ("{{ '%s-%05.1f|%(x)s' % ('a', 2.25, ) if false else '%-3s|' % 'a' }}", "a  |"),
        ("{{ '{:>4}|{x}'.format(1, x='y') }}{{ '{a}'.format_map({'a': 2}) }}", "   1|y2"),
        ("{{ 'a-b'.replace('-', '--') }}{{ 'ab'|center(6) }}{{ 'x'.zfill(3) }}", "a--b  ab  00x"),
        ("{{ ['a', 'b']|join(', ') }}|{{ ('l1\nl2')|indent(2, true) }}", "a, b|  l1\n  l2"),
        (
            "{{ [1, 2]|sum }}{{ [[1], [2]]|sum(start=[]) }}{{ [1, 2, 3]|batch(2)|list }}",
            "3[1, 2][[1, 2], [3]]",
        ),
        ("{% set s %}{{ 'x' }}{% endset %}{{ s }}{% filter upper %}u{% endfilter %}", "xU"),
        ("{% autoescape true %}{{ 'a' ~ '<' }}{{ '>' }}{% endautoescape %}", "a&lt;&gt;"),
        ("{{ undefined_thing }}|{{ undefined_thing|default('d') }}", "|d"),
        (
            "{{ {'a': [1, {'b': 'é'}]}|tojson(indent=2) }}",
            '{\n  "a": [\n    1,\n    {\n      "b": "é"\n    }\n  ]\n}',
        ),
    ],
)
def test_ordinary_templates_render_as_before(source: str, expected: str) -> None:
    assert render(source) == expected
