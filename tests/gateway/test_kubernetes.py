"""deploy/kubernetes/: every object valid against the Kubernetes schemas, and meaning the schemas cannot
check: probes, grace periods, secrets, settings, selectors, the ingress's routes, the migration Jobs."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from chat_service.config import Config as ChatConfig
from conversation_service.config import Config as ConversationConfig
from shared.gunicorn_metrics import MULTIPROC_ENV
from shared.health import READY_TIMEOUT_SECONDS
from tests.conftest import SECRET
from tests.gateway.kubernetes import (
    IMAGE,
    KUSTOMIZATION,
    MANIFESTS,
    ROOT,
    SECRET_EXAMPLE,
    SERVICES,
    RecordingEnviron,
    applied,
    containers,
    documents,
    environment_names,
    find,
    gateway_locations,
    gunicorn_graceful_timeout,
    gunicorn_port,
    gunicorn_settings,
    image_environment,
    image_python,
    image_user,
    manifest_files,
    one,
    pod_specs,
    selects,
    workloads,
)
from tests.gateway.nginx import free_port
from tests.live_probe import redis_url_or_skip

# The oldest Kubernetes the manifests support (the pod-index label, the StatefulSet ordinal as a label,
# is there since 1.28; 1.30 is the oldest release the big clouds still run) and a recent one.
KUBERNETES_VERSIONS = ("1.30.0", "1.34.0")
CONFIGS = {"chat_service": ChatConfig, "conversation_service": ConversationConfig}
BIN = Path(sys.executable).parent
LONGEST_REPLY = "aichat-backend/longest-reply-seconds"
# Variables a container's own command line uses, not the service (the StatefulSet's ordinal).
COMMAND_VARIABLES = {"POD_INDEX"}


def validate(document: dict, version: str) -> None:
    kubernetes_validate.validate(document, version, strict=True)


def service_workload(objects: list[dict], service: str) -> dict:
    (workload,) = [w for w in workloads(objects) if w["metadata"]["name"] == SERVICES[service]]
    return workload


def main_container(workload: dict) -> dict:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def pre_stop_seconds(container: dict) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return int(command[1])


def settings_read(service: str) -> set[str]:
    """Every variable the service reads: its Config's names, its gunicorn config's, the metrics dir."""
    environ = RecordingEnviron()
    # An empty environment may lack what a serving config needs: the names are read all the same.
    with contextlib.suppress(ValueError):
        CONFIGS[service](environ)
    return environ.read | gunicorn_settings(service) | {MULTIPROC_ENV}


def secret_example() -> dict:
    (secret,) = documents(SECRET_EXAMPLE)
    return secret


def secret_references(objects: list[dict]) -> list[tuple[str, dict]]:
    return [
        (where, variable["valueFrom"]["secretKeyRef"])
        for where, pod in pod_specs(objects)
        for container in containers(pod)
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    ]


# --- schemas -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_every_document_validates_strictly_against_the_kubernetes_schemas(path, version):
    """Unknown fields are errors (strict), and a kind without a schema fails rather than warns."""
    found = documents(path)
    assert found, f"{path.name} holds no object"
    for document in found:
        validate(document, version)


def test_strict_validation_refuses_an_unknown_or_mistyped_field():
    deployment = one(applied(), "Deployment", "chat-service")
    misspelt = copy.deepcopy(deployment)
    main_container(misspelt)["readinesProbe"] = main_container(misspelt).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(misspelt, KUBERNETES_VERSIONS[0])
    mistyped = copy.deepcopy(deployment)
    mistyped["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "150"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(mistyped, KUBERNETES_VERSIONS[0])


def test_the_kustomization_lists_every_manifest_but_the_secret_example():
    listed = documents(KUSTOMIZATION)[0]["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) == {path.name for path in manifest_files()} - {SECRET_EXAMPLE.name}
    assert not find(applied(), "Secret"), "no Secret with values is ever applied from the repository"


def test_kustomize_renders_every_object_into_the_namespace_with_the_image_set():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its built-in kustomize renders deploy/kubernetes)")
    result = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = [document for document in yaml.safe_load_all(result.stdout) if document]
    assert len(rendered) == len(applied())
    kustomization = documents(KUSTOMIZATION)[0]
    (image,) = [entry for entry in kustomization["images"] if entry["name"] == IMAGE]
    for document in rendered:
        validate(document, KUBERNETES_VERSIONS[0])
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == kustomization["namespace"], document["metadata"]
    for where, pod in pod_specs(rendered):
        for container in containers(pod):
            if not container["image"].startswith("redis:"):
                assert container["image"] == f"{image['newName']}:{image['newTag']}", where


# --- the workloads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_is_probed_on_healthz_and_readyz_at_its_own_port(service):
    workload = service_workload(applied(), service)
    container = main_container(workload)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": gunicorn_port(service)}
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ):
        get = container[probe]["httpGet"]
        assert (get["path"], ports.get(get["port"], get["port"])) == (path, gunicorn_port(service)), probe
    # /readyz answers within its own deadline; a probe that timed out first would hide which check failed.
    assert container["readinessProbe"]["timeoutSeconds"] > READY_TIMEOUT_SECONDS
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(gunicorn_port(service))
    assert annotations["prometheus.io/path"] == "/metrics"


def test_every_container_requests_cpu_and_memory_and_limits_memory():
    for where, pod in pod_specs(applied()):
        for container in containers(pod):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), f"{where}/{container['name']}"
            assert "memory" in resources["limits"], f"{where}/{container['name']}"


def test_every_pod_runs_as_non_root_on_a_read_only_root_with_a_writable_tmp():
    """The services run as the image's user; the only path they write is /tmp (the working directory,
    gunicorn's heartbeat files, PROMETHEUS_MULTIPROC_DIR), an emptyDir."""
    metrics_dir = image_environment()[MULTIPROC_ENV]
    for where, pod in pod_specs(applied()):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
        for container in containers(pod):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            if container["image"] == IMAGE:
                assert pod["securityContext"]["runAsUser"] == image_user(), where
                mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], where
                assert metrics_dir.startswith("/tmp/"), metrics_dir


