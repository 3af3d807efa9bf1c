"""The webhook dispatcher: sends the outbox's due events, each attempt through ``delivery.deliver``.

Every job runner runs one (``JobWorker.poll`` starts the due deliveries at each poll). Runners share the
outbox: each event is held for the runner that took it while it is tried (``JobStore.due_webhooks``), and
the outcome sets its next attempt, so an event is sent at least once, with the same ``webhook-id`` each time.
"""

from __future__ import annotations

import asyncio
import logging

from core import metrics
from serve_app.store.jobs import JobStore, WebhookRow
from serve_app.webhooks import delivery
from serve_app.webhooks.settings import WebhooksConfig

logger = logging.getLogger("ray.serve")

# Webhook deliveries one runner attempts at once.
WEBHOOKS_IN_FLIGHT = 8


class WebhookDispatcher:
    """Sends due webhook events, at most ``WEBHOOKS_IN_FLIGHT`` at a time, on the running event loop.

    Args:
        store: the job store, whose ``webhooks`` table is the outbox.
        config: the deployment's webhook settings (signing secret, allowed hosts, timeout, retries).
    """

    def __init__(self, store: JobStore, config: WebhooksConfig) -> None:
        self.store = store
        self.config = config
        self.deliveries: set[asyncio.Task] = set()  # the attempts in flight

    def send_due(self) -> None:
        """Start one delivery attempt for each event due, as many as there are free places."""
        free = WEBHOOKS_IN_FLIGHT - len(self.deliveries)
        if free <= 0:
            return
        hold_s = 2 * self.config.timeout_s + 10  # longer than an attempt, DNS included
        for event in self.store.due_webhooks(hold_s, limit=free):
            task = asyncio.get_running_loop().create_task(self._deliver(event), name=event.id)
            self.deliveries.add(task)
            task.add_done_callback(self.deliveries.discard)

    async def _deliver(self, event: WebhookRow) -> None:
        hooks = self.config
        key = hooks.signing_key()
        if key is None:
            error: str | None = f"not sent: the server has no signing secret ({hooks.secret_env})"
        else:
            result = await delivery.deliver(
                event.url,
                event.id,
                event.body.encode(),
                key,
                allowed_hosts=hooks.allowed_hosts,
                timeout_s=hooks.timeout_s,
            )
            error = None if result.ok else result.error or "failed"
        retry_in = (
            None if error is None else delivery.next_attempt_delay(event.attempts + 1, hooks.retry_seconds)
        )
        self.store.webhook_attempted(event.id, error, retry_in)
        outcome = "delivered" if error is None else "retrying" if retry_in is not None else "abandoned"
        metrics.get().webhook_deliveries.inc(tags={"outcome": outcome})
        if error is not None:
            logger.info(
                "webhook %s of job %s: attempt %d failed: %s",
                event.id,
                event.job_id,
                event.attempts + 1,
                error,
            )
