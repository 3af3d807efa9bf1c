"""An S3-compatible server of its own (moto in server mode, as s3fs's own tests use), for the tests and the
benchmarks: a separate process on a free loopback port, reached over real HTTP by s3fs and botocore.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from tests.support.ports import free_port
from tests.support.processes import stop

# What a client of the server needs in its environment: the endpoint and (any) credentials.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "storyreel-test",
    "AWS_SECRET_ACCESS_KEY": "storyreel-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class ServerMissing(RuntimeError):
    """moto's server is not installed."""


@contextmanager
def s3_server() -> Iterator[dict[str, str]]:
    """Start the server; yield the environment that points clients at it; stop it after."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise ServerMissing("moto's S3 server is not installed: run `make install`") from None
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="storyreel-s3-") as folder:
        log = Path(folder) / "server.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{endpoint}/", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the S3 server did not start: {log.read_text()[-2000:]}"
                        ) from None
                    time.sleep(0.1)
            yield {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}
        finally:
            stop(process)


_numbers = itertools.count()


def new_bucket(environment: dict[str, str]) -> str:
    """Create an empty bucket on the server of ``environment`` (an `s3_server` environment); its URL."""
    import fsspec

    name = f"storyreel-{os.getpid()}-{next(_numbers)}"
    fs = fsspec.filesystem(
        "s3",
        key=environment["AWS_ACCESS_KEY_ID"],
        secret=environment["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=environment["AWS_ENDPOINT_URL"],
        skip_instance_cache=True,
    )
    fs.mkdir(name)
    return f"s3://{name}"


def query_signature(url: str, secret: str) -> str:
    """The Signature Version 4 signature a presigned GET ``url`` should carry when signed with ``secret``,
    computed here from AWS's published algorithm (moto's server checks a signed header, never a presigned
    URL's query: without this, any signature would download)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature"]
    fields = dict(query)
    assert fields["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and fields["X-Amz-SignedHeaders"] == "host"

    def encoded(text: str) -> str:
        return quote(text, safe="-_.~")

    canonical_query = "&".join(f"{encoded(k)}={encoded(v)}" for k, v in sorted(query))
    canonical_request = "\n".join(
        ["GET", parts.path or "/", canonical_query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    _, day, region, service, terminal = fields["X-Amz-Credential"].split("/")
    scope = f"{day}/{region}/{service}/{terminal}"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            fields["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


__all__ = ["CREDENTIALS", "ServerMissing", "new_bucket", "query_signature", "s3_server"]
