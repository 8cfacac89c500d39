"""Wire types of llama-server's native routes (its field names and defaults), and of
llama_cpp.server's /extras routes, with their conversion to the core's requests.

Accepted and ignored (ggufd does these itself): `cache_prompt` (prompt caching is always
on), `id_slot` (the scheduler picks the slot that shares the most of the prompt),
`samplers`, `typical_p`, `mirostat*`, `dry_*`, `xtc_*` (not in ggufd's sampler chain).
As llama-server does, `max_tokens` stands for `n_predict` when that is not given, and
/embedding takes `input` as well as `content`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ggufd.api.errors import ParamError
from ggufd.api.limits import MAX_EMBED_INPUTS, MAX_LOGIT_BIAS, MAX_PROMPTS, MAX_STOP, check_count
from ggufd.engine.types import SamplingParams
from ggufd.grammar.gbnf import check_gbnf
from ggufd.grammar.json_schema import SchemaError, json_value_gbnf, schema_to_gbnf
from ggufd.serving import types as T

TokenIds = list[Annotated[int, Field(ge=0)]]
MAX_N_PROBS = 20


class WireModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class Sampling(WireModel):
    """The generation fields /completion and /infill share, with llama-server's defaults."""

    model: str | None = None
    n_predict: int = -1  # -1: until the end of generation or the context
    max_tokens: int | None = None  # (llama-server reads it when n_predict is not given)
    temperature: Annotated[float, Field(ge=0.0)] = 0.8
    top_k: Annotated[int, Field(ge=0)] = 40
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    repeat_penalty: Annotated[float, Field(gt=0.0)] = 1.0
    repeat_last_n: Annotated[int, Field(ge=0)] = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    ignore_eos: bool = False
    logit_bias: list[list[Any]] | dict[str, Any] | None = None
    n_probs: Annotated[int, Field(ge=0, le=MAX_N_PROBS)] = 0
    stop: list[str] | None = None
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    stream: bool = False
    cache_prompt: bool = True
    _schema_gbnf: str | None = PrivateAttr(default=None)  # json_schema's grammar

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop strings are allowed")
        return v

    @field_validator("grammar")
    @classmethod
    def _grammar(cls, v: str | None) -> str | None:
        try:
            (v or "").encode()
        except UnicodeEncodeError as e:
            raise ValueError(f"the grammar is not valid Unicode text: {e.reason}") from e
        check_gbnf(v or "")
        return v

    @model_validator(mode="after")
    def _rules(self) -> Sampling:
        if self.grammar is not None and self.json_schema is not None:
            raise ParamError("grammar", "give either grammar or json_schema, not both")
        self.bias()  # (raises for a bad entry)
        if "n_predict" not in self.model_fields_set and self.max_tokens is not None:
            self.n_predict = self.max_tokens
        if self.json_schema is not None:
            self._schema_gbnf = _schema_grammar(self.json_schema)
        return self

    def bias(self) -> tuple[tuple[int, float], ...]:
        """logit_bias as (token id, bias): `[[id, bias], ...]` or `{"id": bias}`; a bias of
        false bans the token."""
        raw = self.logit_bias
        if raw is None:
            return ()
        pairs = list(raw.items()) if isinstance(raw, dict) else raw
        if len(pairs) > MAX_LOGIT_BIAS:
            raise ParamError("logit_bias", f"at most {MAX_LOGIT_BIAS} entries are allowed")
        out: list[tuple[int, float]] = []
        for pair in pairs:
            if len(pair) != 2:
                raise ParamError("logit_bias", "each entry is [token id, bias]")
            token, bias = pair
            if isinstance(token, str) and token.lstrip("-").isdigit():
                token = int(token)
            if not isinstance(token, int) or isinstance(token, bool):
                msg = f"token ids are expected (find them with /tokenize), got {token!r}"
                raise ParamError("logit_bias", msg)
            if bias is False:
                bias = -100.0
            if isinstance(bias, bool) or not isinstance(bias, (int, float)):
                raise ParamError("logit_bias", f"a bias is a number or false, got {bias!r}")
            if not -100.0 <= float(bias) <= 100.0:
                raise ParamError("logit_bias", f"biases must be in [-100, 100], got {bias}")
            out.append((token, float(bias)))
        return tuple(out)

    def generation(self) -> T.Generation:
        return T.Generation(
            sampling=SamplingParams(
                temperature=self.temperature,
                top_p=self.top_p,
                top_k=self.top_k,
                min_p=self.min_p,
                repeat_penalty=self.repeat_penalty,
                presence_penalty=self.presence_penalty,
                frequency_penalty=self.frequency_penalty,
                penalty_last_n=self.repeat_last_n,
                seed=None if self.seed < 0 else self.seed,
                logit_bias=self.bias(),
            ),
            max_tokens=None if self.n_predict < 0 else self.n_predict,
            stop=tuple(self.stop or ()),
            logprobs=self.n_probs or None,
            ignore_eos=self.ignore_eos,
        )

    def grammar_text(self) -> str | None:
        """The GBNF the reply must match: `grammar`, or the one `json_schema` makes."""
        return self._schema_gbnf if self.json_schema is not None else self.grammar


