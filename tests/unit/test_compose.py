"""Static checks of the distributed stack description (``docker-compose.kafka.yml`` and friends).

No Docker engine runs on the project's machines, so ``docker compose config`` can't validate the
file. These tests do what they can without one: parse it, resolve ``${VAR:-default}`` the way
compose does on a machine with no ``.env``, and check that the AIOS processes are wired to
services and ports that really exist, with settings the code really reads and commands the CLI
really has.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from aios.cli import cli
from aios.streams.settings import load_settings
from tests.unit.deployment_checks import assert_cli_command, assert_real_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.kafka.yml"
PROMETHEUS_FILE = ROOT / "infra/prometheus/prometheus.yml"
GRAFANA_DATASOURCES_FILE = ROOT / "infra/grafana/provisioning/datasources/datasources.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONNECTOR_CONFIGS = ROOT / "infra/connect/connectors"
CONNECT_PLUGINS = ROOT / "infra/connect/plugins"
MAVEN_NS = "http://maven.apache.org/POM/4.0.0"

INFRA_SERVICES = (
    "kafka",
    "schema-registry",
    "connect",
    "redis",
    "clickhouse",
    "qdrant",
    "prometheus",
    "grafana",
)


def _worker_names() -> tuple[str, ...]:
    """The processors `aios worker NAME` accepts, read from the CLI's own click tree."""
    worker = cli.get_command(click.Context(cli), "worker")
    assert worker is not None, "the CLI has no `worker` command"
    [name] = [p for p in worker.params if isinstance(p, click.Argument)]
    assert isinstance(name.type, click.Choice), "`aios worker NAME` should offer a choice of processors"
    return tuple(str(choice) for choice in name.type.choices)


# `aios worker <name>` runs as compose service `aios-<name>`, for every processor the CLI offers.
AIOS_WORKERS = _worker_names()
AIOS_TOPICS_SERVICE = "aios-topics"
AIOS_API_SERVICE = "aios-api"
API_PORT = 8000
METRICS_PORT = 9464
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a process in a container must listen on to be reached

# Ports an image listens on inside the network without the compose file saying so
# (`ports`/`expose` entries are added to these). Kafka's ports come from KAFKA_LISTENERS instead.
KNOWN_CONTAINER_PORTS: dict[str, set[int]] = {
    "schema-registry": {8081},
    "connect": {8083},
    "redis": {6379},
    "clickhouse": {8123, 9000, 9009},
    "qdrant": {6333, 6334},
    "prometheus": {9090},
    "grafana": {3000},
}

DEPENDS_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# --------------------------------------------------------------------------- helpers