def test_the_chat_grace_period_outlasts_the_graceful_timeout_which_outlasts_the_longest_reply():
    """SIGKILL comes terminationGracePeriodSeconds after the preStop hook starts; gunicorn's workers
    wait GRACEFUL_TIMEOUT after SIGTERM for replies in flight (worker_exit), which ends the preStop."""
    objects = applied()
    workload = service_workload(objects, "chat_service")
    container = main_container(workload)
    variable, default = gunicorn_graceful_timeout("chat_service")
    assert variable == "GRACEFUL_TIMEOUT"
    graceful = int(environment_names(container, objects).get(variable, default))
    longest_reply = int(workload["metadata"]["annotations"][LONGEST_REPLY])
    grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop_seconds(container) + graceful > graceful > longest_reply


def test_the_conversation_grace_period_outlasts_its_graceful_timeout():
    workload = service_workload(applied(), "conversation_service")
    variable, graceful = gunicorn_graceful_timeout("conversation_service")
    assert variable is None  # fixed in its gunicorn config: no setting to pass
    grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pre_stop_seconds(main_container(workload)) + graceful


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_runs_its_own_gunicorn_config_from_the_image(service):
    """Arguments to the image's entrypoint run as given (no migration per pod): the config path must be
    where the image installs the package, for the image's Python."""
    args = " ".join(main_container(service_workload(applied(), service))["args"])
    config = f"/opt/venv/lib/python{image_python()}/site-packages/{service}/gunicorn.conf.py"
    assert f"gunicorn --config {config} " in args
    assert f"{service}:create_app()" in args
    assert (ROOT / service / "gunicorn.conf.py").is_file()


