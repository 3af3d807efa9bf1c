"""The webhook settings (`webhooks` in the app's config), kept with the dispatcher that reads them."""

from __future__ import annotations

import logging
import os

from pydantic import BaseModel, ConfigDict, Field

from serve_app.webhooks.delivery import RETRY_SCHEDULE_S, load_secret

logger = logging.getLogger("ray.serve")


class WebhooksConfig(BaseModel):
    """Webhooks: a POST to the caller's URL when a video ends, signed per Standard Webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(
        None,
        max_length=2048,
        description="Webhook for every video whose request names none; none by default.",
    )
    secret_env: str = Field(
        "STORYREEL_WEBHOOK_SECRET",
        min_length=1,
        description="Environment variable (of the ingress and the JobRunner) holding the signing secret, "
        "`whsec_` and base64. Without it, a request with `webhook_url` is refused and `url` is not used.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts webhooks may reach although they are or resolve to loopback, private or link-local "
        "addresses (a receiver inside your own network). Every other such target is refused.",
    )
    timeout_s: float = Field(5, gt=0, le=60, description="How long one delivery attempt may take.")
    retry_seconds: list[float] = Field(
        default_factory=lambda: list(RETRY_SCHEDULE_S),
        min_length=0,
        description="Waits before each retry of a delivery that failed (no 2xx answer); when they run out the "
        "webhook is `failed`. The default retries after 5 s, then backs off over about 27 hours.",
    )

    def signing_key(self) -> bytes | None:
        """The key from the secret in ``secret_env``; None when it is unset (or unusable: logged)."""
        try:
            return load_secret(os.environ.get(self.secret_env))
        except ValueError as exc:
            logger.error("%s is not usable, so no webhook is sent: %s", self.secret_env, exc)
            return None