_VAR = re.compile(
    r"\$\$"  # escaped dollar
    r"|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: str, env: dict[str, str], where: str) -> str:
    """Resolve compose-style ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?err}``, ``$$``."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in ("-", ":-"):
            return arg if empty else str(current)
        if op in ("?", ":?"):
            if empty:
                pytest.fail(f"{where}: required variable ${{{name}}} is not set ({arg or 'no message'})")
            return str(current)
        if op in ("+", ":+"):
            return "" if empty else arg
        # A bare ${VAR} with nothing set resolves to "" (compose warns); every var we use has a default.
        pytest.fail(
            f"{where}: ${{{name}}} has no default; write ${{{name}:-…}} so the stack starts without a .env"
        )

    return _VAR.sub(repl, value)


def resolve(node: Any, env: dict[str, str], where: str = "") -> Any:
    if isinstance(node, dict):
        return {key: resolve(value, env, f"{where}.{key}") for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value, env, f"{where}[{i}]") for i, value in enumerate(node)]
    if isinstance(node, str):
        return interpolate(node, env, where.lstrip("."))
    return node


def env_of(service: dict[str, Any]) -> dict[str, Any]:
    """A service's ``environment`` as a dict (compose accepts a mapping or a list of K=V)."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return dict(environment)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def parse_port(entry: Any, where: str) -> tuple[str | None, int | None, int, str]:
    """(host_ip, host_port, container_port, protocol) of one ``ports`` entry (short or long syntax)."""
    if isinstance(entry, dict):
        published = entry.get("published")
        return (
            entry.get("host_ip"),
            int(published) if published is not None else None,
            int(entry["target"]),
            entry.get("protocol", "tcp"),
        )
    text, _, protocol = str(entry).partition("/")
    parts = text.rsplit(":", 2)
    if any("-" in part for part in parts[-2:]):
        pytest.fail(f"{where}: port ranges ({entry!r}) are not supported by these checks")
    if len(parts) == 1:
        return None, None, int(parts[0]), protocol or "tcp"
    if len(parts) == 2:
        return None, int(parts[0]), int(parts[1]), protocol or "tcp"
    return parts[0], int(parts[1]), int(parts[2]), protocol or "tcp"


def host_port_pairs(value: str) -> Iterator[tuple[str, int]]:
    """``host:port[,host:port…]`` (optionally ``SCHEME://host:port``) → (host, port) pairs."""
    for item in value.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        host, _, port = item.rpartition(":")
        yield host, int(port)


def kafka_listeners(kafka_env: dict[str, Any], key: str) -> dict[str, tuple[str, int]]:
    """KAFKA_LISTENERS / KAFKA_ADVERTISED_LISTENERS → {name: (host, port)}."""
    listeners = {}
    for item in str(kafka_env.get(key, "")).split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        listeners[name] = (host, int(port))
    return listeners


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"{COMPOSE_FILE} is missing"
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), f"{COMPOSE_FILE.name} must be a YAML mapping"
    return document


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as compose sees it on a machine with no .env and no overrides in the shell."""
    resolved: dict[str, Any] = resolve(raw, env={})
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose.get("services")
    assert isinstance(services, dict) and services, f"{COMPOSE_FILE.name} has no services"
    return services


@pytest.fixture(scope="module")
def aios_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Services running the project's own image (built from this repository)."""
    found = {name: svc for name, svc in services.items() if "build" in svc}
    assert found, "no service is built from this repository (`build: .`)"
    return found