def test_conversation_pods_get_snowflake_worker_ids_spaced_by_their_workers():
    """Pod N takes N * WEB_CONCURRENCY as its base, and gunicorn adds each worker's slot: no two
    processes of the StatefulSet share a worker id."""
    objects = applied()
    workload = service_workload(objects, "conversation_service")
    assert workload["kind"] == "StatefulSet"
    container = main_container(workload)
    assert "SNOWFLAKE_WORKER_ID=$((POD_INDEX * WEB_CONCURRENCY))" in " ".join(container["args"])
    environment = environment_names(container, objects)
    assert int(environment["WEB_CONCURRENCY"]) >= 1
    (index,) = [v for v in container["env"] if v["name"] == "POD_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    hpa = one(objects, "HorizontalPodAutoscaler", SERVICES["conversation_service"])
    assert hpa["spec"]["maxReplicas"] * int(environment["WEB_CONCURRENCY"]) <= 1024


# --- settings and secrets ------------------------------------------------------------------------------


def container_service(container: dict) -> str | None:
    """The service a container of the image runs (its command names it), else None."""
    command = " ".join(container.get("args", []))
    matches = [service for service in SERVICES if re.search(rf"\b{service}\b", command)]
    return matches[0] if container["image"] == IMAGE and len(matches) == 1 else None


@pytest.mark.parametrize("service", SERVICES)
def test_every_variable_a_service_container_gets_is_a_setting_it_reads(service):
    """A misspelt name would be ignored without a word: each one is read by the service."""
    objects = applied()
    known = settings_read(service)
    assert {"DATABASE_URL", "JWT_SECRET", "TRUSTED_PROXIES", "WEB_CONCURRENCY"} <= known  # names were read
    checked = 0
    for where, pod in pod_specs(objects):
        for container in containers(pod):
            if container_service(container) == service:
                names = set(environment_names(container, objects)) - COMMAND_VARIABLES
                assert names <= known, f"{where}/{container['name']}: {sorted(names - known)}"
                checked += 1
    assert checked == 4  # the service, its init container, its migration Job, its purge CronJob


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_accepts_its_configmap(service):
    """The ConfigMap's values parse (a wrong one would stop every pod at start)."""
    objects = applied()
    container = main_container(service_workload(objects, service))
    environ = {**environment_names(container, objects), "JWT_SECRET": SECRET, "DATABASE_URL": "sqlite://"}
    config = CONFIGS[service](environ)
    assert config.TRUSTED_PROXIES == 1  # one hop: the ingress controller


def test_the_services_reach_each_other_and_redis_by_their_service_names():
    objects = applied()
    ports = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in find(objects, "Service")}
    chat = environment_names(main_container(service_workload(objects, "chat_service")), objects)
    conversation = environment_names(
        main_container(service_workload(objects, "conversation_service")), objects
    )
    for url in (chat["CONVERSATION_SERVICE_URL"], conversation["CHAT_SERVICE_URL"]):
        host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url).groups()
        assert int(port) in ports[host], url
    for url in (chat["REDIS_URL"], conversation["REDIS_URL"]):
        host, port = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/\d+", url).groups()
        assert int(port) in ports[host], url


def test_every_secret_reference_names_a_key_of_the_example_secret():
    example = secret_example()
    keys = set(example["stringData"])
    references = secret_references(applied())
    assert references
    for where, reference in references:
        assert reference["name"] == example["metadata"]["name"], where
        assert reference["key"] in keys, f"{where}: {reference['key']}"
    # What a pod cannot start without is required; the providers' keys only with their provider.
    optional = {reference["key"] for _, reference in references if reference.get("optional")}
    assert optional == {"dify-api-key", "openai-api-key"}


def test_the_secret_example_holds_placeholders_only():
    for key, value in secret_example()["stringData"].items():
        assert re.search(r"CHANGE-ME|replace-with", value), f"{key} looks like a real value"


