"""JWT checks: every forged kind is a 401 in the envelope; service tokens act for a named user."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from chat_service import create_app
from conversation_service import create_app as create_conversation_app
from shared.settings import ConfigError
from tests.api_client import envelope
from tests.conftest import ALICE, BOB, SECRET, base_environ

ROUTE = "/api/chat/sessions"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**overrides):
    now = int(time.time())
    return {"sub": ALICE, "iat": now, "exp": now + 300, **overrides}


@pytest.fixture(scope="module")
def rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def call(app, token: str | None, headers: dict | None = None):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return app.test_client().post(ROUTE, json={}, headers=headers)


def hs(payload: dict, key: str = SECRET, **kwargs) -> str:
    return jwt.encode(payload, key, algorithm="HS256", **kwargs)


def test_a_valid_token_passes(bare_app):
    # Past auth, the empty database answers: what matters is that it is not a 401.
    assert call(bare_app, hs(claims())).status_code != 401


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("a.b.c", id="three-garbage-parts"),
        pytest.param(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims())}.", id="alg-none"),
        pytest.param(hs(claims(), "another-secret-that-is-also-long-enough-0123"), id="wrong-key"),
        pytest.param(hs(claims(exp=int(time.time()) - 3600)), id="expired"),
        pytest.param(hs({"sub": ALICE}), id="missing-exp"),
        pytest.param(hs({"exp": int(time.time()) + 300}), id="missing-sub"),
        pytest.param(hs(claims(sub="")), id="empty-sub"),
        pytest.param(hs(claims(sub="x" * 65)), id="oversized-sub"),
        pytest.param(hs(claims(nbf=int(time.time()) + 3600)), id="not-yet-valid"),
        pytest.param(jwt.encode(claims(), SECRET * 2, algorithm="HS512"), id="alg-not-allowed"),
    ],
)
def test_forged_tokens_are_401(bare_app, token):
    response = call(bare_app, token)
    envelope(response, 401, 401)
    assert response.get_json()["message"] == "未认证"


def test_a_known_tokens_header_is_parsed_once_per_request_and_its_signature_checked_each_time(
    bare_app, monkeypatch
):
    """The header's alg is remembered per token (shared/auth.py); PyJWT's own decode is the one parse
    left per request. What is remembered is never trusted for more: the claims and the signature of
    every request are checked."""
    parsed = []
    original = jwt.api_jws.PyJWS._load

    def counting(self, token):
        parsed.append(token)
        return original(self, token)

    monkeypatch.setattr(jwt.api_jws.PyJWS, "_load", counting)
    token = hs(claims(jti="parsed-once"))
    for _ in range(3):
        assert call(bare_app, token).status_code != 401
    assert len(parsed) == 1 + 3  # our header read on the first request, then PyJWT's decode on each
    header, _payload, signature = token.split(".")
    envelope(call(bare_app, f"{header}.{_b64(claims(sub=BOB))}.{signature}"), 401, 401)


def test_a_tampered_payload_is_401(bare_app):
    header, _payload, signature = hs(claims()).split(".")
    forged = f"{header}.{_b64(claims(sub=BOB))}.{signature}"
    envelope(call(bare_app, forged), 401, 401)


def test_basic_auth_scheme_is_401(bare_app):
    response = bare_app.test_client().post(ROUTE, json={}, headers={"Authorization": f"Basic {hs(claims())}"})
    envelope(response, 401, 401)


def test_clock_leeway_accepts_a_token_just_expired(bare_app):
    assert call(bare_app, hs(claims(exp=int(time.time()) - 5))).status_code != 401


def test_rs256_with_a_public_key_and_no_rs_hs_confusion(tmp_path, rsa_keys):
    private, public = rsa_keys
    app = create_app(base_environ(f"sqlite:///{tmp_path}/a.sqlite3", JWT_SECRET="", JWT_PUBLIC_KEY=public))
    assert call(app, jwt.encode(claims(), private, algorithm="RS256")).status_code != 401
    # The classic confusion: HS256 signed with the public key as the HMAC secret.
    confused = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims())}"
    import hashlib
    import hmac

    signature = hmac.new(public.encode(), confused.encode(), hashlib.sha256).digest()
    forged = f"{confused}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    envelope(call(app, forged), 401, 401)
    envelope(call(app, hs(claims())), 401, 401)


def test_public_key_with_escaped_newlines_from_the_environment(tmp_path, rsa_keys):
    private, public = rsa_keys
    escaped = public.replace("\n", "\\n")
    app = create_app(base_environ(f"sqlite:///{tmp_path}/a.sqlite3", JWT_SECRET="", JWT_PUBLIC_KEY=escaped))
    assert call(app, jwt.encode(claims(), private, algorithm="RS256")).status_code != 401


def test_rs256_through_a_jwks_url(tmp_path, rsa_keys):
    from tests.fakes_jwks import serve_jwks

    private, public = rsa_keys
    with serve_jwks(public, kid="k1") as url:
        app = create_app(base_environ(f"sqlite:///{tmp_path}/a.sqlite3", JWT_SECRET="", JWT_JWKS_URL=url))
        good = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k1"})
        assert call(app, good).status_code != 401
        unknown_kid = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k2"})
        envelope(call(app, unknown_kid), 401, 401)


def test_issuer_and_audience_are_checked_when_configured(tmp_path):
    app = create_app(base_environ(f"sqlite:///{tmp_path}/a.sqlite3", JWT_ISSUER="auth", JWT_AUDIENCE="chat"))
    assert call(app, hs(claims(iss="auth", aud="chat"))).status_code != 401
    envelope(call(app, hs(claims(iss="evil", aud="chat"))), 401, 401)
    envelope(call(app, hs(claims(iss="auth", aud="other"))), 401, 401)
    envelope(call(app, hs(claims())), 401, 401)


def test_a_token_with_an_audience_passes_when_none_is_configured(bare_app):
    assert call(bare_app, hs(claims(aud="anything"))).status_code != 401


@pytest.mark.parametrize(
    "environ",
    [{"JWT_SECRET": "short"}, {"JWT_SECRET": "x" * 31}, {"JWT_SECRET": ""}],
    ids=["short", "31-bytes", "no-key-at-all"],
)
def test_refuses_to_start_with_a_weak_or_missing_key(tmp_path, environ):
    with pytest.raises(ConfigError, match="JWT_"):
        create_app(base_environ(f"sqlite:///{tmp_path}/a.sqlite3", **environ))


# --- service tokens ---------------------------------------------------------------------------


def test_a_service_token_acts_for_the_user_named_in_x_user_id(chat):
    service = chat.token("conversation_service", service=True)
    response = chat.post(
        "/api/chat/session", json={}, headers={"Authorization": f"Bearer {service}", "X-User-Id": BOB}
    )
    assert envelope(response, 200)["user_id"] == BOB


def test_a_service_token_without_x_user_id_is_forbidden_on_user_routes(chat):
    service = chat.token("conversation_service", service=True)
    envelope(chat.post("/api/chat/session", json={}, headers={"Authorization": f"Bearer {service}"}), 403)


def test_a_service_token_with_a_malformed_x_user_id_is_401(chat):
    service = chat.token("svc", service=True)
    headers = {"Authorization": f"Bearer {service}", "X-User-Id": "bad id with spaces"}
    envelope(chat.post("/api/chat/session", json={}, headers=headers), 401)


def test_a_user_token_cannot_act_for_another_user(chat):
    envelope(chat.post("/api/chat/session", json={}, headers={"X-User-Id": BOB}), 403)
    # Naming oneself is harmless.
    assert (
        envelope(chat.post("/api/chat/session", json={}, headers={"X-User-Id": ALICE}), 200)["user_id"]
        == ALICE
    )


def _raw(header: bytes) -> str:
    return base64.urlsafe_b64encode(header).rstrip(b"=").decode()


ODD_HEADERS = [
    pytest.param("eyJhbGciOlsiSFMyNTYiXX0.e30.AAAA", id="alg-list"),
    pytest.param(f"{_b64({'alg': {'HS256': 1}})}.e30.AAAA", id="alg-object"),
    pytest.param(f"{_b64({'alg': None})}.e30.AAAA", id="alg-null"),
    pytest.param(f"{_b64({'alg': 256})}.e30.AAAA", id="alg-number"),
    pytest.param(f"{_raw(b'[1,2]')}.e30.AAAA", id="header-array"),
    pytest.param(_raw(b'"HS256"') + ".e30.AAAA", id="header-string"),
    pytest.param(f"{_b64({'alg': 'HS256', 'kid': ['a']})}.e30.AAAA", id="kid-list"),
    pytest.param(f"{_b64({'alg': 'HS256', 'kid': 7})}.e30.AAAA", id="kid-number"),
    pytest.param(f"{_b64({'alg': 'HS256', 'crit': {'x': 1}})}.e30.AAAA", id="crit-object"),
    pytest.param("!!!.e30.AAAA", id="header-not-base64"),
    pytest.param(_raw(bytes([255, 254])) + ".e30.AAAA", id="header-not-utf8"),
    pytest.param(f"{_raw(b'{' * 100_000)}.e30.AAAA", id="header-deeply-nested"),
    pytest.param(f"{_b64({'alg': 'HS256', 'x': 'y' * 20_000})}.e30.AAAA", id="header-huge"),
    pytest.param(f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_raw(b'[1]')}.AAAA", id="payload-array"),
]


@pytest.mark.parametrize("token", ODD_HEADERS)
@pytest.mark.parametrize(
    "service, method, path",
    [("chat", "POST", "/api/chat/sessions"), ("conversation", "GET", "/api/ai/conversation/page")],
)
def test_odd_jose_headers_are_401_without_a_traceback(tmp_path, caplog, service, method, path, token):
    factory = create_app if service == "chat" else create_conversation_app
    app = factory(base_environ(f"sqlite:///{tmp_path}/bare.sqlite3"))
    response = app.test_client().open(path, method=method, headers={"Authorization": f"Bearer {token}"})
    envelope(response, 401, 401)
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"
