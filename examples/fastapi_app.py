"""A FastAPI app that sends its completions through the throttle and awaits them.

Run it beside the workers, with the same configuration::

    LLM_THROTTLE_CONFIG=/etc/llm-throttle.toml uvicorn examples.fastapi_app:app

(FastAPI and uvicorn come with the ``examples`` extra: ``pip install
'llm-throttle[examples]'``; tests/test_examples.py runs it so.) Each request waits
for its completion without holding a thread: ``aenqueue`` sends on a worker thread
and the wait is a subscription to the result backend.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException

from tasks import aenqueue  # sends through the app configured from LLM_THROTTLE_CONFIG
from throttle.errors import CostExceedsCapacityError, InvalidRequestError, UnknownGroupError

app = FastAPI()


@app.post("/summaries")
async def summarise(text: str, tenant: str) -> dict[str, Any]:
    try:
        completion = await aenqueue(
            provider="openai",
            model="gpt-4o-mini",
            tenant=tenant,
            max_tokens=200,
            temperature=0.2,
            messages=[{"role": "user", "content": f"Summarise:\n{text}"}],
        )
    except (InvalidRequestError, UnknownGroupError, CostExceedsCapacityError) as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    result = await completion.wait(timeout_s=300)
    return {"summary": result["response"]["choices"][0]["message"]["content"]}
