"""The webhook outbox: a job's end queues its event in the transaction that ends it.

The event is a row of the store's ``webhooks`` table, written by ``JobStore.finish`` in the same
transaction as the job's final status, so a job never ends without its event, nor gets it twice. The
dispatcher (``serve_app.webhooks.dispatch``) sends it from there, with the same id on every attempt.

The outbox is a table of the store, written inside the store's transactions, so it lives in the store's
room; the webhooks room (``serve_app.webhooks``) reads it and sends.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from core.status import JobStatus
from serve_app.store.databases import Session

# Columns a new event sets; the rest take SCHEMA's defaults (status pending, no attempts, no error).
_QUEUE = (
    "INSERT INTO webhooks (id, job_id, url, event, body, next_at, created_at) "
    "VALUES (:id, :job_id, :url, :event, :body, :next_at, :created_at)"
)


def event_body(event_id: str, job_id: str, status: JobStatus, at: int) -> dict[str, Any]:
    """The JSON body of the event a job's end sends: ``video.completed``, ``video.failed`` or
    ``video.cancelled``, naming the video (the receiver fetches the video object itself).

    Args:
        event_id: the event's id, also its ``webhook-id`` on every attempt.
        job_id: the video that ended.
        status: how it ended.
        at: when it ended, in seconds since the epoch.
    """
    return {
        "object": "event",
        "id": event_id,
        "type": f"video.{status}",
        "created_at": at,
        "data": {"id": job_id},
    }


def queue_event(db: Session, job_id: str, status: JobStatus, at: int) -> None:
    """Queue the event of a job's end for its webhook, if it has one.

    Args:
        db: the session of the transaction that ends the job (``JobStore.finish``).
        job_id: the job that ended.
        status: its final status.
        at: when it ended, in seconds since the epoch.
    """
    row = db.execute("SELECT webhook_url FROM jobs WHERE id = :id", {"id": job_id}).fetchone()
    if row is None or not row["webhook_url"]:
        return
    event_id = f"evt_{uuid.uuid4().hex}"
    body = event_body(event_id, job_id, status, at)
    db.execute(
        _QUEUE,
        {
            "id": event_id,
            "job_id": job_id,
            "url": row["webhook_url"],
            "event": body["type"],
            "body": json.dumps(body, separators=(",", ":")),
            "next_at": time.time(),  # due at once
            "created_at": at,
        },
    )
