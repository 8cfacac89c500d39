"""Serving: the one flow behind every wire protocol.

An API adapter converts its body to a :class:`~ggufd.serving.types.ChatRequest` (or a
text or embeddings request) and calls :meth:`Serving.chat`. The core takes it from there:
it admits the request on its model (the pool's queue bound, loading on demand), renders
the prompt with the model's chat template, builds the grammar a forced tool call or a
structured-output format needs, submits one engine request per choice, waits until the
engine has accepted them, and fills the request record. What it returns, a
:class:`~ggufd.serving.reply.Reply`, runs the reply parser and yields the reply events the
adapter writes as JSON or as its stream format. Errors are domain errors (ggufd/errors.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ggufd.chat.reasoning import prompt_opens_thinking
from ggufd.engine.protocol import EngineError
from ggufd.engine.types import (
    EmbedRequest,
    ErrorEvent,
    GenerateRequest,
    RequestPart,
    SamplingParams,
    SlotState,
)
from ggufd.errors import InvalidRequest, ModelUnavailable, Origin
from ggufd.grammar.json_schema import SchemaError, json_value_gbnf, schema_to_gbnf
from ggufd.pool import ModelPool, Release
from ggufd.serving.infill import (
    CHUNK_SEPARATOR,
    CURRENT_FILE,
    REPO_NAME,
    InfillParts,
    infill_tokens,
)
from ggufd.serving.model import ModelService
from ggufd.serving.record import RequestRecord
from ggufd.serving.reply import Origins, ParseSpec, Reply, failure, open_streams
from ggufd.serving.types import (
    ChatRequest,
    EmbedInputs,
    Generation,
    InfillRequest,
    JsonFormat,
    TextRequest,
    tool_template,
)
from ggufd.tools.base import Dialect

AtEnd = Callable[[Release], None]  # registers a callback run once the HTTP response ended

CHAT_ORIGINS: Origins = {
    RequestPart.PROMPT: Origin.MESSAGES,
    RequestPart.GRAMMAR: Origin.GRAMMAR,
    RequestPart.LOGIT_BIAS: Origin.LOGIT_BIAS,
}
TEXT_ORIGINS: Origins = {
    RequestPart.PROMPT: Origin.PROMPT,
    RequestPart.GRAMMAR: Origin.GRAMMAR,
    RequestPart.LOGIT_BIAS: Origin.LOGIT_BIAS,
}
EMBED_ORIGINS: Origins = {RequestPart.INPUT: Origin.INPUT}


@dataclass(frozen=True)
class Embeddings:
    model: str
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int
    token_vectors: tuple[tuple[tuple[float, ...], ...], ...] = ()  # per_token requests


@dataclass(frozen=True)
class Tokens:
    model: str
    ids: tuple[int, ...]
    pieces: tuple[bytes, ...]


@dataclass(frozen=True)
class Constraint:
    """The grammar a reply must match, the request part it comes from, and its triggers
    (with triggers it is lazy: it applies from the first one the reply writes)."""

    gbnf: str
    origin: Origin
    triggers: tuple[str, ...] = ()


def chat_grammar(req: ChatRequest, dialect: Dialect) -> Constraint | None:
    """What a chat reply must match: a forced call, a format, a raw grammar; or, with
    tools the model may call (tool_choice auto), a lazy grammar for its calls."""
    forced = req.forced_tools()
    if forced:
        try:
            gbnf = dialect.call_grammar(forced, req.parallel_tool_calls is True)
        except SchemaError as e:
            msg = f"the forced tool call cannot be constrained: {e}"
            raise InvalidRequest(msg, Origin.TOOLS) from e
        return Constraint(gbnf, Origin.TOOLS)
    if req.response_format is not None:
        return Constraint(format_grammar(req.response_format), Origin.FORMAT)
    if req.grammar is not None:
        return Constraint(req.grammar, Origin.GRAMMAR)
    tools = req.offered_tools()
    triggers = dialect.grammar_triggers() if tools else ()
    if not triggers:
        return None
    try:
        gbnf = dialect.call_grammar(tools, req.parallel_tool_calls is not False)
    except SchemaError as e:  # the calls stay free; parsing them still works
        log.info("tool calls are not constrained: %s", e)
        return None
    return Constraint(gbnf, Origin.TOOLS, triggers)


def format_grammar(fmt: JsonFormat) -> str:
    """The GBNF of a JSON format: its schema's, or any JSON value's."""
    schema = fmt.schema
    if schema is None or schema is True or schema == {}:
        return json_value_gbnf()
    try:
        return schema_to_gbnf(schema if isinstance(schema, bool) else dict(schema))
    except SchemaError as e:
        msg = f"response_format's schema is not supported: {e}"
        raise InvalidRequest(msg, Origin.FORMAT) from e


def text_grammar(req: TextRequest | InfillRequest) -> Constraint | None:
    """What a text reply must match, or None."""
    if req.response_format is not None:
        return Constraint(format_grammar(req.response_format), Origin.FORMAT)
    if req.grammar is not None:
        return Constraint(req.grammar, Origin.GRAMMAR)
    return None


log = logging.getLogger("ggufd.serving")

T = TypeVar("T")


async def _engine_call(call: Awaitable[T]) -> T:
    """An engine query; an engine that is not running is an unavailable model."""
    try:
        return await call
    except EngineError as e:
        raise ModelUnavailable(str(e)) from e


def _pooling_mismatch(per_token: bool) -> str:
    if per_token:
        return (
            "this model is served with --pooling none (one vector per token): OpenAI's "
            "embeddings need one per input; use --pooling mean, or llama-server's /embedding"
        )
    return "one vector per token needs the model served with --pooling none"


def _with_default_stop(gen: Generation, model: ModelService) -> Generation:
    """The model's default stop strings (its settings) for a request that gives none."""
    if gen.stop or not model.default_stop:
        return gen
    return dataclasses.replace(gen, stop=model.default_stop)