@pytest.fixture(scope="module")
def aios_env(aios_services: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The shared AIOS environment (asserted identical across services in its own test)."""
    return {key: str(value) for key, value in env_of(aios_services[f"aios-{AIOS_WORKERS[0]}"]).items()}


def listening_ports(services: dict[str, dict[str, Any]], name: str) -> set[int]:
    service = services[name]
    ports = set(KNOWN_CONTAINER_PORTS.get(name, set()))
    ports |= {parse_port(p, f"{name}.ports")[2] for p in service.get("ports", [])}
    ports |= {int(str(p).partition("/")[0]) for p in service.get("expose", [])}
    if name == "kafka":
        ports |= {port for _, port in kafka_listeners(env_of(service), "KAFKA_LISTENERS").values()}
    return ports


def assert_endpoint(services: dict[str, dict[str, Any]], var: str, host: str, port: int) -> None:
    assert host in services, (
        f"{var} points at host {host!r}, which is not a compose service ({sorted(services)})"
    )
    listening = listening_ports(services, host)
    assert port in listening, (
        f"{var} points at {host}:{port}, but service {host!r} listens on {sorted(listening)} "
        "(from its ports/expose, its listeners, or KNOWN_CONTAINER_PORTS in this test)"
    )


# --------------------------------------------------------------------------- structure


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    required = [*INFRA_SERVICES, AIOS_TOPICS_SERVICE, AIOS_API_SERVICE, *(f"aios-{w}" for w in AIOS_WORKERS)]
    missing = [name for name in required if name not in services]
    assert not missing, f"{COMPOSE_FILE.name} lacks services {missing}; it has {sorted(services)}"


def test_aios_services_run_the_local_image_with_their_commands(
    services: dict[str, dict[str, Any]],
) -> None:
    expected = {AIOS_TOPICS_SERVICE: ["topics", "create"], AIOS_API_SERVICE: ["api"]}
    expected |= {f"aios-{w}": ["worker", w] for w in AIOS_WORKERS}
    for name, command in expected.items():
        service = services[name]
        build = service.get("build")
        context = build.get("context") if isinstance(build, dict) else build
        assert context in (".", "./"), f"{name}: expected `build: .` (the aios image), got build={build!r}"
        assert command_of(service)[: len(command)] == command, (
            f"{name}: command should start with {command} (entrypoint `aios`), got {command_of(service)}"
        )
    topics_deps = services[AIOS_TOPICS_SERVICE].get("depends_on", {})
    assert (
        isinstance(topics_deps, dict) and topics_deps.get("kafka", {}).get("condition") == "service_healthy"
    ), f"{AIOS_TOPICS_SERVICE} must wait for kafka to be healthy, got depends_on={topics_deps!r}"
    assert str(services[AIOS_TOPICS_SERVICE].get("restart", "no")) == "no", (
        f"{AIOS_TOPICS_SERVICE} is one-shot: it must not restart"
    )


def test_dependencies_name_existing_services(services: dict[str, dict[str, Any]]) -> None:
    problems = []
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        entries = (
            {dep: {"condition": "service_started"} for dep in depends}
            if isinstance(depends, list)
            else depends
        )
        for dep, spec in entries.items():
            if dep not in services:
                problems.append(f"{name} depends on {dep!r}, which is not a service")
                continue
            condition = (spec or {}).get("condition", "service_started")
            if condition not in DEPENDS_CONDITIONS:
                problems.append(f"{name} -> {dep}: unknown condition {condition!r}")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
    assert not problems, "depends_on problems:\n  " + "\n  ".join(problems)


def test_named_volumes_are_declared_and_bind_mounts_exist(compose: dict[str, Any]) -> None:
    declared = set((compose.get("volumes") or {}).keys())
    problems = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":", 1)[0]
            if source.startswith((".", "/")):
                if source.startswith(".") and not (ROOT / source).exists():
                    problems.append(f"{name}: bind mount {source} does not exist in the repository")
            elif source not in declared:
                problems.append(f"{name}: named volume {source!r} is not declared under top-level volumes")
    assert not problems, "volume problems:\n  " + "\n  ".join(problems)


def test_environment_values_are_compose_scalars(services: dict[str, dict[str, Any]]) -> None:
    """Compose rejects YAML booleans in `environment` (write "false", not false)."""
    bad = [
        f"{name}.{key}={value!r}"
        for name, service in services.items()
        for key, value in env_of(service).items()
        if isinstance(value, bool) or not isinstance(value, str | int | float | type(None))
    ]
    assert not bad, f"environment values must be strings or numbers: {bad}"


def test_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[tuple[int, str], str] = {}
    clashes = []
    for name, service in services.items():
        for entry in service.get("ports", []):
            _, host_port, _, protocol = parse_port(entry, f"{name}.ports")
            if host_port is None:
                continue
            key = (host_port, protocol)
            if key in seen:
                clashes.append(f"host port {host_port}/{protocol}: {seen[key]} and {name}")
            seen[key] = name
    assert not clashes, "host port clashes:\n  " + "\n  ".join(clashes)


# --------------------------------------------------------------------------- kafka


def test_kafka_is_single_node_kraft_without_auto_create(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    env = env_of(kafka)
    assert str(kafka.get("image", "")).startswith("apache/kafka:3.9"), f"kafka image: {kafka.get('image')!r}"
    assert str(env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE")).lower() == "false", (
        "kafka must run with KAFKA_AUTO_CREATE_TOPICS_ENABLE=false (topics come from `aios topics create`)"
    )
    roles = {r.strip() for r in str(env.get("KAFKA_PROCESS_ROLES", "")).split(",")}
    assert roles == {"broker", "controller"}, f"KAFKA_PROCESS_ROLES should be broker,controller, got {roles}"
    assert not any(key.startswith("KAFKA_ZOOKEEPER") for key in env), "KRaft mode: no ZooKeeper settings"
    assert "KAFKA_NODE_ID" in env and env.get("CLUSTER_ID"), "KRaft needs KAFKA_NODE_ID and CLUSTER_ID"

    listeners = kafka_listeners(env, "KAFKA_LISTENERS")
    controller = str(env.get("KAFKA_CONTROLLER_LISTENER_NAMES", ""))
    assert controller in listeners, f"controller listener {controller!r} not in KAFKA_LISTENERS {listeners}"
    voters = str(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", ""))
    node, _, address = voters.partition("@")
    assert node == str(env["KAFKA_NODE_ID"]), f"quorum voter {voters!r} must be this node"
    assert address == f"kafka:{listeners[controller][1]}", (
        f"quorum voter {voters!r} must be kafka's controller port"
    )

    advertised = kafka_listeners(env, "KAFKA_ADVERTISED_LISTENERS")
    assert ("kafka", 29092) in advertised.values(), f"need an internal listener kafka:29092, got {advertised}"
    assert ("localhost", 9092) in advertised.values(), (
        f"need a host listener localhost:9092, got {advertised}"
    )
    for name, (_, port) in advertised.items():
        assert listeners.get(name, (None, None))[1] == port, f"advertised {name} port {port} is not bound"
    host_ports = {parse_port(p, "kafka.ports")[1:3] for p in kafka.get("ports", [])}
    assert (9092, 9092) in host_ports, f"kafka must publish 9092 on the host, got {kafka.get('ports')}"
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME") in listeners, "inter-broker listener must be defined"
    assert "healthcheck" in kafka, "kafka needs a healthcheck (others wait for service_healthy)"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert str(env.get(key)) == "1", f"single node: {key} must be 1, got {env.get(key)!r}"


# --------------------------------------------------------------------------- AIOS environment


def test_aios_services_share_one_environment(
    raw: dict[str, Any], aios_services: dict[str, dict[str, Any]]
) -> None:
    shared = raw.get("x-aios-env")
    assert isinstance(shared, dict) and shared, (
        "declare the shared AIOS environment as an `x-aios-env` anchor"
    )
    shared_resolved = resolve(shared, env={}, where="x-aios-env")
    for name, service in aios_services.items():
        env = env_of(service)
        differing = {k: (env.get(k), v) for k, v in shared_resolved.items() if env.get(k) != v}
        assert not differing, f"{name} does not use the shared x-aios-env values: {differing}"


def test_aios_env_vars_are_real_settings(aios_services: dict[str, dict[str, Any]]) -> None:
    assert_real_settings((name, key) for name, service in aios_services.items() for key in env_of(service))


def test_aios_commands_are_real_cli_commands(aios_services: dict[str, dict[str, Any]]) -> None:
    for name, service in aios_services.items():
        assert_cli_command(command_of(service), f"service {name}")


def test_aios_env_loads_into_settings(aios_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(("AIOS_", "OPENAI_")):
            monkeypatch.delenv(key)
    for key, value in aios_env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.kafka.bootstrap == aios_env["AIOS_KAFKA_BOOTSTRAP"]
    assert settings.observability.metrics_port == METRICS_PORT, f"AIOS_METRICS_PORT should be {METRICS_PORT}"
    assert settings.llm.openai_api_key is None or not settings.llm.openai_api_key.get_secret_value(), (
        "no key may be baked into the compose file; pass OPENAI_API_KEY from the shell"
    )


def test_aios_endpoints_name_real_services_and_ports(
    services: dict[str, dict[str, Any]], aios_env: dict[str, str]
) -> None:
    for var in ("AIOS_KAFKA_BOOTSTRAP", "AIOS_SCHEMA_REGISTRY_URL", "AIOS_REDIS_URL", "AIOS_CLICKHOUSE_URL"):
        assert aios_env.get(var), f"aios services must set {var} (else they fall back to embedded/localhost)"

    for host, port in host_port_pairs(aios_env["AIOS_KAFKA_BOOTSTRAP"]):
        assert_endpoint(services, "AIOS_KAFKA_BOOTSTRAP", host, port)
        advertised = kafka_listeners(env_of(services["kafka"]), "KAFKA_ADVERTISED_LISTENERS")
        assert (host, port) in advertised.values(), (
            f"AIOS_KAFKA_BOOTSTRAP {host}:{port} is not one of kafka's advertised listeners {advertised}"
        )

    defaults = {"http": 80, "https": 443, "redis": 6379}
    for var in ("AIOS_SCHEMA_REGISTRY_URL", "AIOS_REDIS_URL", "AIOS_CLICKHOUSE_URL", "AIOS_QDRANT_URL"):
        if var not in aios_env:
            continue
        url = urlsplit(aios_env[var])
        assert url.hostname, f"{var}={aios_env[var]!r} has no host"
        assert_endpoint(services, var, url.hostname, url.port or defaults.get(url.scheme, -1))

    clickhouse_url = urlsplit(aios_env["AIOS_CLICKHOUSE_URL"])
    assert clickhouse_url.hostname == "clickhouse" and clickhouse_url.port == 8123, (
        f"AIOS_CLICKHOUSE_URL must use the clickhouse service's HTTP port 8123, got {clickhouse_url.netloc!r}"
    )


def test_clickhouse_credentials_match(services: dict[str, dict[str, Any]], aios_env: dict[str, str]) -> None:
    server = env_of(services["clickhouse"])
    url = urlsplit(aios_env["AIOS_CLICKHOUSE_URL"])
    assert server.get("CLICKHOUSE_USER") and server.get("CLICKHOUSE_PASSWORD"), (
        "the clickhouse service must set CLICKHOUSE_USER and CLICKHOUSE_PASSWORD"
    )
    assert url.username == str(server["CLICKHOUSE_USER"]), (
        f"AIOS_CLICKHOUSE_URL user {url.username!r} != clickhouse CLICKHOUSE_USER {server['CLICKHOUSE_USER']!r}"
    )
    assert url.password == str(server["CLICKHOUSE_PASSWORD"]), (
        "AIOS_CLICKHOUSE_URL password differs from the clickhouse service's CLICKHOUSE_PASSWORD"
    )
    if server.get("CLICKHOUSE_DB"):
        assert url.path.strip("/") == str(server["CLICKHOUSE_DB"]), (
            f"AIOS_CLICKHOUSE_URL database {url.path!r} != CLICKHOUSE_DB {server['CLICKHOUSE_DB']!r}"
        )


def test_connect_and_registry_share_the_aios_endpoints(
    services: dict[str, dict[str, Any]], aios_env: dict[str, str]
) -> None:
    bootstrap = set(host_port_pairs(aios_env["AIOS_KAFKA_BOOTSTRAP"]))
    connect = env_of(services["connect"])
    registry = env_of(services["schema-registry"])

    assert set(host_port_pairs(str(connect.get("CONNECT_BOOTSTRAP_SERVERS", "")))) == bootstrap, (
        f"connect CONNECT_BOOTSTRAP_SERVERS={connect.get('CONNECT_BOOTSTRAP_SERVERS')!r} "
        f"!= AIOS_KAFKA_BOOTSTRAP={aios_env['AIOS_KAFKA_BOOTSTRAP']!r}"
    )
    store = str(registry.get("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", ""))
    assert set(host_port_pairs(store)) == bootstrap, (
        f"schema-registry KAFKASTORE_BOOTSTRAP_SERVERS={store!r} != AIOS_KAFKA_BOOTSTRAP"
    )
    registry_url = aios_env["AIOS_SCHEMA_REGISTRY_URL"]
    assert "AvroConverter" in str(connect.get("CONNECT_VALUE_CONVERTER", "")), "connect values should be Avro"
    assert connect.get("CONNECT_VALUE_CONVERTER_SCHEMA_REGISTRY_URL") == registry_url, (
        f"connect's Avro converter uses {connect.get('CONNECT_VALUE_CONVERTER_SCHEMA_REGISTRY_URL')!r}, "
        f"the aios services use {registry_url!r}"
    )
    for key in ("CONFIG", "OFFSET", "STATUS"):
        assert str(connect.get(f"CONNECT_{key}_STORAGE_REPLICATION_FACTOR")) == "1", (
            f"single broker: CONNECT_{key}_STORAGE_REPLICATION_FACTOR must be 1"
        )
        assert connect.get(f"CONNECT_{key}_STORAGE_TOPIC"), f"connect needs CONNECT_{key}_STORAGE_TOPIC"
    assert str(connect.get("CONNECT_REST_PORT")) == "8083", "connect REST must listen on 8083"


def test_api_serves_on_the_host_loopback(services: dict[str, dict[str, Any]], aios_env: dict[str, str]) -> None:
    api = services[AIOS_API_SERVICE]
    env = env_of(api)
    assert env.get("AIOS_API_HOST") == ALL_INTERFACES, "inside its container the API must listen on every interface"
    assert str(env.get("AIOS_API_PORT", API_PORT)) == str(API_PORT)
    published = {parse_port(p, f"{AIOS_API_SERVICE}.ports") for p in api.get("ports", [])}
    assert ("127.0.0.1", API_PORT, API_PORT, "tcp") in published, f"publish 127.0.0.1:{API_PORT}, got {published}"
    assert all(host == "127.0.0.1" for host, *_ in published), f"bind every published port to loopback: {published}"
    healthcheck = " ".join(str(part) for part in api.get("healthcheck", {}).get("test", []))
    assert f"127.0.0.1:{API_PORT}/healthz" in healthcheck, f"the API's healthcheck should ask /healthz: {healthcheck!r}"
    assert aios_env.get("AIOS_CLICKHOUSE_URL"), "the API reads /v1/stats from the ClickHouse server"


def test_llm_variables_come_from_the_shell(aios_env: dict[str, str], raw: dict[str, Any]) -> None:
    shared = raw["x-aios-env"]
    for key, source in (("AIOS_OPENAI_API_KEY", "OPENAI_API_KEY"), ("AIOS_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
                        ("AIOS_LOCAL_LLM_BASE_URL", "AIOS_LOCAL_LLM_BASE_URL"), ("AIOS_LLM", "AIOS_LLM")):
        assert shared.get(key) == f"${{{source}:-}}", f"x-aios-env should pass {key} from ${source} (empty default)"
        assert aios_env[key] == "", f"{key} must have no value baked into the compose file"


# --------------------------------------------------------------------------- Kafka Connect plugins


def connector_classes_used() -> dict[str, str]:
    """connector.class of every shipped connector config → the config's file name."""
    used = {}
    for path in sorted(CONNECTOR_CONFIGS.glob("*.json")):
        used[json.loads(path.read_text())["config"]["connector.class"]] = path.name
    for path in sorted(CONNECTOR_CONFIGS.glob("*.properties")):
        for line in path.read_text().splitlines():
            if line.startswith("connector.class="):
                used[line.partition("=")[2].strip()] = path.name
    assert used, f"no connector configs in {CONNECTOR_CONFIGS}"
    return used


def connector_classes_provided() -> dict[str, str]:
    """Connector class → the plugin directory that provides it (Maven poms and release archives)."""
    provided: dict[str, str] = {}
    for pom in sorted(CONNECT_PLUGINS.glob("*/pom.xml")):
        root = ET.parse(pom).getroot()  # noqa: S314 - the repository's own poms
        classes = root.findtext("m:properties/m:aios.connector.classes", namespaces={"m": MAVEN_NS})
        assert classes, f"{pom}: declare <aios.connector.classes> in <properties>"
        provided |= {name.strip(): pom.parent.name for name in classes.split(",")}
    archives = CONNECT_PLUGINS / "archives/plugins.properties"
    for line in archives.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            directory, _, classes = line.partition("=")
            provided |= {name.strip(): f"archives/{directory.strip()}" for name in classes.split(",")}
    return provided


def test_connect_has_a_plugin_for_every_shipped_connector(services: dict[str, dict[str, Any]]) -> None:
    provided = connector_classes_provided()
    missing = {cls: config for cls, config in connector_classes_used().items() if cls not in provided}
    assert not missing, f"no plugin in {CONNECT_PLUGINS} provides {missing}"

    connect = services["connect"]
    plugin_path = str(env_of(connect).get("CONNECT_PLUGIN_PATH", "")).split(",")
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in connect.get("volumes", [])}
    assert mounts.get("/opt/aios/connect-plugins") == "connect-plugins", mounts
    assert mounts.get("/opt/aios/connect-archives") == "./infra/connect/plugins/archives", mounts
    assert {"/opt/aios/connect-plugins", "/opt/aios/connect-archives"} <= set(plugin_path), plugin_path

    resolver = services["connect-plugins"]
    assert connect["depends_on"]["connect-plugins"]["condition"] == "service_completed_successfully"
    assert "./infra/connect/plugins:/src:ro" in resolver["volumes"]
    assert "connect-plugins:/plugins" in resolver["volumes"]
    assert str(resolver.get("restart", "no")) == "no", "connect-plugins is one-shot: it must not restart"


