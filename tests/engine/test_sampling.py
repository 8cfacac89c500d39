"""The sampler with a grammar, on SmolLM2's real vocabulary (49,152 tokens): the second pass
through the prefix index chooses what the whole-vocabulary pass chooses, and a lazy grammar
leaves the output free until its trigger."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from ggufd.engine.runner import Runner
from ggufd.engine.sampling import Sampler
from ggufd.engine.types import SamplingParams, WorkerConfig
from ggufd.grammar.json_schema import schema_to_gbnf
from ggufd.tools.base import ToolSpec
from ggufd.tools.detect import get_dialect

pytestmark = pytest.mark.model

PERSON = schema_to_gbnf(
    {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
)

WORDS = schema_to_gbnf(
    {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,8}$"}, "minItems": 4}
)


@pytest.fixture(scope="module")
def runner(smollm2_path: str) -> Iterator[Runner]:
    r = Runner(WorkerConfig(model_path=smollm2_path, n_ctx=256, n_threads=2, parallel=1))
    yield r
    r.close()


def run(s: Sampler, steps: list[np.ndarray], runner: Runner) -> list[int]:
    out = []
    for logits in steps:
        tok = s.choose(logits)
        out.append(tok)
        if runner.is_eog(tok):
            break
    return out


def noise(runner: Runner, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 3.0, runner.n_vocab).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.8, seed=5),  # top_k 40, top_p, min_p
        SamplingParams(temperature=0.0, repeat_penalty=1.3, logit_bias=((90, 9.0),)),
        SamplingParams(temperature=1.0, top_k=10, frequency_penalty=0.4, seed=9),
        SamplingParams(temperature=0.8, top_k=0, seed=2),  # top_p over every allowed token
    ],
)
@pytest.mark.parametrize("grammar", [PERSON, WORDS])
def test_each_second_pass_chooses_what_the_whole_vocabulary_chooses(
    runner: Runner, params: SamplingParams, grammar: str
) -> None:
    """The same logits through four samplers: the most likely tokens first then the index
    (as served), each alone, and the whole vocabulary."""
    steps = noise(runner, 60, seed=1)
    n = runner.n_vocab
    made = {
        "served": Sampler(params, 3, n, grammar, runner.vocab, lexicon=runner),
        "subset": Sampler(params, 3, n, grammar, runner.vocab),
        "index": Sampler(params, 3, n, grammar, runner.vocab, lexicon=runner, subset=0),
        "full": Sampler(params, 3, n, grammar, runner.vocab, subset=0),
    }
    try:
        outs = {name: run(s, steps, runner) for name, s in made.items()}
        assert outs["served"] == outs["subset"] == outs["index"] == outs["full"]
        passes = {name: s.passes for name, s in made.items()}
        assert passes["full"]["full"] > 0 and passes["full"]["index"] == 0
        assert passes["index"]["index"] > 0 and passes["index"]["full"] == 0
        assert passes["served"]["full"] == 0
        assert passes["index"]["subset"] == passes["full"]["subset"] == 0
        if params.top_k or params.temperature <= 0:
            assert passes["subset"]["subset"] > 0
    finally:
        for s in made.values():
            s.close()


def scripted(runner: Runner, text: str, then: list[np.ndarray]) -> list[np.ndarray]:
    """Logits that make greedy sampling write `text`, followed by `then`."""
    steps = []
    for tok in runner.tokenize(text, False, True):
        logits = np.zeros(runner.n_vocab, dtype=np.float32)
        logits[tok] = 50.0
        steps.append(logits)
    return steps + then


def text_of(runner: Runner, toks: list[int]) -> str:
    return b"".join(runner.token_bytes(t) for t in toks if not runner.is_eog(t)).decode()


WEATHER = ToolSpec(
    "get_weather",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}},
        "required": ["city"],
    },
)


def test_a_lazy_grammar_constrains_only_from_its_trigger(runner: Runner) -> None:
    hermes = get_dialect("hermes")
    grammar = hermes.call_grammar([WEATHER], False)
    lead = "Let me look that up. "  # free text the call grammar would reject
    steps = scripted(runner, lead + "<tool_call>", noise(runner, 150, seed=3))
    s = Sampler(
        SamplingParams(temperature=0.0),
        1,
        runner.n_vocab,
        grammar,
        runner.vocab,
        triggers=hermes.grammar_triggers(),
        lexicon=runner,
    )
    try:
        out = run(s, steps, runner)
        text = text_of(runner, out)
        assert text.startswith(lead + "<tool_call>")
        assert runner.is_eog(out[-1]), "the grammar did not end the call"
        parsed = hermes.parse(text)
        assert [c.name for c in parsed.calls] == ["get_weather"]
        assert parsed.content.strip() == lead.strip()
    finally:
        s.close()


def test_text_that_never_writes_the_trigger_is_free(runner: Runner) -> None:
    words = "Sunny, 21 degrees; no <tool> here."
    s = Sampler(
        SamplingParams(temperature=0.0),
        1,
        runner.n_vocab,
        get_dialect("hermes").call_grammar([WEATHER], False),
        runner.vocab,
        triggers=("<tool_call>",),
        lexicon=runner,
    )
    try:
        assert text_of(runner, run(s, scripted(runner, words, []), runner)) == words
        assert s.constrained is False and not any(s.passes.values())
    finally:
        s.close()


def test_a_trigger_the_model_wrote_past_the_grammar_leaves_the_output_free(
    runner: Runner,
) -> None:
    """The trigger "cal" completes inside the token " call", whose tail "call" the grammar
    (which wants "cal" then "x") rejects: the output stays free instead of aborting."""
    words = "I will call you back."
    assert " call" in [runner.token_text(t) for t in runner.tokenize(words, False, False)]
    s = Sampler(
        SamplingParams(temperature=0.0),
        1,
        runner.n_vocab,
        'root ::= "cal" "x"',
        runner.vocab,
        triggers=("cal",),
        lexicon=runner,
    )
    try:
        assert text_of(runner, run(s, scripted(runner, words, []), runner)) == words
        assert s.constrained is False
    finally:
        s.close()


def test_a_trigger_inside_a_token_replays_from_its_first_byte(runner: Runner) -> None:
    """ " call" holds the trigger "call" after a space: the grammar gets "call" only."""
    s = Sampler(
        SamplingParams(temperature=0.0),
        1,
        runner.n_vocab,
        'root ::= "call" [0-9]+',
        runner.vocab,
        triggers=("call",),
        lexicon=runner,
    )
    try:
        out = run(s, scripted(runner, "I will call", noise(runner, 12, seed=4)), runner)
        text = text_of(runner, out)
        assert s.constrained
        assert text.startswith("I will call")
        assert text[len("I will call") :].isdigit()
    finally:
        s.close()
