"""docker-compose.yml kept true without a Docker engine: it follows the compose specification,
gives every service the settings it needs, checks health on real routes, renders the same
gateway template as `make cluster`, and routes exactly the services we have."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from switchboard.certs import ensure_certificate
from switchboard.service import Service

from tests.harness import ROOT, STARTUP, TURN_CONF

COMPOSE = ROOT / "docker-compose.yml"
#: The override that adds a Redis replica and three sentinels (docs/operations.md).
COMPOSE_HA = ROOT / "docker-compose.ha.yml"
TEMPLATE = ROOT / "gateway" / "nginx.conf.template"
SENTINEL_URL = "redis+sentinel://sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/0/switchboard"
#: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def example_env() -> dict[str, str]:
    """.env.example's values, with the required secret filled in."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    values["TURN_SECRET"] = "an-example-secret"
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        value = env.get(name)
        unset = not value if operator in (":-", ":?") else value is None
        if operator and unset:
            if operator.endswith("?"):
                raise AssertionError(f"{name} is required: {argument}")
            return argument or ""
        return value or ""

    return INTERPOLATION.sub(one, text)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` as docker compose merges files: mappings key by key, the
    rest (a command, for one) replaced."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            result[key] = merged(base[key], value)
        else:
            result[key] = value
    return result


def compose(env: dict[str, str] | None = None, *, ha: bool = False) -> dict[str, Any]:
    """docker-compose.yml as compose reads it; ``ha``: with docker-compose.ha.yml over it."""
    env = env or example_env()
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), env))
    if ha:
        loaded = merged(loaded, yaml.safe_load(interpolate(COMPOSE_HA.read_text(), env)))
    return loaded


def services() -> dict[str, Any]:
    """Our services by name (the /api/<name>/ prefix), from their entry points."""
    return {entry.name: entry for entry in entry_points(group="switchboard.services")}


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_HA], ids=lambda path: path.name)
def test_compose_follows_the_compose_specification(path: Path) -> None:
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_compose_variable_is_documented_in_env_example() -> None:
    text = COMPOSE.read_text() + COMPOSE_HA.read_text()
    used = {match[0] for match in INTERPOLATION.findall(text)}
    documented = set(example_env())
    assert used == documented, (used - documented, documented - used)
    with pytest.raises(AssertionError, match="TURN_SECRET is required"):
        compose({**example_env(), "TURN_SECRET": ""})


@pytest.mark.parametrize("ha", [False, True], ids=["one-redis", "ha"])
@pytest.mark.parametrize("name", sorted(services()))
def test_each_service_gets_the_settings_it_needs_and_a_real_healthcheck(
    name: str, ha: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose(ha=ha)["services"][name]
    assert service["deploy"]["replicas"] >= 2
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    dockerfile = (ROOT / service["build"]["dockerfile"]).read_text()
    package = services()[name].value.split(".")[0]
    assert f'"-m", "{package}"' in dockerfile
    assert "uv sync --frozen" in dockerfile, "installed from the lock file"

    for variable in list(os.environ):
        monkeypatch.delenv(variable)
    for variable, value in service["environment"].items():
        monkeypatch.setenv(variable, "" if value is None else str(value))
    factory = services()[name].load()
    built: Service = factory()  # settings from this environment: a bad one raises here
    settings = built.settings
    assert type(settings).unknown_variables() == [], "no variable the service ignores"
    assert settings.host == "0.0.0.0"
    if ha:
        # Through the three sentinels, to the primary they watch; each message and name
        # acknowledged once the replica holds it too.
        for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
            assert service["depends_on"][sentinel]["condition"] == "service_healthy"
        assert settings.redis_url == SENTINEL_URL and settings.wait_replicas == 1
    else:
        assert settings.redis_url == "redis://redis:6379/0" and settings.wait_replicas == 0
    # Only the gateway may tell a service which client a connection carries.
    gateway = compose()["services"]["gateway"]["networks"]["default"]["ipv4_address"]
    assert settings.trusted_proxies == (gateway,)
    if name == "signal":
        assert settings.turn_urls and settings.turn_secret is not None  # type: ignore[attr-defined]

    probe = " ".join(service["healthcheck"]["test"])
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S+?)'", probe)
    assert url, probe
    assert int(url.group(1)) == settings.port
    routes = {getattr(route, "path", "") for route in built.http.routes}
    assert url.group(2) == f"/api/{name}/readyz" and url.group(2) in routes
    # A deployment does not describe its API to the world (API_DOCS defaults to false there).
    assert f"/api/{name}/docs" not in routes and f"/api/{name}/openapi.json" not in routes


def render(env: dict[str, str], output: Path) -> str:
    subprocess.run(
        ["sh", str(ROOT / "gateway" / "render.sh"), str(TEMPLATE), str(output)],
        env={"PATH": os.environ["PATH"], **env},
        check=True,
        capture_output=True,
        timeout=STARTUP,
    )
    return output.read_text()


def test_the_template_renders_for_compose_and_nginx_takes_it(tmp_path: Path) -> None:
    gateway = compose()["services"]["gateway"]
    env = {key: str(value) for key, value in gateway["environment"].items()}
    assert "None" not in env.values()
    rendered = render(env, tmp_path / "compose.conf")
    assert not [line for line in rendered.splitlines() if "${" in line and "#" not in line]
    for name in services():
        assert f"server {name}:" in rendered
    # nginx -t resolves upstream names; outside Docker, point them and the files at this machine.
    certificate, key = ensure_certificate(tmp_path / "certs")
    (tmp_path / "run").mkdir()
    local = rendered
    for name in services():
        local = local.replace(f"server {name}:", "server 127.0.0.1:")
    for path, here in [
        (env["TLS_CERT_FILE"], certificate),
        (env["TLS_KEY_FILE"], key),
        (env["GATEWAY_RUN_DIR"], tmp_path / "run"),
        (env["WEB_ROOT"], ROOT / "web"),
    ]:
        local = local.replace(path, str(here))
    (tmp_path / "local.conf").write_text(local)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    checked = subprocess.run(
        [
            nginx,
            "-t",
            "-c",
            str(tmp_path / "local.conf"),
            "-p",
            str(tmp_path / "run"),
            "-e",
            "stderr",
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_gateway_routes_exactly_our_services() -> None:
    template = TEMPLATE.read_text()
    routed = set(re.findall(r"location /api/(\w+)/ \{", template))
    assert routed == set(services())
    socketio = re.search(r"location ~ \^/api/\(([\w|]+)\)/socket", template)
    assert socketio and set(socketio.group(1).split("|")) == set(services())
    upstreams = set(re.findall(r"upstream (\w+) \{", template))
    # Each service's replicas twice: websockets by least_conn, engine.io sessions by their id.
    assert upstreams == set(services()) | {f"{name}_sessions" for name in services()}
    gateway = compose()["services"]["gateway"]
    for name in services():
        assert gateway["depends_on"][name]["condition"] in ("service_healthy", "service_started")
        assert f"{name.upper()}_UPSTREAMS" in gateway["environment"]
    # The cluster's Procfile runs two replicas of each, with the same packages.
    procfile = (ROOT / "Procfile").read_text()
    for entry in services().values():
        package = entry.value.split(".")[0]
        assert len(re.findall(rf"-m {package}$", procfile, re.MULTILINE)) == 2


def options_of(command: list[str], skip: int) -> dict[str, str]:
    """``--name value`` pairs of a command line, after its first ``skip`` words."""
    rest = command[skip:]
    assert all(word.startswith("--") for word in rest[::2]), rest
    return dict(zip(rest[::2], rest[1::2], strict=True))


def test_redis_runs_redis_node_sh_in_compose_and_make_cluster() -> None:
    """Every Redis data node is redis-server/node.sh, which the persistence and failover tests run
    from the Procfile: an append-only file written to disk every second, on a volume; capped,
    never evicting (evicting would free names, presence, a replica's liveness key or the
    ticker's lock behind the services' backs: full, Redis refuses writes instead, and clients
    are told)."""
    node = (ROOT / "redis-server" / "node.sh").read_text()
    for option in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
        assert option in node
    for ha in (False, True):
        redis = compose(ha=ha)["services"]["redis"]
        assert redis["command"][:3] == ["sh", "/etc/switchboard/redis-server/node.sh", "/data"]
        assert options_of(redis["command"], 3)["--maxmemory"] == example_env()["REDIS_MAXMEMORY"]
        assert "redis-data:/data" in redis["volumes"]
        assert "./redis-server:/etc/switchboard/redis-server:ro" in redis["volumes"]
        assert redis["user"] == "redis"
    procfile = (ROOT / "Procfile").read_text()
    assert (
        "redis: sh redis-server/node.sh $CLUSTER_DIR/redis --port $REDIS_PORT --bind 127.0.0.1 "
        "--maxmemory $REDIS_MAXMEMORY\n" in procfile
    )


def test_the_ha_override_runs_the_sentinel_topology_of_make_cluster() -> None:
    """docker-compose.ha.yml: the replica and the three sentinels as `make cluster REDIS_HA=1`
    runs them (redis-server/: node.sh, sentinel.sh and sentinel.conf), watching the same
    primary name that every service's REDIS_URL asks for."""
    found = compose(ha=True)["services"]
    replica = found["redis-replica"]
    assert replica["environment"]["REDIS_PRIMARY"] == "redis 6379"
    assert replica["command"][:3] == ["sh", "/etc/switchboard/redis-server/node.sh", "/data"]
    assert options_of(replica["command"], 3)["--replica-announce-ip"] == "redis-replica"
    assert options_of(found["redis"]["command"], 3)["--replica-announce-ip"] == "redis"
    assert "redis-replica-data:/data" in replica["volumes"]
    conf = (ROOT / "redis-server" / "sentinel.conf").read_text()
    assert "sentinel monitor switchboard @PRIMARY@ 2\n" in conf
    for n in (1, 2, 3):
        sentinel = found[f"sentinel-{n}"]
        assert sentinel["command"][:4] == [
            "sh",
            "/etc/switchboard/redis-server/sentinel.sh",
            "/data",
            "redis 6379",
        ]
        assert f"sentinel-{n}:/data" in sentinel["volumes"]
        assert f"sentinel-{n}:26379" in SENTINEL_URL
    procfile = (ROOT / "Procfile").read_text()
    assert 'env REDIS_PRIMARY="127.0.0.1 $REDIS_PORT" sh redis-server/node.sh' in procfile
    for n in (1, 2, 3):
        line = f'sentinel-{n}: sh redis-server/sentinel.sh $CLUSTER_DIR/sentinel-{n} "127.0.0.1 '
        assert line + '$REDIS_PORT"' in procfile
    assert "/0/switchboard}" in (ROOT / "scripts" / "cluster.sh").read_text()


def test_turn_runs_the_tested_hardening_in_compose_and_make_cluster() -> None:
    """turn/turnserver.conf, whose peer rules tests/signal/test_turn_relay.py proves on a real
    coturn, is what compose mounts and `make cluster` reads, with nothing that lifts them."""
    conf = TURN_CONF.read_text()
    options = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert not [option for option in options if option.startswith("allow")]
    for rule in ("127.0.0.0-", "10.0.0.0-", "::ffff:0.0.0.0-", "fe80::-", "fc00::-"):
        assert f"\ndenied-peer-ip={rule}" in conf
    turn = compose()["services"]["turn"]
    command = json.dumps(turn["command"])
    assert "allow" not in command and "-n" not in turn["command"]
    assert turn["command"][:2] == ["-c", "/etc/coturn/turnserver.conf"]
    assert "./turn/turnserver.conf:/etc/coturn/turnserver.conf:ro" in turn["volumes"]
    major, minor = (int(part) for part in turn["image"].split(":")[1].split(".")[:2])
    assert (major, minor) >= (4, 9), "coturn before 4.9.0 relays to ::ffff:127.0.0.1"
    signal = compose()["services"]["signal"]["environment"]
    assert f"--static-auth-secret={signal['TURN_SECRET']}" in command
    procfile = (ROOT / "Procfile").read_text()
    assert "turnserver -c turn/turnserver.conf " in procfile
