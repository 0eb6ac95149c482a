"""The Helm chart (infra/helm/aios): lint, render and strictly decode every manifest.

No Kubernetes cluster runs here, so the chart is checked as far as its tools go without one:
`helm lint` and `helm template` (helm v4, built from the Go module proxy by
infra/helm/tools/build.sh), then `manifestcheck`, which decodes each rendered document with the
official Kubernetes Go types and KEDA's API types, refusing unknown fields. The rendered objects are
then checked against the code: commands against the CLI, env names against `Settings`, consumer
groups and topics against the processors'.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aios.agents.roles import load_roles
from aios.streams.engine.app import group_id
from aios.streams.processors import PROCESSORS
from aios.streams.processors.history_sink import NAME as HISTORY
from aios.streams.settings import load_settings
from aios.streams.topics import Topics
from tests.unit.deployment_checks import assert_cli_command, assert_real_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "infra/helm/aios"
ALL_ON = CHART / "ci/all-on-values.yaml"
TOOLS = ROOT / "infra/helm/tools/bin"
HELM = TOOLS / "helm"
MANIFESTCHECK = TOOLS / "manifestcheck"
RELEASE = "aios"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what a process in a pod must listen on to be reached

Doc = dict[str, Any]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    for tool in (HELM, MANIFESTCHECK):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: run `make test-unit` (or bash infra/helm/tools/build.sh)")
    home = tmp_path_factory.mktemp("helm-home")
    # Keep helm away from the user's repositories, plugins and cache.
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def helm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], env=env, capture_output=True, text=True, timeout=120)


def template(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return helm(env, "template", RELEASE, str(CHART), "--namespace", "aios", *args)


def render(env: dict[str, str], *args: str) -> str:
    result = template(env, *args)
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def manifestcheck(manifests: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(MANIFESTCHECK)], input=manifests, capture_output=True, text=True, timeout=60)


def documents(manifests: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(manifests) if doc]


def of_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def containers(docs: list[Doc]) -> Iterator[tuple[str, Doc, Doc]]:
    """(where, pod spec, container) of every pod template (Deployments and Jobs)."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                yield f"{doc['kind']}/{doc['metadata']['name']}", pod, container


def env_values(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


@pytest.fixture(scope="module")
def default_manifests(helm_env: dict[str, str]) -> str:
    return render(helm_env)


@pytest.fixture(scope="module")
def all_on_manifests(helm_env: dict[str, str]) -> str:
    return render(helm_env, "-f", str(ALL_ON))


@pytest.fixture(scope="module")
def all_on(all_on_manifests: str) -> list[Doc]:
    return documents(all_on_manifests)


@pytest.fixture(scope="module")
def all_on_values() -> Doc:
    values: Doc = yaml.safe_load(ALL_ON.read_text())
    return values


# --------------------------------------------------------------------------- helm and manifestcheck


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["default", "all-on"])
def test_helm_lint(helm_env: dict[str, str], values: Path | None) -> None:
    args = ["lint", "--strict", str(CHART), *(["-f", str(values)] if values else [])]
    result = helm(helm_env, *args)
    assert result.returncode == 0, f"helm {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("which", ["default_manifests", "all_on_manifests"])
def test_rendered_manifests_decode_strictly(which: str, request: pytest.FixtureRequest) -> None:
    manifests: str = request.getfixturevalue(which)
    result = manifestcheck(manifests)
    assert result.returncode == 0, f"manifestcheck:\n{result.stdout}\n{result.stderr}"
    decoded = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert len(decoded) == len(documents(manifests)), result.stdout


def test_manifestcheck_refuses_unknown_fields_and_kinds(default_manifests: str) -> None:
    """A typo anywhere in a Kubernetes or KEDA object fails, and so does a kind no scheme knows."""
    deployment = next(d for d in documents(default_manifests) if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 5
    scaled = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 3,
                 "triggers": [{"type": "kafka", "metadata": {"lagThreshold": "5"}}]},
    }
    unknown_kind = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObjekt", "metadata": {"name": "y"}}
    result = manifestcheck(yaml.safe_dump_all([deployment, scaled, unknown_kind]))
    assert result.returncode == 1, result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failures) == 3, result.stdout
    assert 'unknown field "spec.template.spec.containers[0].livenessProbe.periodSecond"' in failures[0]
    assert 'unknown field "spec.maxReplicas"' in failures[1]
    assert "ScaledObjekt" in failures[2]


