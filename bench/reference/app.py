"""A reference sink built the obvious other way: FastAPI, uvicorn, redis.asyncio, pydantic.

The same ingest and status contract as fusink's hot path, kept honest: API key
check, envelope and index validation, one Lua script per batch doing the ordered
upsert and a checkpoint that never moves back, the same key layout. Run by
bench/run.py as `uvicorn reference.app:app --workers 2` against its Redis.
"""

import hmac
import os
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import redis.asyncio as redis
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

MAX_INDEX = 2**63 - 1
STREAM_ID = Field(min_length=1, max_length=256)
API_KEYS = [key.encode() for key in os.environ.get("API_KEYS", "").split(",") if key]
PREFIX = os.environ.get("KEY_PREFIX", "fusink")
SCRIPT = (Path(__file__).parent / "ingest_batch.lua").read_text()

app = FastAPI()
client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)
ingest_script = client.register_script(SCRIPT)


class Event(BaseModel):
    """A source row: its row key and index are checked, the rest kept as sent."""

    model_config = ConfigDict(extra="allow")
    id: StrictInt | Annotated[StrictStr, Field(min_length=1)]
    index: Annotated[StrictInt, Field(ge=0, le=MAX_INDEX)]


class Batch(BaseModel):
    agent_id: Annotated[str, STREAM_ID]
    task_id: Annotated[str, STREAM_ID]
    is_snapshot_end: StrictBool = False
    snapshot_sync_suggested: StrictBool = False
    events: list[Event] = Field(default_factory=list, max_length=10_000)


def authenticate(api_key: str | None) -> None:
    """401 unless the key matches one of API_KEYS (compared in constant time)."""
    given = (api_key or "").encode()
    if not any([hmac.compare_digest(given, key) for key in API_KEYS]):
        raise HTTPException(401, "Invalid credentials.")


def stream_keys(agent_id: str, task_id: str) -> list[str]:
    tag = "{" + quote(agent_id, safe="") + ":" + quote(task_id, safe="") + "}"
    return [f"{PREFIX}:{tag}:{kind}" for kind in ("checkpoint", "rows", "rowmeta")]


class IngestResult(BaseModel):
    snapshot_needed: bool
    checkpoint: int | None
    rows_written: int
    rows_skipped: int


class SyncStatus(BaseModel):
    index: int


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = jsonable_encoder(exc.errors(), exclude={"input", "ctx"})
    return JSONResponse({"message": "Invalid request.", "errors": errors}, 422)


@app.post("/ingest-batch")
async def ingest_batch(
    batch: Batch, x_api_key: Annotated[str | None, Header()] = None
) -> IngestResult:
    authenticate(x_api_key)
    top = max((event.index for event in batch.events), default="")
    args = [time.time_ns() // 1_000_000, top]
    for event in batch.events:
        args += (str(event.id), str(event.index), event.model_dump_json())
    checkpoint, written, skipped = await ingest_script(
        keys=stream_keys(batch.agent_id, batch.task_id), args=args
    )
    return IngestResult(
        snapshot_needed=False,
        checkpoint=int(checkpoint) if checkpoint else None,
        rows_written=written,
        rows_skipped=skipped,
    )


@app.get("/fuagent-sync-status")
async def get_sync_status(
    agent_id: Annotated[str, Query(min_length=1, max_length=256)],
    task_id: Annotated[str, Query(min_length=1, max_length=256)],
    x_api_key: Annotated[str | None, Header()] = None,
) -> SyncStatus:
    authenticate(x_api_key)
    index = await client.hget(stream_keys(agent_id, task_id)[0], "index")
    if index is None:
        raise HTTPException(404, "No checkpoint for this stream.")
    return SyncStatus(index=int(index))


@app.get("/healthz")
async def get_health() -> dict:
    return {"status": "ok"}
