"""Webhooks: the signature against the spec's algorithm written out here, the SSRF check, the retry schedule,
and one delivery attempt against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_app.webhooks.delivery import (
    RETRY_SCHEDULE_S,
    WebhookRefused,
    check_target,
    deliver,
    headers,
    load_secret,
    next_attempt_delay,
    sign,
)

pytestmark = pytest.mark.unit

KEY = b"0123456789abcdef01234567"


def spec_signature(key: bytes, message_id: str, timestamp: int | str, body: bytes) -> str:
    """The Standard Webhooks signature, computed here without the module under test."""
    signed_content = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    mac = hmac.new(key, signed_content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# --- signing ---------------------------------------------------------------------------------------------


def test_sign_matches_the_spec_algorithm_computed_independently() -> None:
    body = b'{"type": "video.completed", "data": {"id": "video_1"}}'
    assert sign(KEY, "msg_1", 1700000000, body) == spec_signature(KEY, "msg_1", 1700000000, body)


def test_sign_matches_the_standard_webhooks_example_vector() -> None:
    key = load_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert key is not None
    signature = sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_signature_changes_with_body_id_and_timestamp() -> None:
    base = sign(KEY, "msg_1", 1700000000, b"{}")
    assert sign(KEY, "msg_1", 1700000000, b"{ }") != base
    assert sign(KEY, "msg_2", 1700000000, b"{}") != base
    assert sign(KEY, "msg_1", 1700000001, b"{}") != base
    assert sign(KEY + b"x", "msg_1", 1700000000, b"{}") != base


def test_headers_carry_the_spec_headers_and_a_signature_over_them() -> None:
    sent = headers(KEY, "msg_1", 1700000000, b"{}")
    assert sent == {
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": spec_signature(KEY, "msg_1", 1700000000, b"{}"),
        "content-type": "application/json",
        "user-agent": "storyreel-webhooks/1",
    }


# --- the secret ------------------------------------------------------------------------------------------


def test_load_secret_round_trips_a_whsec_secret() -> None:
    raw = os.urandom(24)
    assert load_secret("whsec_" + base64.b64encode(raw).decode()) == raw


@pytest.mark.parametrize("value", [None, ""])
def test_load_secret_is_none_when_not_configured(value: str | None) -> None:
    assert load_secret(value) is None


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # base64, but no whsec_ prefix
        "whsec_not*base64!secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",  # one character short: bad padding
    ],
)
def test_load_secret_refuses_a_malformed_secret_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError) as refused:
        load_secret(secret)
    message = str(refused.value)
    assert "whsec_" in message  # says what a secret should look like
    assert secret not in message
    assert secret.removeprefix("whsec_") not in message


# --- where we send ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8080/x",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://[::1",  # an unclosed IPv6 bracket: urlsplit raises ValueError
        "http:///no-host",
        "http://user:pw@example.com/",
        "http://93.184.216.34:99999/",
        "http://nonexistent.invalid/",
        "https://93.184.216.34/" + "a" * 2048,
    ],
)
def test_check_target_refuses(url: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        check_target(url, allowed_hosts=())
    assert refused.value.reason


def test_check_target_refuses_a_name_when_any_of_its_addresses_is_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def answers(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 0)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", answers)
    with pytest.raises(WebhookRefused) as refused:
        check_target("https://hooks.example.com/in", allowed_hosts=())
    assert "10.0.0.7" in refused.value.reason


def test_check_target_allows_a_name_whose_addresses_are_all_global(monkeypatch: pytest.MonkeyPatch) -> None:
    def answers(host: str, port: object, *args: object, **kwargs: object) -> list[tuple]:
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:220:1::1", 0, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", answers)
    check_target("https://hooks.example.com/in", allowed_hosts=())


def test_check_target_allows_a_public_ip_literal_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> None:
        raise AssertionError("an IP literal needs no DNS")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    check_target("https://93.184.216.34/", allowed_hosts=())
    check_target("http://[2606:2800:220:1::1]:8443/hook", allowed_hosts=())


def test_check_target_allows_a_local_host_the_operator_listed() -> None:
    check_target("http://127.0.0.1:8123/hook", allowed_hosts=["127.0.0.1"])
    check_target("http://LocalHost:8080/x", allowed_hosts=["localhost"])
    check_target("http://localhost:8080/x", allowed_hosts=["LOCALHOST"])
    # Exact host names only: listing one host does not open its neighbours.
    with pytest.raises(WebhookRefused):
        check_target("http://127.0.0.2/", allowed_hosts=["127.0.0.1"])
    # Listed or not, the URL's shape is still checked.
    with pytest.raises(WebhookRefused):
        check_target("http://user:pw@127.0.0.1/", allowed_hosts=["127.0.0.1"])


# --- retries ---------------------------------------------------------------------------------------------


def test_retry_schedule_starts_soon_backs_off_and_ends() -> None:
    answers = [next_attempt_delay(attempt) for attempt in range(1, len(RETRY_SCHEDULE_S) + 1)]
    delays = [delay for delay in answers if delay is not None]
    assert len(delays) == len(RETRY_SCHEDULE_S)  # a delay after every attempt the schedule covers
    assert delays[0] <= 10
    assert delays == sorted(delays)
    assert next_attempt_delay(len(RETRY_SCHEDULE_S) + 1) is None
    assert next_attempt_delay(1, schedule=(2, 4)) == 2
    assert next_attempt_delay(3, schedule=(2, 4)) is None


# --- one delivery against a real server -------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 that records every request. Paths: /ok answers 200, /fail 500,
    /redirect a 302 to /target, /slow 200 only once the test is over."""

    port: int
    requests: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    recorded: list[Received] = []
    over = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            recorded.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path == "/slow":
                over.wait()
            status = {"/ok": 200, "/target": 200, "/fail": 500, "/redirect": 302, "/slow": 200}.get(
                self.path, 404
            )
            try:
                self.send_response(status)
                if status == 302:
                    self.send_header("location", "/target")
                self.send_header("content-length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (the timeout test)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    found = Receiver(port=server.server_address[1])
    found.requests = recorded
    try:
        yield found
    finally:
        over.set()
        server.shutdown()
        server.server_close()


LOCAL = ["127.0.0.1"]


def test_deliver_succeeds_on_200_with_signed_spec_headers(receiver: Receiver) -> None:
    body = b'{"type": "video.completed", "data": {"id": "video_abc"}}'
    result = asyncio.run(deliver(receiver.url("/ok"), "msg_abc", body, KEY, allowed_hosts=LOCAL))
    assert (result.ok, result.status_code, result.error) == (True, 200, None)

    [request] = receiver.requests
    assert request.body == body
    assert request.headers["webhook-id"] == "msg_abc"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "storyreel-webhooks/1"
    timestamp = request.headers["webhook-timestamp"]
    assert abs(int(timestamp) - time.time()) <= 5
    assert request.headers["webhook-signature"] == spec_signature(KEY, "msg_abc", timestamp, request.body)


def test_deliver_fails_on_500(receiver: Receiver) -> None:
    result = asyncio.run(deliver(receiver.url("/fail"), "msg_1", b"{}", KEY, allowed_hosts=LOCAL))
    assert (result.ok, result.status_code, result.error) == (False, 500, "HTTP 500")


def test_deliver_does_not_follow_a_redirect(receiver: Receiver) -> None:
    result = asyncio.run(deliver(receiver.url("/redirect"), "msg_1", b"{}", KEY, allowed_hosts=LOCAL))
    assert (result.ok, result.status_code) == (False, 302)
    assert result.error == "redirect (302) not followed"
    assert [request.path for request in receiver.requests] == ["/redirect"]


def test_deliver_times_out_on_a_slow_receiver(receiver: Receiver) -> None:
    # The receiver answers only once the test is over: a delivery that returns at all gave up on it.
    result = asyncio.run(
        deliver(receiver.url("/slow"), "msg_1", b"{}", KEY, allowed_hosts=LOCAL, timeout_s=0.5)
    )
    assert (result.ok, result.status_code) == (False, None)
    assert result.error == "timed out after 0.5 s"


def test_deliver_refuses_a_local_target_that_is_not_allowed(receiver: Receiver) -> None:
    result = asyncio.run(deliver(receiver.url("/ok"), "msg_1", b"{}", KEY))
    assert (result.ok, result.status_code) == (False, None)
    assert result.error is not None and result.error.startswith("refused: ")
    assert "127.0.0.1" in result.error
    assert receiver.requests == []


def test_deliver_reports_a_refused_connection_in_one_short_line() -> None:
    with socket.socket() as probe:  # a port nobody listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = asyncio.run(deliver(f"http://127.0.0.1:{port}/", "msg_1", b"{}", KEY, allowed_hosts=LOCAL))
    assert (result.ok, result.status_code) == (False, None)
    assert result.error is not None and result.error.startswith("connection failed")
    assert "\n" not in result.error and len(result.error) < 250


def test_deliver_ignores_proxy_settings_from_the_environment(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy would connect to whatever host it is asked for, past the check on the target's addresses.
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen()
        proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy_url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        result = asyncio.run(
            deliver(receiver.url("/ok"), "msg_1", b"{}", KEY, allowed_hosts=LOCAL, timeout_s=2.0)
        )
        # The kernel queues a connection on a listening socket before connect() returns, so one made
        # during the delivery is waiting here now.
        proxy_connected, _, _ = select.select([proxy], [], [], 0)
    assert proxy_connected == [], "the delivery went through the proxy"
    assert (result.ok, result.status_code) == (True, 200)
    assert [request.path for request in receiver.requests] == ["/ok"]
