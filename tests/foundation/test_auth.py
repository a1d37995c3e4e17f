"""Issue 15: who may connect. Tokens signed by the operator's backend (HS256 with AUTH_SECRET, or
keys from a JWKS URL), checked by every service the same way; AUTH_MODE=token lets in only
tokens, AUTH_MODE=open everyone, but private-* rooms only to the tokens that grant them. Each
refusal has its code: token_required, token_invalid, token_expired, room_forbidden,
app_forbidden."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import socketio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from switchboard.auth import Verifier
from switchboard.errors import InputError
from switchboard.token import main as mint_main
from switchboard.token import mint

from tests.conftest import CHAT_PATH, CURSORS_PATH
from tests.harness import Client, ServiceProcess, free_port, until
from tests.signal.peers import SIGNAL_PATH

pytestmark = pytest.mark.asyncio

SECRET = "a-secret-of-the-tests-32-characters-at-least"
OTHER_SECRET = "another-secret-32-characters-at-the-least"
TICKER_PATH = "/api/ticker/socket.io"
#: Each service, where its socket.io is, and what a token must grant to enter ``room``.
SERVICES = {
    "chat": CHAT_PATH,
    "cursors": CURSORS_PATH,
    "signal": SIGNAL_PATH,
    "ticker": TICKER_PATH,
}


def verifier(**overrides: Any) -> Verifier:
    options: dict[str, Any] = {
        "secret": SECRET,
        "jwks_url": None,
        "issuer": None,
        "audience": "switchboard",
        "leeway": 5.0,
    }
    options.update(overrides)
    return Verifier(**options)


async def refusal_of(check: Verifier, token: Any) -> str:
    with pytest.raises(InputError) as refused:
        await check.verify(token)
    return refused.value.code


def unsigned(claims: dict[str, Any]) -> str:
    """A token with ``alg: none`` (no signature), as an attacker would make it."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


async def test_a_good_token_says_who_and_what_it_grants() -> None:
    token = mint(
        SECRET, sub="u-1", name="Ann", rooms={"chat": ["team-*", "lobby"]}, apps=("ticker",)
    )
    identity = await verifier().verify(token)
    assert (identity.sub, identity.name) == ("u-1", "Ann")
    assert identity.may_enter("chat", "team-red") and identity.may_enter("chat", "lobby")
    assert not identity.may_enter("chat", "lobby2") and not identity.may_enter("cursors", "lobby")
    assert identity.may_use("ticker") and not identity.may_use("remote")
    assert identity.expires > time.time()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("forged signature", "token_invalid"),
        ("wrong issuer", "token_invalid"),
        ("wrong audience", "token_invalid"),
        ("no audience", "token_invalid"),
        ("expired", "token_expired"),
        ("not yet valid", "token_invalid"),
        ("alg none", "token_invalid"),
        ("no exp", "token_invalid"),
        ("not a jwt", "token_invalid"),
        ("not a string", "token_invalid"),
        ("huge", "token_invalid"),
        ("bad grants", "token_invalid"),
        ("bad name", "token_invalid"),
    ],
)
async def test_a_bad_token_is_refused_with_its_code(case: str, code: str) -> None:
    now = time.time()
    token: Any = {
        "forged signature": mint(OTHER_SECRET, sub="u"),
        "wrong issuer": mint(SECRET, sub="u", issuer="https://elsewhere.example"),
        "wrong audience": mint(SECRET, sub="u", audience="another-product"),
        "no audience": jwt.encode({"sub": "u", "exp": now + 60}, SECRET, algorithm="HS256"),
        "expired": mint(SECRET, sub="u", now=now - 3600, ttl=60),
        "not yet valid": mint(SECRET, sub="u", now=now + 3600),
        "alg none": unsigned({"sub": "u", "aud": "switchboard", "exp": now + 60}),
        "no exp": jwt.encode({"sub": "u", "aud": "switchboard"}, SECRET, algorithm="HS256"),
        "not a jwt": "hello",
        "not a string": {"sub": "u"},
        "huge": "a" * 10_000,
        "bad grants": jwt.encode(
            {"sub": "u", "aud": "switchboard", "exp": now + 60, "grants": {"chat": "lobby"}},
            SECRET,
            algorithm="HS256",
        ),
        "bad name": mint(SECRET, sub="u", name="ann\u200b"),
    }[case]
    issuer = "https://id.example" if case == "wrong issuer" else None
    assert await refusal_of(verifier(issuer=issuer), token) == code


