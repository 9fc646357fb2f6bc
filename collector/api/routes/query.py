"""``GET /query``: a natural-language question, interpreted then answered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from deltawire.collector.stores.base import AggQuery

from ..cache import scope_for
from ..deps import Deps
from ..errors import ApiError
from ..nlquery import EXAMPLES, PromptError, parse_prompt
from ..params import PromptParams, parse
from ..schemas import QueryAnswer
from ..spec import Endpoint
from ..views import doc_out

__all__ = ["endpoints"]


def endpoints(deps: Deps) -> list[Endpoint]:
    store = deps.store

    async def query(request: Request) -> Response:
        raw = parse(request, PromptParams).prompt
        prompt = " ".join(raw.split())
        if not prompt:
            raise ApiError(
                422,
                "bad_parameter",
                "prompt: required: a question such as 'top 5 events today'",
                parameter="prompt",
            )
        try:
            interp = parse_prompt(prompt, datetime.now(UTC))
        except PromptError as e:
            raise ApiError(
                422, "bad_prompt", str(e), parameter="prompt", examples=list(EXAMPLES)
            ) from None
        q = interp.query
        where = q.where if isinstance(q, AggQuery) else q

        async def compute() -> bytes:
            rows: list[dict[str, Any]]
            if isinstance(q, AggQuery):
                rows = await deps.heavy_call(store.aggregate, q)
            else:
                rows = [doc_out(d) for d in await deps.heavy_call(store.find, q)]
            return orjson.dumps({"prompt": prompt, "interpreted": interp.interpreted, "rows": rows})

        # Keyed by the prompt, not the resolved times: "last hour" stays cacheable,
        # and its window is at most the cache TTL old.
        return await deps.cached("q:" + prompt, scope_for(where.session, where.name), compute)

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
            "in the last hour', 'p95 of http_latency_ms'. 422 bad_prompt with examples "
            "when it cannot be understood; 503 query_timeout past the deadline.",
        ),
    ]
