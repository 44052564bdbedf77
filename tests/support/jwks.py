"""A test identity provider that publishes RSA signing keys as a JWKS endpoint.

`JwksServer` serves `{"keys": [...]}` on 127.0.0.1 from a thread, and can be
told to misbehave the ways a real identity provider does: `hang` (accept the
connection, never answer), `garbage` (200 with an HTML page), `error` (503),
or be stopped altogether (connection refused) and started again on the same
port. `mint_rs256` signs tokens with one of its keys and that key's `kid`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import RSAAlgorithm

from tests.support.tokens import TEST_AUDIENCE, TEST_ISSUER, free_port

Mode = Literal["serve", "hang", "garbage", "error"]

HANG_SECONDS = 30.0
"""How long a hanging request is held open at most (it is released at once on stop)."""


@dataclass(frozen=True)
class SigningKey:
    """An RSA key pair known to the identity provider under `kid`."""

    kid: str
    private_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(kid=kid or f"kid-{uuid.uuid4().hex[:8]}", private_key=key)

    def public_jwk(self) -> dict[str, Any]:
        jwk = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def public_pem(self) -> bytes:
        """The public key as PEM: what an algorithm-confusion attacker signs HS256 with."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def mint_rs256(
    key: SigningKey,
    sub: Any = "alice",
    *,
    kid: str | None = None,
    ttl: int = 600,
    issuer: str | None = TEST_ISSUER,
    audience: str | list[str] | None = TEST_AUDIENCE,
    headers: dict[str, Any] | None = None,
    **extra: Any,
) -> str:
    """An RS256 token signed by `key`, whose header names `kid` (default: the key's own)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    claims.update(extra)
    header = {"kid": key.kid if kid is None else kid, **(headers or {})}
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers=header)


def mint_es256(sub: str = "alice", *, kid: str = "es-key", ttl: int = 600) -> str:
    """An ES256 token from a throwaway EC key (for servers that allow only RS256)."""
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + ttl, "iss": TEST_ISSUER, "aud": TEST_AUDIENCE}
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


class JwksServer:
    """A JWKS endpoint at `url`; `mode` decides how it answers, `stop()` takes it down."""

    def __init__(self, keys: list[SigningKey], *, port: int | None = None) -> None:
        self.keys = list(keys)
        self.port = port or free_port()
        self.mode: Mode = "serve"
        self.requests = 0
        self._release = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    def start(self) -> JwksServer:
        if self._httpd is not None:
            return self
        self._release.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, name=f"jwks-{self.port}",
                                  daemon=True)
        thread.start()
        self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Release hanging requests and close the socket: the endpoint is now down."""
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler_for(server: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests += 1
            if server.mode == "hang":
                server._release.wait(HANG_SECONDS)
                return
            if server.mode == "error":
                self._send(503, b'{"error": "temporarily unavailable"}', "application/json")
            elif server.mode == "garbage":
                self._send(200, b"<html><body>Sign-in service maintenance</body></html>",
                           "text/html")
            else:
                self._send(200, json.dumps(server.jwks()).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: the suite's output is for failures

    return Handler
