"""users: the audit log for admins, newest first, with filters (gekko.security.audit writes
it; every service's security events and refused calls end up there)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from gekko.security.audit import entry_from_row
from gekko.services.deps import Pool
from gekko.services.inputs import StoredText, Timestamp
from gekko.services.user_sessions import PREFIX

router = APIRouter(prefix=PREFIX, tags=["users"])


class AuditRowOut(BaseModel):
    seq: int
    at: datetime
    event: str
    component: str
    actor_user_id: int | None
    subject_user_id: int | None
    source_address: str
    correlation_id: str
    details: dict[str, str]
    hash: str


class AuditPageOut(BaseModel):
    events: list[AuditRowOut]
    # Pass as `before` for the next (older) page; None at the start of the log.
    next_before: int | None


@router.get("/audit", response_model=AuditPageOut)
async def audit_log(
    pool: Pool,
    event: Annotated[StoredText | None, Query(max_length=64)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    correlation_id: Annotated[StoredText | None, Query(max_length=128)] = None,
    since: Timestamp | None = None,
    until: Timestamp | None = None,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPageOut:
    """`user_id` matches the actor or the subject of an event."""
    rows = await pool.fetch(
        """
        SELECT * FROM audit.events
        WHERE ($1::text IS NULL OR event = $1)
          AND ($2::bigint IS NULL OR actor_user_id = $2 OR subject_user_id = $2)
          AND ($3::text IS NULL OR correlation_id = $3)
          AND ($4::timestamptz IS NULL OR at >= $4)
          AND ($5::timestamptz IS NULL OR at < $5)
          AND ($6::bigint IS NULL OR seq < $6)
        ORDER BY seq DESC LIMIT $7
        """,
        event,
        user_id,
        correlation_id,
        since,
        until,
        before,
        limit,
    )
    events = [_out(row) for row in rows]
    more = len(rows) == limit and rows[-1]["seq"] > 1
    return AuditPageOut(events=events, next_before=rows[-1]["seq"] if more else None)


def _out(row: Any) -> AuditRowOut:
    entry = entry_from_row(row)
    return AuditRowOut(
        seq=row["seq"],
        at=entry.at,
        event=entry.event,
        component=entry.component,
        actor_user_id=entry.actor_user_id,
        subject_user_id=entry.subject_user_id,
        source_address=entry.source_address,
        correlation_id=entry.correlation_id,
        details=dict(entry.details),
        hash=bytes(row["hash"]).hex(),
    )