def test_manifestcheck_applies_kedas_own_checks() -> None:
    """minReplicaCount may not exceed maxReplicaCount (KEDA's webhook refuses it), and a kafka trigger's metadata keys must be ones KEDA's kafka scaler reads (a misspelt one would be
    ignored for its default)."""
    def scaled(spec: Doc) -> Doc:
        return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "x"},
                "spec": {"scaleTargetRef": {"name": "x"}, **spec}}

    bounds = scaled({"minReplicaCount": 3, "maxReplicaCount": 2,
                     "triggers": [{"type": "kafka", "metadata": {"lagThreshold": "5"}}]})
    misspelt = scaled({"triggers": [{"type": "kafka", "metadata": {"lagThreshhold": "5", "topic": "t"}}]})
    result = manifestcheck(yaml.safe_dump_all([bounds, misspelt]))
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 1 and len(failures) == 2, result.stdout
    assert "MinReplicaCount=3 must be less than MaxReplicaCount=2" in failures[0]
    assert '["lagThreshhold"]' in failures[1] and "topic" not in failures[1].split("metadata")[-1], failures[1]


# --------------------------------------------------------------------------- values and the schema


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "agents.rolez={general}"], "rolez"),
        (["--set", "processors.orchestrator.replica=2"], "replica"),
        (["--set", "config.AIOS_KAFKA_BOOTSTRAP=x:9092"], "AIOS_KAFKA_BOOTSTRAP"),
        (["--set", "config.AIOS_OPENAI_API_KEY=sk-x"], "AIOS_OPENAI_API_KEY"),
        (["--set", "kafka.securityProtocol=SASL_SSL"], "saslMechanism"),
        (["--set", "processors.history.autoscaling.minReplicaCount=0"], "minReplicaCount"),
    ],
    ids=["unknown-key", "unknown-nested-key", "chart-owned-env", "secret-in-plain-env", "sasl-without-mechanism",
         "history-at-zero"],
)
def test_schema_refuses_bad_values(helm_env: dict[str, str], args: list[str], expected: str) -> None:
    result = template(helm_env, *args)
    assert result.returncode != 0, f"helm template {' '.join(args)} should fail:\n{result.stdout[:2000]}"
    assert expected in result.stderr, result.stderr


def test_more_replicas_than_partitions_is_refused(helm_env: dict[str, str]) -> None:
    result = template(helm_env, "--set", "autoscaling.enabled=true", "--set", "autoscaling.maxReplicaCount=13")
    assert result.returncode != 0 and "above topics.partitions 12" in result.stderr, result.stderr


def test_existing_secret_or_values_not_both(helm_env: dict[str, str]) -> None:
    both = template(helm_env, "--set", "secret.existingSecret=mine", "--set", "secret.values.AIOS_REDIS_URL=redis://r")
    assert both.returncode != 0 and "either existingSecret or values" in both.stderr, both.stderr
    docs = documents(render(helm_env, "--set", "secret.existingSecret=mine"))
    assert not of_kind(docs, "Secret"), "with existingSecret the chart renders no Secret"
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for _, _, c in containers(docs) for e in c["env"]
            if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs == {"mine"}, refs


# --------------------------------------------------------------------------- the rendered objects


def test_every_aios_env_name_is_a_real_setting(all_on: list[Doc], default_manifests: str) -> None:
    names = [(where, e["name"]) for docs in (all_on, documents(default_manifests))
             for where, _, container in containers(docs) for e in container.get("env", [])]
    assert names, "no container has an environment"
    assert_real_settings(names)


