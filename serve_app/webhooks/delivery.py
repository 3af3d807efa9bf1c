"""Outbound webhooks: signing, the target check and one delivery attempt, after the Standard Webhooks spec.

Each delivery is a POST of a JSON body with three headers (https://www.standardwebhooks.com):

- ``webhook-id``: the message's id. It stays the same on every retry, so a receiver can drop duplicates.
- ``webhook-timestamp``: when this attempt was signed, in whole seconds since the epoch; a fresh one each
  attempt, so a receiver can refuse old (replayed) messages.
- ``webhook-signature``: ``v1,`` and the base64 of HMAC-SHA256 over ``"{id}.{timestamp}." + body`` (the exact
  bytes sent), keyed with the shared secret.

The secret (``STORYREEL_WEBHOOK_SECRET``) is written as ``whsec_`` followed by the base64 of the key bytes, as
the spec's libraries expect; ``load_secret`` turns it into the key.

This module holds no state. The outbox (``outbox``, the ``webhooks`` table) keeps the events, and the
dispatcher (``dispatch``) calls ``deliver`` once per attempt and, when that fails, asks ``next_attempt_delay``
when to try again, or whether to give up. A delivery is therefore at least once: a receiver that answered
2xx too slowly, or whose answer was lost, sees the same ``webhook-id`` again.

Where we send: a webhook URL is chosen by a client, so without a check it would let anyone make this server
call its own network (SSRF). ``check_target`` refuses any host that is, or resolves to, an address that is
not globally routable (loopback, private, link-local with the cloud metadata service, CGNAT, multicast,
reserved, their IPv4-mapped IPv6 forms), unless the operator listed that host in ``allowed_hosts``. It runs
at create time and again before each attempt. Known limit: the check resolves the name and the HTTP client
then resolves it again to connect, so a DNS server that answers differently the second time (DNS
rebinding) can still slip past; closing that would mean connecting to the checked address itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

# Waits after attempt 1, 2, ...: the first retry within 10 s, then backing off over about 27 hours.
RETRY_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)

SECRET_PREFIX = "whsec_"
MAX_URL_LENGTH = 2048
# We only read the answer to let the receiver finish; nothing in it is used, so a large one is cut short.
MAX_ANSWER_BYTES = 64 * 1024
USER_AGENT = "storyreel-webhooks/1"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """A webhook target we will not send to.

    Args:
        reason: a short human text saying why (shown to the client, so it names the URL's parts, not ours).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass
class DeliveryResult:
    """What one delivery attempt came to.

    Attributes:
        ok: the receiver answered 2xx.
        status_code: the receiver's HTTP status; None when no answer came (refused, timed out, no connection).
        error: a short text for the video object when not ok ("HTTP 500", "timed out after 5 s"); never a
            traceback. None when ok.
    """

    ok: bool
    status_code: int | None
    error: str | None


def load_secret(value: str | None) -> bytes | None:
    """The signing key from a ``whsec_<base64>`` secret, STORYREEL_WEBHOOK_SECRET's value.

    Args:
        value: the secret as configured; surrounding whitespace (a trailing newline from a file) is ignored.

    Returns:
        The key bytes, or None when ``value`` is None or empty (webhooks are not signed: not configured).

    Raises:
        ValueError: the value does not start with ``whsec_`` or the rest is not base64. The message never
            contains the secret, since it may end up in a log.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"the webhook secret must start with {SECRET_PREFIX!r}, followed by base64")
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        # `from None`: the decoder's own message is not needed, and a reader should not go looking for it.
        raise ValueError(f"the webhook secret is not valid base64 after {SECRET_PREFIX!r}") from None
    if not key:
        raise ValueError(f"the webhook secret has no key after {SECRET_PREFIX!r}")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header's value: ``v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}." + body)>``.

    Args:
        key: the signing key, from ``load_secret``.
        message_id: the ``webhook-id`` sent with it.
        timestamp: the ``webhook-timestamp`` sent with it, in seconds since the epoch.
        body: the exact bytes sent as the request body.
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one delivery: the three Standard Webhooks headers, content type and user agent.

    Args: as for ``sign``.
    """
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def check_target(url: str, allowed_hosts: Collection[str]) -> None:
    """Refuse a webhook URL we must not send to; return quietly when it may be used.

    Refused: anything but http(s) with a host; a URL with user info (``user:pass@``) or longer than 2048
    characters; a host that is, or resolves to (any one of its addresses), an address that is not globally
    routable; a host that does not resolve.

    Args:
        url: the webhook URL as the client gave it.
        allowed_hosts: host names or IP literals the operator trusts even though they are local (a receiver
            beside the service, a test server); compared case-insensitively with the URL's host, exactly.

    Raises:
        WebhookRefused: with the reason.

    Blocking: it may ask DNS, so async callers run it in a thread.
    """
    if len(url) > MAX_URL_LENGTH:
        raise WebhookRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed IPv6 bracket, say
        raise WebhookRefused(f"the URL is malformed ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise WebhookRefused("the URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise WebhookRefused("the URL must not hold a user name or password")
    host = parts.hostname  # lower case, without an IPv6 literal's brackets
    if not host:
        raise WebhookRefused("the URL has no host")
    try:
        parts.port  # noqa: B018 - reading it is the check: it raises for a bad or out-of-range port
    except ValueError:
        raise WebhookRefused("the URL's port is not a valid port number") from None

    if host in {_bare_host(allowed) for allowed in allowed_hosts}:
        return

    # 1. An IP literal is judged as it is: no DNS.
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        kind = _non_global_kind(literal)
        if kind:
            raise WebhookRefused(f"{host} is {kind} address")
        return

    # 2. A name is judged by every address it resolves to: one local address among public ones is enough
    # for the HTTP client to reach it.
    for address in _resolve(host):
        kind = _non_global_kind(address)
        if kind:
            raise WebhookRefused(f"{host} resolves to {address}, {kind} address")


def next_attempt_delay(attempts: int, schedule: Sequence[float] = RETRY_SCHEDULE_S) -> float | None:
    """How long to wait after a failed attempt before the next one.

    Args:
        attempts: how many attempts have failed so far, counting the one just made (1 after the first).
        schedule: the wait after each attempt, in seconds; RETRY_SCHEDULE_S unless a test passes its own.

    Returns:
        Seconds to wait, or None when the schedule is used up and the delivery should be given up.
    """
    if attempts < 1:
        raise ValueError(f"attempts={attempts}: counts failed attempts, so it starts at 1")
    if attempts > len(schedule):
        return None
    return float(schedule[attempts - 1])


async def deliver(
    url: str,
    message_id: str,
    body: bytes,
    key: bytes,
    *,
    allowed_hosts: Collection[str] = (),
    timeout_s: float = 5.0,
    client: httpx.AsyncClient | None = None,
) -> DeliveryResult:
    """Make one delivery attempt; never raises for a refused target or a network problem.

    Args:
        url: the webhook URL.
        message_id: the ``webhook-id``, the same on every attempt of one message.
        body: the JSON body, exactly as it is to be sent and signed.
        key: the signing key, from ``load_secret``.
        allowed_hosts: as for ``check_target``.
        timeout_s: the most the whole attempt may take, connecting and answering together (default 5 s).
        client: an httpx client to reuse; by default a fresh one per attempt, which ignores proxy
            settings from the environment (a proxy would connect to hosts we did not check).

    Returns:
        ok for any 2xx answer. Redirects are not followed (a 3xx is a failure: following one would reach a
        host we did not check).
    """
    # 1. Check the target again: its DNS answer may have changed since the video was created.
    try:
        await asyncio.to_thread(check_target, url, allowed_hosts)
    except WebhookRefused as refused:
        return DeliveryResult(ok=False, status_code=None, error=f"refused: {refused.reason}")

    # 2. Sign with this attempt's own timestamp.
    request_headers = headers(key, message_id, int(time.time()), body)

    # 3. POST, read at most MAX_ANSWER_BYTES of the answer, all within timeout_s.
    own_client = client is None
    http = client if client is not None else httpx.AsyncClient(trust_env=False)
    try:
        # httpx's timeout bounds each step (connect, each read); asyncio's bounds their sum.
        async with asyncio.timeout(timeout_s):
            status_code = await _post(http, url, body, request_headers, timeout_s)
    except (TimeoutError, httpx.TimeoutException):
        return DeliveryResult(ok=False, status_code=None, error=f"timed out after {timeout_s:g} s")
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        return DeliveryResult(ok=False, status_code=None, error=_short_network_error(error))
    finally:
        if own_client:
            await http.aclose()

    # 4. Judge the answer.
    if 200 <= status_code < 300:
        return DeliveryResult(ok=True, status_code=status_code, error=None)
    if 300 <= status_code < 400:
        return DeliveryResult(
            ok=False, status_code=status_code, error=f"redirect ({status_code}) not followed"
        )
    return DeliveryResult(ok=False, status_code=status_code, error=f"HTTP {status_code}")


async def _post(
    http: httpx.AsyncClient, url: str, body: bytes, request_headers: dict[str, str], timeout_s: float
) -> int:
    """POST ``body`` without following redirects; read at most MAX_ANSWER_BYTES; return the status code."""
    async with http.stream(
        "POST", url, content=body, headers=request_headers, timeout=timeout_s, follow_redirects=False
    ) as response:
        read = 0
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= MAX_ANSWER_BYTES:
                break
        return response.status_code


def _short_network_error(error: Exception) -> str:
    """One line for a failed connection: the kind of failure and httpx's text, cut to 200 characters."""
    text = " ".join(str(error).split())
    kind = "connection failed" if isinstance(error, httpx.TransportError) else "request failed"
    return f"{kind}: {text[:200]}" if text else f"{kind}: {type(error).__name__}"


def _bare_host(host: str) -> str:
    """An allowed_hosts entry as ``urlsplit(...).hostname`` spells hosts: lower case, no brackets."""
    return host.strip().strip("[]").lower()


def _resolve(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to; WebhookRefused when it resolves to none."""
    try:
        answers = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookRefused(f"{host} does not resolve") from None
    # An IPv6 answer may carry a zone ("fe80::1%eth0"), which ip_address does not read.
    addresses = [ipaddress.ip_address(str(answer[4][0]).partition("%")[0]) for answer in answers]
    if not addresses:
        raise WebhookRefused(f"{host} does not resolve")
    return addresses


def _non_global_kind(address: IPAddress) -> str | None:
    """What makes ``address`` unfit to send to ("a loopback"), or None when it is a global unicast address."""
    # ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address inside.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # The named kinds first, for a clearer reason; `is_global` last catches the rest (CGNAT 100.64/10,
    # documentation and benchmark ranges). Multicast is asked on its own: `is_global` lets it through.
    kinds = [
        (address.is_unspecified, "an unspecified"),
        (address.is_loopback, "a loopback"),
        (address.is_link_local, "a link-local"),
        (address.is_multicast, "a multicast"),
        (address.is_private, "a private"),
        (address.is_reserved, "a reserved"),
        (not address.is_global, "a non-global"),
    ]
    for matches, kind in kinds:
        if matches:
            return kind
    return None