def test_connect_resolves_the_configs_env_references(services: dict[str, dict[str, Any]]) -> None:
    env = env_of(services["connect"])
    assert env.get("CONNECT_CONFIG_PROVIDERS") == "env"
    assert env.get("CONNECT_CONFIG_PROVIDERS_ENV_CLASS") == (
        "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
    )
    referenced = {name for path in CONNECTOR_CONFIGS.glob("*.json")
                  for name in re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", path.read_text())}
    assert referenced, "the shipped configs reference no ${env:…} (the check would prove nothing)"
    assert referenced <= set(env), f"connect's environment lacks {sorted(referenced - set(env))}"


# --------------------------------------------------------------------------- metrics & dashboards


def test_workers_serve_metrics_on_the_metrics_port(
    services: dict[str, dict[str, Any]], aios_env: dict[str, str]
) -> None:
    assert aios_env.get("AIOS_METRICS_PORT") == str(METRICS_PORT), f"AIOS_METRICS_PORT must be {METRICS_PORT}"
    for worker in AIOS_WORKERS:
        name = f"aios-{worker}"
        containers = {parse_port(p, f"{name}.ports")[2] for p in services[name].get("ports", [])}
        assert METRICS_PORT in containers, f"{name} should map a distinct host port to {METRICS_PORT}"


def test_prometheus_scrapes_every_worker(services: dict[str, dict[str, Any]]) -> None:
    prometheus = services["prometheus"]
    mounts = [str(v) for v in prometheus.get("volumes", [])]
    assert any(m.startswith("./infra/prometheus:") for m in mounts), f"mount ./infra/prometheus, got {mounts}"

    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    targets: set[str] = set()
    for job in config.get("scrape_configs", []):
        assert job.get("metrics_path", "/metrics") == "/metrics", f"job {job.get('job_name')}: metrics_path"
        for static in job.get("static_configs", []):
            targets |= set(static.get("targets", []))
    expected = {f"aios-{w}:{METRICS_PORT}" for w in AIOS_WORKERS} | {f"{AIOS_API_SERVICE}:{METRICS_PORT}"}
    assert expected <= targets, f"prometheus.yml misses targets {sorted(expected - targets)}"
    for target in targets:
        host, port = next(host_port_pairs(target))
        if host != "localhost":
            assert_endpoint(services, f"prometheus target {target}", host, port)
    aios_targets = {t for t in targets if t.startswith("aios-")}
    assert aios_targets == expected, f"unexpected aios targets {sorted(aios_targets - expected)}"


def test_grafana_provisions_prometheus_and_clickhouse(services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    env = env_of(grafana)
    assert "grafana-clickhouse-datasource" in str(env.get("GF_INSTALL_PLUGINS", "")), (
        "grafana needs GF_INSTALL_PLUGINS=grafana-clickhouse-datasource"
    )
    mounts = [str(v) for v in grafana.get("volumes", [])]
    assert any(m.startswith("./infra/grafana/provisioning:/etc/grafana/provisioning") for m in mounts), mounts

    datasources = {d["type"]: d for d in yaml.safe_load(GRAFANA_DATASOURCES_FILE.read_text())["datasources"]}
    assert {"prometheus", "grafana-clickhouse-datasource"} <= set(datasources), sorted(datasources)
    url = urlsplit(datasources["prometheus"]["url"])
    assert_endpoint(services, "grafana Prometheus datasource", str(url.hostname), int(url.port or 80))
    clickhouse = datasources["grafana-clickhouse-datasource"]["jsonData"]
    assert_endpoint(services, "grafana ClickHouse datasource", clickhouse["host"], int(clickhouse["port"]))
    # Credentials are ${VAR} references expanded by Grafana from its own environment.
    secure = datasources["grafana-clickhouse-datasource"].get("secureJsonData", {})
    for value in (clickhouse.get("username"), secure.get("password")):
        for ref in re.findall(r"\$\{?([A-Z_]+)\}?", str(value)):
            assert ref in env, f"datasources.yml uses ${ref}, which the grafana service does not set"
    server = env_of(services["clickhouse"])
    for key in ("CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"):
        assert env.get(key) == server.get(key), f"grafana's {key} differs from the clickhouse service's"


# --------------------------------------------------------------------------- image


def test_dockerfile_builds_the_aios_image() -> None:
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases and bases[-1] == "python:3.11-slim", f"runtime stage must be python:3.11-slim, got {bases}"
    assert re.search(r'^ENTRYPOINT\s+\["aios"\]', text, flags=re.MULTILINE), (
        'Dockerfile needs ENTRYPOINT ["aios"]'
    )
    assert f"EXPOSE {METRICS_PORT}" in text, f"Dockerfile should EXPOSE {METRICS_PORT}"

    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    needed = {"pyproject.toml", "README.md", "schemas", "connectors", "agents", "streams"}
    assert not (ignored & needed), f".dockerignore excludes what the build needs: {sorted(ignored & needed)}"
    assert ".venv" in ignored and ".git" in ignored, (
        ".dockerignore should keep .venv and .git out of the context"
    )