async def test_the_clock_leeway_and_the_issuer_when_set() -> None:
    now = time.time()
    check = verifier(issuer="https://id.example", leeway=30.0)
    # Expired 10 s ago, or valid from 10 s from now: within 30 s of leeway, accepted.
    for token in (
        mint(SECRET, sub="u", now=now - 70, ttl=60, issuer="https://id.example"),
        mint(SECRET, sub="u", now=now + 10, issuer="https://id.example"),
    ):
        assert (await check.verify(token)).sub == "u"
    assert await refusal_of(check, mint(SECRET, sub="u")) == "token_invalid"  # no iss


class Jwks:
    """An identity provider's JWKS endpoint on a local port, whose keys a test rotates."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.keys: dict[str, Any] = {}
        self.fetches = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/.well-known/jwks.json"

    def publish(self, kid: str, private_key: Any, alg: str) -> None:
        public = json.loads(
            jwt.algorithms.get_default_algorithms()[alg].to_jwk(private_key.public_key())
        )
        self.keys[kid] = {**public, "kid": kid, "use": "sig", "alg": alg}

    async def _serve(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": list(self.keys.values())})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def jwks() -> AsyncIterator[Jwks]:
    server = Jwks()
    await server.start()
    yield server
    await server.stop()


def signed(private_key: Any, alg: str, kid: str, **claims: Any) -> str:
    body = {"sub": "u", "aud": "switchboard", "exp": int(time.time()) + 300, **claims}
    return jwt.encode(body, private_key, algorithm=alg, headers={"kid": kid})


async def test_keys_from_a_jwks_in_each_algorithm_and_a_rotation_without_a_restart(
    jwks: Jwks,
) -> None:
    keys = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    for alg, key in keys.items():
        jwks.publish(f"k-{alg}", key, alg)
    check = verifier(secret=None, jwks_url=jwks.url, refetch=0.0)
    for alg, key in keys.items():
        assert (await check.verify(signed(key, alg, f"k-{alg}", sub=alg))).sub == alg
    assert jwks.fetches == 1, "the keys are kept"

    # The provider rotates: a new key, and the old one withdrawn. A token of the new key makes
    # the service fetch the keys again; one of the withdrawn key no longer passes once it has.
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.keys.clear()
    jwks.publish("k-new", new, "RS256")
    assert (await check.verify(signed(new, "RS256", "k-new", sub="rotated"))).sub == "rotated"
    assert jwks.fetches == 2
    old = signed(keys["RS256"], "RS256", "k-RS256")
    assert await refusal_of(check, old) == "token_invalid"
    # A key of the JWKS cannot be used as an HS256 secret (algorithm confusion), nor can an
    # HS256 token pass where only the JWKS is configured.
    assert await refusal_of(check, mint(SECRET, sub="u")) == "token_invalid"


async def test_made_up_key_ids_do_not_make_a_fetch_each(jwks: Jwks) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks.publish("k", key, "ES256")
    check = verifier(secret=None, jwks_url=jwks.url)  # the default: one fetch in 30 s at most
    assert (await check.verify(signed(key, "ES256", "k"))).sub == "u"
    for n in range(20):
        assert await refusal_of(check, signed(key, "ES256", f"made-up-{n}")) == "token_invalid"
    assert jwks.fetches == 1


async def test_the_mint_command_prints_a_token_the_services_accept(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTH_SECRET", SECRET)
    monkeypatch.delenv("AUTH_AUDIENCE", raising=False)
    monkeypatch.delenv("AUTH_ISSUER", raising=False)
    argv = ["--sub", "ann", "--name", "Ann", "--room", "chat:team-*", "--app", "remote"]
    assert mint_main(argv) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="switchboard")
    assert claims["grants"] == {"chat": ["team-*"], "remote": True}
    assert (claims["sub"], claims["name"], claims["exp"] - claims["iat"]) == ("ann", "Ann", 3600)
    monkeypatch.setenv("AUTH_SECRET", "short")
    assert mint_main(["--sub", "ann"]) == 2
    with pytest.raises(SystemExit):
        mint_main(["--sub", "ann", "--room", "nowhere:lobby"])


# --- every service, as deployed -----------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """`make run`'s one process (every service) in each mode, with the tests' secret: the URL
    of each mode's."""
    log_dir = tmp_path_factory.mktemp("auth")
    started: dict[str, ServiceProcess] = {}
    try:
        for mode in ("open", "token"):
            process = started[mode] = ServiceProcess(
                "switchboard.embedded",
                log_dir,
                {
                    "CERT_DIR": str(log_dir / "certs"),
                    "AUTH_MODE": mode,
                    "AUTH_SECRET": SECRET,
                    # No leeway: a token of two seconds expires after two seconds.
                    "AUTH_LEEWAY": "0",
                    "TURN_URLS": "turn:127.0.0.1:3478?transport=udp",
                    "TURN_SECRET": "a-turn-secret-of-the-tests",
                },
                name=f"embedded-{mode}",
            )
        for process in started.values():
            process.wait_ready("/api/chat", scheme="https")
        yield {mode: f"https://localhost:{process.port}" for mode, process in started.items()}
    finally:
        for process in started.values():
            process.stop()


