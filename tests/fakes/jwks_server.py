"""A local OIDC-style JWKS endpoint in a thread, with RSA keys generated in the test, to sign tokens."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


class SigningKey:
    def __init__(self) -> None:
        self.kid = uuid.uuid4().hex[:12]
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**doc, "kid": self.kid, "use": "sig", "alg": "RS256"}


class JwksServer:
    """Serves ``/jwks.json`` with the current keys; ``rotate()`` replaces them."""

    def __init__(self, issuer: str = "https://idp.test/", audience: str = "aios") -> None:
        self.issuer, self.audience = issuer, audience
        self.keys = [SigningKey()]
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                server.fetches += 1
                body = json.dumps({"keys": [k.jwk() for k in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def rotate(self) -> SigningKey:
        self.keys = [SigningKey()]
        return self.keys[0]

    def token(self, key: SigningKey | None = None, *, ttl_s: int = 300, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": self.audience, "sub": "user-1", "iat": now, "exp": now + ttl_s,
                   "aios_role": "viewer", "aios_projects": ["*"], **claims}
        return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid})
