"""End-user JWTs: who gets in, who gets 401, and users created on first sight."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meterbill.auth.models import User
from tests.conftest import JWT_SECRET, Service

STATUS = "/api/v1/billing/status"


def _unsigned(claims: dict[str, object]) -> str:
    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer " + _unsigned({"sub": "u", "exp": int(time.time()) + 60}),
        "Bearer " + jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, "wrong-secret-" * 4),
        "Bearer " + jwt.encode({"sub": "u", "exp": int(time.time()) - 60}, JWT_SECRET),
        "Bearer " + jwt.encode({"exp": int(time.time()) + 60}, JWT_SECRET),
        "Bearer " + jwt.encode({"sub": "u"}, JWT_SECRET),
        "Bearer " + jwt.encode({"sub": 42, "exp": int(time.time()) + 60}, JWT_SECRET),
        "Bearer not.a.token",
    ],
    ids=[
        "missing",
        "empty",
        "basic",
        "alg-none",
        "bad-signature",
        "expired",
        "no-sub",
        "no-exp",
        "numeric-sub",
        "garbage",
    ],
)
def test_bad_tokens_get_401(service: Service, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = service.client.get(STATUS, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] in ("unauthorized", "invalid_token")


def test_first_valid_token_creates_a_free_user(service: Service) -> None:
    response = service.client.get(STATUS, headers=service.auth("new-user", email="a@b.fr"))
    assert response.status_code == 200
    assert response.json()["plan"] == "free"
    with service.db.reading() as session:
        user = session.get(User, "new-user")
        assert user is not None and user.email == "a@b.fr" and user.plan == "free"


def _keypair_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key_tokens_with_audience_and_issuer(
    make_service: Callable[..., Service], algorithm: str
) -> None:
    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    service = make_service(
        jwt_secret="",
        jwt_public_key=_keypair_pem(private),
        jwt_audience="meterbill",
        jwt_issuer="https://auth.example",
    )
    good = {
        "sub": "pk-user",
        "exp": int(time.time()) + 60,
        "aud": "meterbill",
        "iss": "https://auth.example",
    }

    def call(claims: dict[str, object], key: object = private, alg: str = algorithm) -> int:
        token = jwt.encode(claims, key, algorithm=alg)  # type: ignore[arg-type]
        return service.client.get(STATUS, headers={"Authorization": f"Bearer {token}"}).status_code

    assert call(good) == 200
    assert call({**good, "aud": "someone-else"}) == 401
    assert call({**good, "iss": "https://evil.example"}) == 401
    # An HS256 token signed with the public key itself (algorithm confusion) is refused.
    assert call(good, key=JWT_SECRET, alg="HS256") == 401