def test_commands_are_real_cli_commands(all_on: list[Doc]) -> None:
    for where, _, container in containers(all_on):
        assert container.get("command") is None, f"{where}: keep the image's entrypoint (`aios`)"
        assert_cli_command([str(a) for a in container["args"]], where)


def test_one_deployment_per_processor_role_and_the_api(all_on: list[Doc], all_on_values: Doc) -> None:
    deployments = of_kind(all_on, "Deployment")
    by_args = {tuple(d["spec"]["template"]["spec"]["containers"][0]["args"]): name for name, d in deployments.items()}
    expected: set[tuple[str, ...]] = {("worker", name) for name in PROCESSORS if name != "agents"}
    expected |= {("worker", "agents", "--role", role) for role in all_on_values["agents"]["roles"]}
    expected |= {("api",)}
    assert set(by_args) == expected, f"missing {expected - set(by_args)}, unexpected {set(by_args) - expected}"
    roles = load_roles()
    for role in all_on_values["agents"]["roles"]:
        assert role in roles, f"agents.roles names {role!r}, which agents/roles.json lacks"


def test_scaled_objects_follow_the_real_groups_and_topics(all_on: list[Doc], all_on_values: Doc) -> None:
    prefix = all_on_values["topicPrefix"]
    roles = tuple(all_on_values["agents"]["roles"])
    settings = load_settings(topic_prefix=prefix, roles=roles)
    topics = Topics(prefix, roles)
    expected: dict[str, str | None] = {group_id(settings, f"agents-{role}"): topics.role(role) for role in roles}
    expected[group_id(settings, HISTORY)] = None  # the sink reads every topic: the trigger names none

    deployments = of_kind(all_on, "Deployment")
    partitions = all_on_values["topics"]["partitions"]
    seen: dict[str, str | None] = {}
    for name, scaled in of_kind(all_on, "ScaledObject").items():
        spec = scaled["spec"]
        target = deployments.get(spec["scaleTargetRef"]["name"])
        assert target is not None, f"ScaledObject {name} scales {spec['scaleTargetRef']['name']}, not a Deployment"
        assert "replicas" not in target["spec"], f"{name}: KEDA owns the replicas; the Deployment must not set them"
        assert spec["maxReplicaCount"] <= partitions, f"{name}: more replicas than partitions"
        [trigger] = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka" and meta["allowIdleConsumers"] == "false", meta
        assert meta["offsetResetPolicy"] == "earliest", "the workers start a new group from the earliest offset"
        assert meta["bootstrapServers"] == all_on_values["kafka"]["bootstrap"]
        seen[meta["consumerGroup"]] = meta.get("topic")
        # The Deployment it scales really runs that group's processor.
        args = target["spec"]["template"]["spec"]["containers"][0]["args"]
        group = f"agents-{args[3]}" if args[1] == "agents" else args[1]
        assert group_id(settings, group) == meta["consumerGroup"], (name, args, meta["consumerGroup"])
        if "authenticationRef" in trigger:
            assert trigger["authenticationRef"]["name"] in of_kind(all_on, "TriggerAuthentication")
    assert seen == expected


def test_scale_to_zero_for_idle_roles(helm_env: dict[str, str]) -> None:
    docs = documents(render(helm_env, "--set", "autoscaling.enabled=true"))
    scaled = of_kind(docs, "ScaledObject")
    assert set(scaled) == {f"{RELEASE}-agents-general"}, "by default only the roles autoscale, not the sink"
    spec = scaled[f"{RELEASE}-agents-general"]["spec"]
    assert spec["minReplicaCount"] == 0 and "idleReplicaCount" not in spec, spec
    assert spec["triggers"][0]["metadata"]["activationLagThreshold"] == "0"