def test_secrets_reach_the_services_only_through_secret_references():
    secret_names = {"JWT_SECRET", "DATABASE_URL", "DIFY_API_KEY", "OPENAI_API_KEY", "JWT_PRIVATE_KEY"}
    for config_map in find(applied(), "ConfigMap"):
        assert not secret_names & set(config_map["data"]), config_map["metadata"]["name"]
    for where, pod in pod_specs(applied()):
        for container in containers(pod):
            for variable in container.get("env", []):
                if variable["name"] in secret_names:
                    assert "secretKeyRef" in variable["valueFrom"], f"{where}: {variable['name']}"


# --- selectors -----------------------------------------------------------------------------------------


def test_services_hpas_and_budgets_select_existing_pods():
    objects = applied()
    pods = {w["metadata"]["name"]: w for w in workloads(objects)}

    def selected(selector: dict) -> list[str]:
        return [n for n, w in pods.items() if selects(selector, w["spec"]["template"]["metadata"]["labels"])]

    for workload in pods.values():
        assert selects(
            workload["spec"]["selector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"]
        )
    for service in find(objects, "Service"):
        (name,) = selected(service["spec"]["selector"])
        port_names = {p["name"] for p in main_container(pods[name])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names, service["metadata"]["name"]
    for service in SERVICES.values():
        hpa = one(objects, "HorizontalPodAutoscaler", service)
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == (pods[service]["kind"], service)
        assert hpa["spec"]["minReplicas"] >= 2  # one pod may go (the budget) and one still serves
        budget = one(objects, "PodDisruptionBudget", service)
        assert selected(budget["spec"]["selector"]["matchLabels"]) == [service]
    # The migration Jobs' pods are none of these.
    for job in find(objects, "Job"):
        labels = job["spec"]["template"]["metadata"]["labels"]
        for service in SERVICES.values():
            assert not selects(pods[service]["spec"]["selector"]["matchLabels"], labels)


# --- the ingress ---------------------------------------------------------------------------------------


def ingress_routes(objects: list[dict]) -> set[tuple[str, str, str]]:
    return {
        (path["pathType"], path["path"], path["backend"]["service"]["name"])
        for ingress in find(objects, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }


def test_the_ingress_routes_exactly_the_gateways_public_locations():
    gateway = {(kind, path, upstream.replace("_", "-")) for kind, path, upstream in gateway_locations()}
    assert ("Prefix", "/ws/", "chat-service") in gateway  # the template was read
    assert ingress_routes(applied()) == gateway


def test_the_ingress_routes_nothing_internal():
    for _, path, _ in ingress_routes(applied()):
        assert not re.match(r"/(internal|metrics|healthz|readyz|_gateway)\b", path), path
        assert path != "/", "a catch-all would route /internal and /metrics"


def test_the_ingress_backends_exist_and_only_sockets_get_long_timeouts():
    objects = applied()
    services = {
        s["metadata"]["name"]: {p["name"] for p in s["spec"]["ports"]} for s in find(objects, "Service")
    }
    for ingress in find(objects, "Ingress"):
        annotations = ingress["metadata"]["annotations"]
        assert ingress["spec"]["ingressClassName"] == "nginx"
        paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
        # MAX_CONTENT_LENGTH (1 MiB) everywhere, but an import's IMPORT_MAX_BYTES (256 MiB).
        body = "256m" if {path["path"] for path in paths} == {"/api/chat/import"} else "1m"
        assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == body, ingress["metadata"]
        for path in paths:
            backend = path["backend"]["service"]
            assert backend["port"]["name"] in services[backend["name"]], path
        long_lived = {path["path"] for path in paths} == {"/ws/"}
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            value = annotations.get(f"nginx.ingress.kubernetes.io/{timeout}")
            assert value == ("3600" if long_lived else None), (ingress["metadata"]["name"], timeout)


# --- the migrations ------------------------------------------------------------------------------------


def migration_job(service: str) -> dict:
    return one(applied(), "Job", f"{SERVICES[service]}-migrate")


def wait_command(service: str) -> list[str]:
    (init,) = service_workload(applied(), service)["spec"]["template"]["spec"]["initContainers"]
    return init["args"]


def local_environment(container: dict, database_url: str, home: Path) -> dict[str, str]:
    """The container's variables (each secret replaced by the test's value) on this machine's PATH."""
    names = {variable["name"] for variable in container.get("env", [])}
    assert names == {"DATABASE_URL"}, "migrations need only the database URL"
    return {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(home), "DATABASE_URL": database_url}


def still_running_after(command: list[str], environ: dict[str, str], cwd: Path, seconds: float) -> bool:
    """Whether `command` (a shell loop) is still running after `seconds`; its whole group is ended."""
    process = subprocess.Popen(
        command,
        env=environ,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        process.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        return True
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.parametrize("service", SERVICES)
def test_the_migration_job_upgrades_with_only_the_database_url_and_then_pods_may_start(service, tmp_path):
    """The Job's command, run as the container would (no JWT key, no provider key), migrates; the pods'
    init container waits while the database is behind and lets them start once it is at head."""
    (container,) = migration_job(service)["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["flask", "--app", service, "db", "upgrade"]
    environ = local_environment(container, f"sqlite:///{tmp_path}/{service}.sqlite3", tmp_path)
    wait = wait_command(service)
    assert still_running_after(wait, environ, tmp_path, seconds=8), "the init container let a pod start early"
    upgrade = subprocess.run(
        container["args"], env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "Running upgrade" in upgrade.stderr + upgrade.stdout
    done = subprocess.run(wait, env=environ, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# --- the containers' commands, run here ------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_the_service_container_starts_ready_from_its_configmap_and_stops_on_sigterm(service, tmp_path):
    """The container's command and ConfigMap (the image's config path mapped to this checkout, Redis
    and the database replaced by the test's) start gunicorn; the probes' paths answer 200 on the
    probes' port; SIGTERM (after preStop) stops it cleanly within the grace period."""
    redis_url = redis_url_or_skip()
    objects = applied()
    workload = service_workload(objects, service)
    container = main_container(workload)
    database_url = f"sqlite:///{tmp_path}/{service}.sqlite3"
    environ = {
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "DATABASE_URL": database_url,
    }
    migrated = subprocess.run(
        ["flask", "--app", service, "db", "upgrade"],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    port = free_port()
    environ |= {
        **environment_names(container, objects),
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "REDIS_URL": redis_url,
        "POD_INDEX": "3",
        "BIND": f"127.0.0.1:{port}",
        MULTIPROC_ENV: str(tmp_path / "prometheus-metrics"),
        "LIMITS_KEY_PREFIX": f"test-k8s-{os.getpid()}",
    }
    installed = f"/opt/venv/lib/python{image_python()}/site-packages/{service}/gunicorn.conf.py"
    args = [arg.replace(installed, str(ROOT / service / "gunicorn.conf.py")) for arg in container["args"]]
    log = tmp_path / "service.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(args, env=environ, cwd=tmp_path, stdout=output, stderr=output)
        try:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                url = f"http://127.0.0.1:{port}{container[probe]['httpGet']['path']}"
                deadline = time.monotonic() + 30
                while True:
                    assert process.poll() is None, log.read_text()
                    try:
                        if (
                            requests.get(url, timeout=container[probe].get("timeoutSeconds", 1)).status_code
                            == 200
                        ):
                            break
                    except requests.RequestException:
                        pass
                    assert time.monotonic() < deadline, f"{probe}: {log.read_text()}"
                    time.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            try:
                process.wait(timeout=grace - pre_stop_seconds(container))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
    assert process.returncode == 0, log.read_text()