def _seeded(sampling: SamplingParams, index: int) -> SamplingParams:
    """Choice `index`'s sampling: a given seed is offset, so the choices differ."""
    if sampling.seed is None or index == 0:
        return sampling
    return dataclasses.replace(sampling, seed=sampling.seed + index)


def _engine_request(
    rid: str,
    prompt: str | tuple[int, ...],
    gen: Generation,
    index: int,
    grammar: Constraint | None,
    **kw: Any,
) -> GenerateRequest:
    return GenerateRequest(
        id=rid,
        prompt=prompt,
        sampling=_seeded(gen.sampling, index),
        logprobs=gen.logprobs,
        ignore_eos=gen.ignore_eos,
        add_special=True,
        grammar=grammar.gbnf if grammar else None,
        grammar_triggers=grammar.triggers if grammar else (),
        **kw,
    )


class Serving:
    """The serving core of one app: requests in, replies out, over the app's model pool."""

    def __init__(self, pool: ModelPool) -> None:
        self.pool = pool

    async def chat(
        self, req: ChatRequest, rec: RequestRecord, at_end: AtEnd | None, id_prefix: str
    ) -> Reply:
        async with self.pool.use(req.model, at_end) as model:
            self._admitted(rec, model, req.stream, req.n)
            tools = req.offered_tools()
            prompt = self._prompt(model, req)
            grammar = chat_grammar(req, model.dialect)
            split = model.split_reasoning if req.reasoning is None else req.reasoning
            spec = ParseSpec(
                dialect=model.dialect if tools else None,
                split_reasoning=split,
                starts_inside=split and prompt_opens_thinking(prompt),
                forced_call=req.forced_tools() is not None,
            )
            gen = _with_default_stop(req.generation, model)
            template_stop = tuple(s for s in model.template.stop if s not in gen.stop)
            rid = model.engine.new_id(id_prefix)
            reqs = [
                _engine_request(
                    f"{rid}-{i}",
                    prompt,
                    gen,
                    i,
                    grammar,
                    max_tokens=model.token_cap(gen.max_tokens),
                    stop=gen.stop + template_stop,
                    parse_special=True,
                    cache_key=req.cache_key,
                )
                for i in range(req.n)
            ]
            origins = dict(CHAT_ORIGINS)
            if grammar is not None:
                origins[RequestPart.GRAMMAR] = grammar.origin
            return await self._open(model, rec, rid, prompt, reqs, spec, origins, req.n)

    async def count_tokens(self, req: ChatRequest, rec: RequestRecord) -> int:
        """How many tokens the request's prompt is, rendered as chat() would render it."""
        async with self.pool.use(req.model, None) as model:
            rec.model, rec.stream = model.model_id, False
            model.check_generates()
            prompt = self._prompt(model, req)
            rec.prompt = prompt
            tokens, _ = await _engine_call(model.engine.tokenize(prompt, True, True))
            return len(tokens)

    async def complete(
        self, req: TextRequest, rec: RequestRecord, at_end: AtEnd | None, id_prefix: str
    ) -> Reply:
        async with self.pool.use(req.model, at_end) as model:
            self._admitted(rec, model, req.stream, req.n)
            gen = _with_default_stop(req.generation, model)
            grammar = text_grammar(req)
            rid = model.engine.new_id(id_prefix)
            reqs = [
                _engine_request(
                    f"{rid}-{p}-{i}",
                    prompt,
                    gen,
                    i,
                    grammar,
                    max_tokens=model.token_cap(gen.max_tokens),
                    stop=gen.stop,
                    echo=req.echo,
                    parse_special=False,
                )
                for p, prompt in enumerate(req.prompts)
                for i in range(req.n)
            ]
            prompts = list(req.prompts)
            origins = dict(TEXT_ORIGINS)
            if grammar is not None:
                origins[RequestPart.GRAMMAR] = grammar.origin
            return await self._open(model, rec, rid, prompts, reqs, None, origins, req.n)

    async def embed(self, req: EmbedInputs, rec: RequestRecord, at_end: AtEnd | None) -> Embeddings:
        async with self.pool.use(req.model, at_end) as model:
            rec.model, rec.stream = model.model_id, None
            model.check_embeds()
            info = model.engine.info
            per_token = info is not None and info.pooling == "none"
            if req.per_token is not None and per_token != req.per_token:
                raise InvalidRequest(_pooling_mismatch(per_token), Origin.INPUT)
            er = EmbedRequest(model.engine.new_id("embd"), req.inputs)
            rec.request_id, rec.prompt = er.id, er.inputs
            try:
                result = await model.engine.embed(er)
            except EngineError as e:
                raise ModelUnavailable(str(e)) from e
        if isinstance(result, ErrorEvent):
            raise failure(result, EMBED_ORIGINS)
        rec.embed_tokens = result.prompt_tokens
        return Embeddings(
            model.model_id, result.embeddings, result.prompt_tokens, result.token_embeddings
        )

    async def tokenize(
        self, name: str | None, text: str, add_special: bool, parse_special: bool
    ) -> Tokens:
        async with self.pool.use(name, None) as model:
            ids, pieces = await _engine_call(
                model.engine.tokenize(text, add_special, parse_special)
            )
            return Tokens(model.model_id, ids, pieces)

    async def detokenize(self, name: str | None, ids: tuple[int, ...], special: bool) -> str:
        async with self.pool.use(name, None) as model:
            text = await _engine_call(model.engine.detokenize(ids, special))
        if text is None:
            raise InvalidRequest("a token id is outside the vocabulary", Origin.TOKENS)
        return text

    async def slots(self, name: str | None, with_text: bool) -> tuple[str, tuple[SlotState, ...]]:
        """The model's id and each of its sequence slots (their cached text, if asked)."""
        async with self.pool.use(name, None) as model:
            return model.model_id, await _engine_call(model.engine.slots(with_text))

    async def render(self, req: ChatRequest) -> str:
        """The prompt chat() would give the model for this request."""
        async with self.pool.use(req.model, None) as model:
            return self._prompt(model, req)

    async def infill(
        self, req: InfillRequest, rec: RequestRecord, at_end: AtEnd | None, id_prefix: str
    ) -> Reply:
        """Fill in the middle, with the model's own FIM tokens."""
        async with self.pool.use(req.model, at_end) as model:
            self._admitted(rec, model, req.stream, 1)
            info = model.engine.info
            assert info is not None
            if info.fim.missing:
                msg = (
                    f"model {model.model_id} cannot fill in the middle: its vocabulary has no "
                    f"{', '.join(info.fim.missing)} token (use a code model that has them)"
                )
                raise InvalidRequest(msg, Origin.SUFFIX)
            tokens = await self._infill_tokens(model, req)
            gen = req.generation
            grammar = text_grammar(req)
            rid = model.engine.new_id(id_prefix)
            one = _engine_request(
                f"{rid}-0",
                tuple(tokens),
                gen,
                0,
                grammar,
                max_tokens=model.token_cap(gen.max_tokens),
                stop=gen.stop,
                parse_special=False,
            )
            origins = dict(TEXT_ORIGINS)
            if grammar is not None:
                origins[RequestPart.GRAMMAR] = grammar.origin
            return await self._open(model, rec, rid, req.prefix, [one], None, origins, 1)

    @staticmethod
    async def _infill_tokens(model: ModelService, req: InfillRequest) -> list[int]:
        info = model.engine.info
        assert info is not None

        async def ids(text: str) -> list[int]:
            found, _ = await _engine_call(model.engine.tokenize(text, False, False))
            return list(found)

        parts = InfillParts(
            prefix=await ids(req.prefix),
            suffix=await ids(req.suffix),
            prompt=await ids(req.prompt) if req.prompt else [],
            extra=[(await ids(name + "\n"), await ids(text)) for name, text in req.extra],
            repo=await ids(REPO_NAME),
            current_file=await ids(CURRENT_FILE),
            chunk_separator=await ids(CHUNK_SEPARATOR),
        )
        n_predict = req.generation.max_tokens or 0
        bos = info.bos if info.add_bos else None
        return infill_tokens(parts, info.fim, info.n_batch, n_predict, info.n_ctx, bos)

    # -- steps shared by the generation flows ---------------------------------------
    @staticmethod
    def _prompt(model: ModelService, req: ChatRequest) -> str:
        messages = [m.to_template() for m in req.messages]
        tools = [tool_template(t) for t in req.offered_tools()]
        return model.render(messages, tools or None)

    @staticmethod
    def _admitted(rec: RequestRecord, model: ModelService, stream: bool, n: int) -> None:
        """The request has its model: note it, and refuse what that model cannot do."""
        rec.model, rec.stream = model.model_id, stream
        model.check_generates()
        info = model.engine.info
        if info is not None and n > info.parallel:
            msg = f"n={n} is above this server's {info.parallel} parallel sequences (--parallel)"
            raise InvalidRequest(msg, Origin.N)

    @staticmethod
    async def _open(
        model: ModelService,
        rec: RequestRecord,
        rid: str,
        prompt: Any,
        reqs: list[GenerateRequest],
        spec: ParseSpec | None,
        origins: Origins,
        n_per_prompt: int,
    ) -> Reply:
        """Submit the choices and wait until the engine has accepted them all."""
        rec.request_id, rec.prompt = rid, prompt
        try:
            streams = model.engine.submit_group(reqs)
        except EngineError as e:
            raise ModelUnavailable(str(e)) from e
        choices = await open_streams(streams, origins)
        rec.streams, rec.choices, rec.n_per_prompt = streams, choices, n_per_prompt
        return Reply(rid, model.model_id, streams, choices, spec, origins, n_per_prompt)
