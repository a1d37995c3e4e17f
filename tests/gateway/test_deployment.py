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
TEMPLATE = ROOT / "gateway" / "nginx.conf.template"
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


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE.read_text(), env or example_env()))
    return loaded


def services() -> dict[str, Any]:
    """Our services by name (the /api/<name>/ prefix), from their entry points."""
    return {entry.name: entry for entry in entry_points(group="switchboard.services")}


def test_compose_follows_the_compose_specification() -> None:
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_compose_variable_is_documented_in_env_example() -> None:
    used = {match[0] for match in INTERPOLATION.findall(COMPOSE.read_text())}
    documented = set(example_env())
    assert used == documented, (used - documented, documented - used)
    with pytest.raises(AssertionError, match="TURN_SECRET is required"):
        compose({**example_env(), "TURN_SECRET": ""})


@pytest.mark.parametrize("name", sorted(services()))
def test_each_service_gets_the_settings_it_needs_and_a_real_healthcheck(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = compose()["services"][name]
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
    assert settings.redis_url == "redis://redis:6379/0" and settings.host == "0.0.0.0"
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
    assert upstreams == set(services())
    gateway = compose()["services"]["gateway"]
    for name in services():
        assert gateway["depends_on"][name]["condition"] in ("service_healthy", "service_started")
        assert f"{name.upper()}_UPSTREAMS" in gateway["environment"]
    # The cluster's Procfile runs two replicas of each, with the same packages.
    procfile = (ROOT / "Procfile").read_text()
    for entry in services().values():
        package = entry.value.split(".")[0]
        assert len(re.findall(rf"-m {package}$", procfile, re.MULTILINE)) == 2


def test_redis_is_capped_and_never_evicts() -> None:
    """Evicting would free names, presence or a replica's liveness key, or the ticker's lock,
    behind the services' backs; full, Redis refuses writes instead, and clients are told."""
    command = compose()["services"]["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--maxmemory"] == example_env()["REDIS_MAXMEMORY"]
    assert options["--maxmemory-policy"] == "noeviction"
    procfile = (ROOT / "Procfile").read_text()
    assert "--maxmemory $REDIS_MAXMEMORY --maxmemory-policy noeviction" in procfile


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