async def connect(url: str, service: str, **auth: Any) -> tuple[Client, str | None]:
    """A client of ``service`` at ``url`` with ``auth``: connected, or the code it was refused."""
    client = Client(url, SERVICES[service])
    try:
        await client.connect(auth=auth)
    except socketio.exceptions.ConnectionError:
        return client, client.connect_error["data"]["error"]
    return client, None


async def each_answered(
    url: str, service: str, cases: list[tuple[dict[str, Any], str | None]]
) -> None:
    """Each ``(auth, code)`` connects to ``service`` and is refused with ``code`` (None: let
    in); every client is closed after."""
    opened = []
    try:
        for auth, code in cases:
            client, refused = await connect(url, service, **auth)
            opened.append(client)
            assert refused == code, (auth, refused)
    finally:
        for client in opened:
            await client.close()


def grants(service: str, room: str) -> dict[str, Any]:
    return {"apps": ("ticker",)} if service == "ticker" else {"rooms": {service: [room]}}


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_token_mode_lets_in_only_the_tokens_that_grant(
    guarded: dict[str, str], service: str, unique: str
) -> None:
    url = guarded["token"]
    room = f"team-{unique}"
    good = mint(SECRET, sub="ann", **grants(service, f"team-{unique[:3]}*"))
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"room": room}, "token_required"),
        ({"room": room, "token": mint(OTHER_SECRET, sub="ann")}, "token_invalid"),
        ({"room": room, "token": good + "x"}, "token_invalid"),
        ({"room": room, "token": mint(SECRET, sub="ann", now=time.time() - 7200)}, "token_expired"),
        ({"room": room, "token": good}, None),
    ]
    if service == "ticker":
        cases.append(({"token": mint(SECRET, sub="ann")}, "app_forbidden"))
    else:
        cases.append(({"room": f"elsewhere-{unique}", "token": good}, "room_forbidden"))
    await each_answered(url, service, cases)