def _schema_grammar(schema: dict[str, Any]) -> str:
    """json_schema's GBNF (any JSON value for `{}`); a 400 naming json_schema if it has a
    keyword ggufd does not support."""
    if not schema:
        return json_value_gbnf()
    try:
        return schema_to_gbnf(schema)
    except SchemaError as e:
        raise ParamError("json_schema", f"this schema is not supported: {e}") from e


class CompletionBody(Sampling):
    prompt: str | TokenIds | list[str | TokenIds]

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be an empty list")
        if isinstance(v, list) and not isinstance(v[0], int):
            check_count(v, MAX_PROMPTS, "prompts")
        return v

    def prompts(self) -> list[str | tuple[int, ...]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if all(isinstance(x, int) for x in p):
            return [tuple(x for x in p if isinstance(x, int))]
        return [x if isinstance(x, str) else tuple(x) for x in p if not isinstance(x, int)]

    def to_core(self) -> T.TextRequest:
        return T.TextRequest(
            model=self.model,
            prompts=tuple(self.prompts()),
            generation=self.generation(),
            grammar=self.grammar_text(),
            stream=self.stream,
        )


class ExtraChunk(WireModel):
    text: str = ""
    filename: str = "tmp"


class InfillBody(Sampling):
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = Field(default_factory=list)
    prompt: str = ""

    def to_core(self) -> T.InfillRequest:
        return T.InfillRequest(
            model=self.model,
            prefix=self.input_prefix,
            suffix=self.input_suffix,
            prompt=self.prompt,
            extra=tuple((c.filename, c.text) for c in self.input_extra),
            generation=self.generation(),
            grammar=self.grammar_text(),
            stream=self.stream,
        )


class TokenizeBody(WireModel):
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False
    model: str | None = None


class DetokenizeBody(WireModel):
    tokens: TokenIds
    model: str | None = None


EmbedInput = str | TokenIds | list[str | TokenIds]


class EmbeddingBody(WireModel):
    content: EmbedInput | None = None
    input: EmbedInput | None = None  # (llama-server takes it first, when both are given)
    model: str | None = None

    @field_validator("content", "input")
    @classmethod
    def _content(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("must not be an empty list")
        if isinstance(v, list) and not isinstance(v[0], int):
            check_count(v, MAX_EMBED_INPUTS, "inputs")
        return v

    @model_validator(mode="after")
    def _given(self) -> EmbeddingBody:
        if self.content is None and self.input is None:
            raise ParamError("content", "content (or input) is required")
        return self

    def to_core(self) -> T.EmbedInputs:
        c = self.input if self.input is not None else self.content
        assert c is not None
        if isinstance(c, str):
            inputs: tuple[str | tuple[int, ...], ...] = (c,)
        elif all(isinstance(x, int) for x in c):
            inputs = (tuple(x for x in c if isinstance(x, int)),)
        else:
            inputs = tuple(
                x if isinstance(x, str) else tuple(x) for x in c if not isinstance(x, int)
            )
        return T.EmbedInputs(self.model, inputs, per_token=None)


# -- llama_cpp.server's /extras -----------------------------------------------------------
class ExtrasTokenize(WireModel):
    input: str
    model: str | None = None


class ExtrasDetokenize(WireModel):
    tokens: TokenIds
    model: str | None = None