def test_secrets_reach_only_who_needs_them(all_on: list[Doc], all_on_values: Doc) -> None:
    [secret] = of_kind(all_on, "Secret").values()
    assert set(secret["stringData"]) == set(all_on_values["secret"]["values"])
    for where, _, container in containers(all_on):
        plain = env_values(container)
        assert not set(plain) & set(secret["stringData"]), f"{where}: a secret setting as a plain value"
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
                if "secretKeyRef" in e.get("valueFrom", {})}
        for name, ref in refs.items():
            assert ref == {"name": secret["metadata"]["name"], "key": name, "optional": True}, (where, ref)
        api_keys = {n for n in secret["stringData"] if n.startswith("AIOS_API_")}
        is_api = container["args"] == ["api"]
        assert (api_keys <= set(refs)) == is_api, f"{where}: the JWT settings are for the API alone"
        assert {"AIOS_KAFKA_SASL_USERNAME", "AIOS_KAFKA_SASL_PASSWORD"} <= set(refs), where
    auth = next(iter(of_kind(all_on, "TriggerAuthentication").values()))
    params = {ref["parameter"]: (ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]}
    tls = all_on_values["kafka"]["tls"]["secretName"]
    assert params == {
        "username": (secret["metadata"]["name"], "AIOS_KAFKA_SASL_USERNAME"),
        "password": (secret["metadata"]["name"], "AIOS_KAFKA_SASL_PASSWORD"),
        "ca": (tls, "ca.crt"), "cert": (tls, "tls.crt"), "key": (tls, "tls.key"),
    }


def test_kafka_tls_files_come_from_a_secret_volume(all_on: list[Doc], all_on_values: Doc) -> None:
    tls = all_on_values["kafka"]["tls"]["secretName"]
    for where, pod, container in containers(all_on):
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        env = env_values(container)
        for key in ("AIOS_KAFKA_SSL_CAFILE", "AIOS_KAFKA_SSL_CERTFILE", "AIOS_KAFKA_SSL_KEYFILE"):
            directory = str(Path(env[key]).parent)
            assert directory in mounts and mounts[directory]["readOnly"], f"{where}: {key} is not on a mount"
            assert volumes[mounts[directory]["name"]]["secret"]["secretName"] == tls, where


def test_pods_run_as_non_root_with_a_read_only_root(all_on: list[Doc]) -> None:
    for where, pod, container in containers(all_on):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["automountServiceAccountToken"] is False, where
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in (env_values(container)["AIOS_DATA_DIR"], "/tmp"):
            assert path in writable, f"{where}: {path} must be a writable mount"
            [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == path]
            assert "emptyDir" in volumes[mount["name"]], f"{where}: {path} should be an emptyDir"


def test_probes(all_on: list[Doc], all_on_values: Doc) -> None:
    for where, _, container in containers(all_on):
        if where.startswith("Job/"):
            continue
        env = env_values(container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(env["AIOS_METRICS_PORT"]) and env["AIOS_METRICS_HOST"] == ALL_INTERFACES, where
        if container["args"] == ["api"]:
            assert ports["http"] == int(env["AIOS_API_PORT"]) and env["AIOS_API_HOST"] == ALL_INTERFACES, where
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, where
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, where
        else:
            assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}, where


def test_api_service_and_ingress(all_on: list[Doc], all_on_values: Doc) -> None:
    [service] = of_kind(all_on, "Service").values()
    [ingress] = of_kind(all_on, "Ingress").values()
    api = of_kind(all_on, "Deployment")[f"{RELEASE}-api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": "http"}}
    assert ingress["spec"]["rules"][0]["host"] == all_on_values["api"]["ingress"]["host"]


def test_each_deployment_has_its_own_pods_and_disruption_budget(all_on: list[Doc]) -> None:
    deployments = of_kind(all_on, "Deployment")
    budgets = of_kind(all_on, "PodDisruptionBudget")
    assert set(budgets) == set(deployments)
    for name, deployment in deployments.items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"] == selector
        others = [other for other, d in deployments.items() if other != name
                  and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert not others, f"{name}'s selector also matches the pods of {others}"


def test_topics_job_creates_the_topics(all_on: list[Doc]) -> None:
    [job] = of_kind(all_on, "Job").values()
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["topics", "create"]
    assert "post-install" in job["metadata"]["annotations"]["helm.sh/hook"]