async def test_token_mode_lets_in_the_screens_the_token_grants_and_their_phones(
    guarded: dict[str, str],
) -> None:
    """The remote control: a screen needs a token granting ``remote``; its phone is let in by
    the pairing the screen shows (the phone's user need not be signed in)."""
    url = guarded["token"]
    opened: list[Client] = []
    try:
        for token, code in [
            (None, "token_required"),
            (mint(SECRET, sub="ann", rooms={"cursors": ["*"]}), "app_forbidden"),
        ]:
            screen = Client(url, CURSORS_PATH, namespace="/remote")
            opened.append(screen)
            with pytest.raises(socketio.exceptions.ConnectionError):
                await screen.connect(auth={"role": "desktop", "token": token})
            assert screen.connect_error["data"]["error"] == code
        screen = Client(url, CURSORS_PATH, namespace="/remote")
        opened.append(screen)
        await screen.connect(
            auth={"role": "desktop", "token": mint(SECRET, sub="ann", apps=("remote",))}
        )
        (pairing,) = await screen.wait("pairing")
        phone = Client(url, CURSORS_PATH, namespace="/remote")
        opened.append(phone)
        await phone.connect(auth={"role": "controller", "pair": pairing["url"].split("#pair=")[1]})
        await phone.wait("paired")
    finally:
        for client in opened:
            await client.close()


@pytest.mark.parametrize("service", ["chat", "cursors", "signal"])
async def test_open_mode_keeps_private_rooms_for_the_tokens_that_grant_them(
    guarded: dict[str, str], service: str, unique: str
) -> None:
    url = guarded["open"]
    private = f"private-{unique}"
    granting = mint(SECRET, sub="ann", rooms={service: ["private-*"]})
    other = mint(SECRET, sub="bob", rooms={service: [f"team-{unique}"]})
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"room": f"public-{unique}"}, None),  # anyone, as before
        ({"room": f"public-{unique}", "token": other}, None),  # a token is no limit there
        ({"room": f"public-{unique}", "token": "forged"}, "token_invalid"),
        ({"room": private}, "token_required"),
        ({"room": private, "token": other}, "room_forbidden"),
        ({"room": private, "token": granting}, None),
    ]
    await each_answered(url, service, cases)


async def test_token_mode_without_a_key_stops_the_start_clearly(tmp_path: Path) -> None:
    process = ServiceProcess("chat_service", tmp_path, {"AUTH_MODE": "token"})
    assert process.popen.wait(60) != 0
    assert "AUTH_MODE=token needs AUTH_SECRET or AUTH_JWKS_URL" in process.log()


async def test_a_connection_is_told_before_its_token_expires_and_a_refresh_keeps_it(
    guarded: dict[str, str], unique: str
) -> None:
    """Two people whose tokens expire in two seconds: both are told before (``token_expiring``);
    Ann sends a fresh token (``refresh``) and stays; Bob does not, and is disconnected with
    ``token_expired`` when his expires."""
    url, room = guarded["token"], f"team-{unique}"
    now = time.time()
    short = {"rooms": {"chat": [room]}, "ttl": 2, "now": now}
    ann, refused = await connect(url, "chat", room=room, token=mint(SECRET, sub="ann", **short))
    assert refused is None
    bob, refused = await connect(url, "chat", room=room, token=mint(SECRET, sub="bob", **short))
    assert refused is None
    try:
        for person in (ann, bob):
            (notice,) = await person.wait("token_expiring")
            assert notice["expires"] == int(now) + 2
        # A fresh token must be the same user's and grant the room it is in.
        for token, code in [
            (mint(SECRET, sub="bob", rooms={"chat": [room]}), "token_invalid"),
            (mint(SECRET, sub="ann", rooms={"chat": ["elsewhere"]}), "room_forbidden"),
            ("forged", "token_invalid"),
        ]:
            assert (await ann.call("refresh", token))["error"] == code
        fresh = mint(SECRET, sub="ann", rooms={"chat": [room]}, ttl=3600)
        answer = await ann.call("refresh", fresh)
        assert answer["ok"] is True and answer["expires"] > now + 3000

        (error,) = await bob.wait("chat_error", lambda e: e["error"] == "token_expired")
        assert error["event"] == "refresh"
        await until(lambda: not bob.sio.connected, "Bob disconnected")
        # Ann's first token expired with Bob's: she is still here, and talks.
        await ann.call("name", f"ann-{unique}")
        assert (await ann.call("message", "still here"))["ok"] is True
        assert ann.sio.connected
    finally:
        await ann.close()
        await bob.close()


