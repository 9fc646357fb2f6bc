"""``GET /query``: a natural-language question, interpreted then answered
(the interpreter and its runner are ``nlquery``, ``nl_vocab`` and ``nl_run``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..cache import scope_for
from ..deps import CachedGet, Deps, KnownQueries
from ..errors import ApiError
from ..nl_run import answer as nl_answer
from ..nl_vocab import VocabCache
from ..nlquery import EXAMPLES, PromptError, parse_prompt
from ..params import PromptParams, parse
from ..schemas import QueryAnswer
from ..spec import Endpoint
from ..views import doc_out, session_out

__all__ = ["endpoints"]


@dataclass(frozen=True, slots=True)
class _Read:
    """A prompt read: its answer's cache key and scope, and the vocabulary
    it was read with (its ``VocabCache.generation``; the fast path's ``Keyed``)."""

    key: str
    scope: str
    generation: int


def endpoints(deps: Deps) -> list[Endpoint]:
    store = deps.store
    vocab_cache = VocabCache()
    # Reading a prompt (the interpreter, with the names the store knows) was
    # ~90% of a cached answer's CPU: 211-317 µs a request at c=10 and c=100
    # (bench.api, 2026-12-01), against 22-29 for a cached listing, which the
    # HTTP fast path answers from a query string it has seen (fast.py). So
    # does a prompt's now, for as long as the vocabulary it was read with is
    # current: a newer one may read the same words as other names, and the
    # full path then reads it again. The key has no "now" in it (see below),
    # so a hit is the same answer either way.
    known: KnownQueries[_Read] = KnownQueries()

    def known_prompt(raw: bytes) -> _Read | None:
        read = known.get(raw)
        return read if read is not None and vocab_cache.current(read.generation) else None

    deps.cached_gets["/query"] = CachedGet(known_prompt, None)

    async def query(request: Request) -> Response:
        prompt = " ".join(parse(request, PromptParams).prompt.split())
        if not prompt:
            raise ApiError(
                422,
                "bad_parameter",
                "prompt: required: a question such as 'top 5 events today'",
                parameter="prompt",
            )
        catalog = functools.partial(deps.store_call, store.catalog)
        vocab = await vocab_cache.get(catalog)
        try:
            plan = parse_prompt(prompt, datetime.now(UTC), vocab)
        except PromptError:
            try:  # a name stored since the vocabulary was read?
                vocab = await vocab_cache.get(catalog, fresh=True)
                plan = parse_prompt(prompt, datetime.now(UTC), vocab)
            except PromptError as e:
                raise ApiError(
                    422,
                    "bad_prompt",
                    e.reason,
                    parameter="prompt",
                    suggestions=e.suggestions,
                    examples=list(EXAMPLES),
                ) from None

        async def compute() -> bytes:
            ans = await deps.heavy_call(nl_answer, store, vocab, plan, doc_out, session_out)
            return orjson.dumps(
                {"prompt": prompt, "interpreted": plan.interpreted(), "rows": ans.rows,
                 "notes": ans.notes}
            )  # fmt: skip

        # Keyed by the prompt, not the resolved times: "last hour" stays cacheable,
        # and its window is at most the cache TTL old.
        p = plan.params
        # No await since the vocabulary was got: its generation is the current one.
        generation = vocab_cache.generation
        scope = scope_for(p.get("session"), p.get("name"), p.get("kind"))
        read = _Read("q:" + prompt, scope, generation)
        known.remember(request.scope["query_string"], read)
        return await deps.cached(read.key, read.scope, compute)

    return [
        Endpoint(
            "GET",
            "/query",
            query,
            "Answer a question in words",
            params=PromptParams,
            answer=QueryAnswer,
            tags=("query",),
            description="Such as 'top 5 events today', 'average cpu.percent of host web-1 "
            "in the last hour', 'p95 of http_latency_ms'. 422 bad_prompt with the closest "
            "names and examples when it cannot be understood; 503 query_timeout past the "
            "deadline.",
        ),
    ]
