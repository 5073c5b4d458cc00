"""Tokens from an identity provider: keys from METERBILL_JWT_JWKS_URL, fetched once, cached,
fetched again when the provider rotates (a new `kid`); a configurable user-id claim; the
reason a token is refused is logged and never returned."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import Service
from tests.log_records import Records, records_of


class JwksServer:
    """A local identity provider's JWKS endpoint; `keys` can be swapped (rotation)."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def publish(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        published = []
        for kid, private in keys:
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
            published.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        self.keys = published


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.server.shutdown()


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def signed(private: rsa.RSAPrivateKey, kid: str, **claims: Any) -> dict[str, str]:
    body = {"sub": "idp-user", "exp": int(time.time()) + 600, **claims}
    token = jwt.encode(body, private, algorithm="RS256", headers={"kid": kid})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth_log() -> Iterator[Records]:
    with records_of("meterbill.auth", logging.INFO) as records:
        yield records


def test_keys_are_cached_and_fetched_again_when_the_provider_rotates(
    make_service: Callable[..., Service], jwks: JwksServer
) -> None:
    first, second = new_key(), new_key()
    jwks.publish(("key-1", first))
    service = make_service(jwt_secret="", jwt_jwks_url=jwks.url, jwt_jwks_cooldown_seconds=0)
    for _ in range(3):
        answer = service.client.get("/api/v1/billing/status", headers=signed(first, "key-1"))
        assert answer.status_code == 200, answer.text
    assert jwks.fetches == 1  # cached

    jwks.publish(("key-2", second))  # rotation: the old key is gone
    answer = service.client.get("/api/v1/billing/status", headers=signed(second, "key-2"))
    assert answer.status_code == 200, answer.text
    assert jwks.fetches == 2  # an unknown kid fetched the set again
    service.client.get("/api/v1/billing/status", headers=signed(second, "key-2"))
    assert jwks.fetches == 2

    forged = service.client.get("/api/v1/billing/status", headers=signed(new_key(), "key-2"))
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"


def test_refusal_reason_is_logged_never_returned(
    make_service: Callable[..., Service], jwks: JwksServer, auth_log: Records
) -> None:
    key = new_key()
    jwks.publish(("key-1", key))
    service = make_service(jwt_secret="", jwt_jwks_url=jwks.url, jwt_jwks_cooldown_seconds=0)
    expired = signed(key, "key-1", exp=int(time.time()) - 3600)
    unknown_kid = signed(key, "key-9")
    for headers in (expired, unknown_kid):
        answer = service.client.get("/api/v1/billing/status", headers=headers)
        assert answer.status_code == 401
        assert answer.json() == {"error": "Jeton invalide ou expiré", "code": "invalid_token"}
    reasons = [getattr(record, "reason", "") for record in auth_log.records]
    assert any("ExpiredSignature" in reason for reason in reasons), reasons
    assert any("kid" in reason.lower() or "signing key" in reason for reason in reasons), reasons
    assert all("Bearer" not in reason and "eyJ" not in reason for reason in reasons)


def test_user_id_claim_is_configurable(
    make_service: Callable[..., Service], jwks: JwksServer
) -> None:
    key = new_key()
    jwks.publish(("key-1", key))
    service = make_service(jwt_secret="", jwt_jwks_url=jwks.url, jwt_user_claim="user_id")
    answer = service.client.get(
        "/api/v1/billing/consumption", headers=signed(key, "key-1", user_id="clerk_42")
    )
    assert answer.status_code == 200 and answer.json()["user_id"] == "clerk_42"
    missing = service.client.get("/api/v1/billing/status", headers=signed(key, "key-1"))
    assert missing.status_code == 401


def test_unreachable_jwks_is_an_outage_not_a_bad_token(
    make_service: Callable[..., Service],
) -> None:
    from tests.conftest import free_port

    service = make_service(jwt_secret="", jwt_jwks_url=f"http://127.0.0.1:{free_port()}/jwks")
    answer = service.client.get("/api/v1/billing/status", headers=signed(new_key(), "k"))
    assert answer.status_code == 503 and answer.json()["code"] == "auth_unavailable"