async def test_a_connection_without_a_token_cannot_refresh(
    guarded: dict[str, str], unique: str
) -> None:
    client, refused = await connect(guarded["open"], "chat", room=f"public-{unique}")
    assert refused is None
    try:
        answer = await client.call("refresh", mint(SECRET, sub="ann"))
        assert answer["error"] == "token_invalid"
    finally:
        await client.close()


async def test_turn_credentials_go_to_a_signed_in_caller_and_name_the_user(
    guarded: dict[str, str], unique: str
) -> None:
    """In token mode the TURN credentials (``iceServers``) need a connection, which needs a
    token; their username carries the user, for coturn's log."""
    room = f"call-{unique}"
    token = mint(SECRET, sub="ann@example.org", rooms={"signal": [room]})
    caller, refused = await connect(guarded["token"], "signal", room=room, token=token)
    assert refused is None
    try:
        answer = await caller.call("iceServers")
        (turn,) = [server for server in answer["iceServers"] if "username" in server]
        expiry, user = turn["username"].split(":", 1)
        assert int(expiry) > time.time() and user == f"ann%40example.org/{caller.sid}"
    finally:
        await caller.close()


ISSUER = "https://id.example"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`make run`'s one process in token mode with keys from an identity provider's JWKS (on a
    port the test serves) and its issuer: its URL, and the JWKS's port."""
    log_dir = tmp_path_factory.mktemp("auth-jwks")
    port = free_port()
    process = ServiceProcess(
        "switchboard.embedded",
        log_dir,
        {
            "CERT_DIR": str(log_dir / "certs"),
            "AUTH_MODE": "token",
            "AUTH_JWKS_URL": f"http://127.0.0.1:{port}/.well-known/jwks.json",
            "AUTH_ISSUER": ISSUER,
            # Every unknown key id fetches the keys again (the default, once in 30 s, is the
            # verifier's test above).
            "AUTH_JWKS_REFETCH": "0",
        },
        name="embedded-jwks",
    )
    try:
        process.wait_ready("/api/chat", scheme="https")
        yield f"https://localhost:{process.port}", port
    finally:
        process.stop()


async def test_every_service_follows_a_key_rotation_at_the_jwks_and_checks_the_issuer(
    keyed: tuple[str, int], unique: str
) -> None:
    """The identity provider rotates its key while the services run: tokens of the new key are
    let in at once (each service fetches the keys again), those of the withdrawn key refused;
    a token of another issuer is refused by every service."""
    url, port = keyed
    provider = Jwks(port)
    await provider.start()
    try:
        room = f"team-{unique}"

        def token(key: Any, alg: str, kid: str, service: str, issuer: str = ISSUER) -> str:
            granted = {"ticker": True} if service == "ticker" else {service: [room]}
            return signed(key, alg, kid, iss=issuer, grants=granted)

        old = ec.generate_private_key(ec.SECP256R1())
        provider.publish("k-old", old, "ES256")
        for service in sorted(SERVICES):
            await each_answered(
                url,
                service,
                [({"room": room, "token": token(old, "ES256", "k-old", service)}, None)],
            )

        new = ed25519.Ed25519PrivateKey.generate()
        provider.keys.clear()
        provider.publish("k-new", new, "EdDSA")
        for service in sorted(SERVICES):
            cases: list[tuple[dict[str, Any], str | None]] = [
                ({"room": room, "token": token(new, "EdDSA", "k-new", service)}, None),
                ({"room": room, "token": token(old, "ES256", "k-old", service)}, "token_invalid"),
                (
                    {
                        "room": room,
                        "token": token(new, "EdDSA", "k-new", service, "https://x.example"),
                    },
                    "token_invalid",
                ),
            ]
            await each_answered(url, service, cases)
    finally:
        await provider.stop()
