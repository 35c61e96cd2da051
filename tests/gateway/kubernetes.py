"""The Kubernetes manifests (deploy/kubernetes/) as data, and what they are compared with: the gateway's
public locations, the settings the services read, the image's user and Python."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from tests.gateway.nginx import ROOT

MANIFESTS = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
SECRET_EXAMPLE = MANIFESTS / "secret.example.yaml"
GATEWAY_TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
DOCKERFILE = ROOT / "Dockerfile"
# The one image of both services, as the manifests and the kustomization's `images:` name it.
IMAGE = "aichat-backend"
SERVICES = {"chat_service": "chat-service", "conversation_service": "conversation-service"}
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


def documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifest_files() -> list[Path]:
    """Every manifest file but the kustomization itself."""
    return sorted(path for path in MANIFESTS.glob("*.yaml") if path != KUSTOMIZATION)


def applied() -> list[dict]:
    """The objects `kubectl apply -k` creates: those of the files the kustomization lists."""
    kustomization = documents(KUSTOMIZATION)[0]
    return [document for name in kustomization["resources"] for document in documents(MANIFESTS / name)]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str) -> dict:
    (found,) = find(objects, kind, name)
    return found


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_specs(objects: list[dict]) -> Iterator[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload, Job and CronJob (its job template's pods)."""
    for o in objects:
        if o["kind"] in (*WORKLOAD_KINDS, "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
        elif o["kind"] == "CronJob":
            yield f"CronJob/{o['metadata']['name']}", o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def environment_names(container: dict, objects: list[dict]) -> dict[str, str]:
    """Every variable the container gets: its `env` (value or `<from ...>`) and its ConfigMaps' keys."""
    names: dict[str, str] = {}
    for source in container.get("envFrom", []):
        names.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        names[variable["name"]] = variable.get("value", "<from>")
    return names


def gateway_locations() -> set[tuple[str, str, str]]:
    """(Exact | Prefix, path, upstream) of every location of the gateway that proxies to a service."""
    template = GATEWAY_TEMPLATE.read_text()
    found = set()
    for match in re.finditer(r"location\s+(=\s+)?(/[^\s{]*)\s*\{", template):
        depth, end = 1, match.end()
        while depth:  # the block's own braces: its `if (...) { ... }` blocks nest inside
            depth += {"{": 1, "}": -1}.get(template[end], 0)
            end += 1
        upstream = re.search(r"proxy_pass\s+http://(\w+)\s*;", template[match.end() : end])
        if upstream:
            found.add(("Exact" if match.group(1) else "Prefix", match.group(2), upstream.group(1)))
    return found


def image_user() -> int:
    """The uid the Dockerfile's final stage runs as (`USER 10001:10001`)."""
    return int(re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), re.MULTILINE)[-1])


def image_python() -> str:
    """The image's Python `major.minor` (`FROM python:3.11-slim`)."""
    return re.findall(r"^FROM\s+python:(\d+\.\d+)", DOCKERFILE.read_text(), re.MULTILINE)[-1]


def image_environment() -> dict[str, str]:
    """The Dockerfile's `ENV a=b \\ c=d` pairs."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    pairs = {}
    for line in re.findall(r"^ENV\s+(.*)$", text, re.MULTILINE):
        pairs.update(re.findall(r"(\w+)=(\S+)", line))
    return pairs


class RecordingEnviron(dict):
    """An empty environment that notes every name a Config reads from it."""

    def __init__(self, values: Mapping[str, str] = ()) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return super().__contains__(key)


def gunicorn_settings(service: str) -> set[str]:
    """The variables a service's gunicorn config reads."""
    source = (ROOT / service / "gunicorn.conf.py").read_text()
    return set(re.findall(r"""os\.environ\.get\(\s*["']([A-Z_]+)["']""", source))


def gunicorn_graceful_timeout(service: str) -> tuple[str | None, int]:
    """(the variable that sets it, or None; its default) of a gunicorn config's `graceful_timeout`."""
    source = (ROOT / service / "gunicorn.conf.py").read_text()
    line = re.search(r"^graceful_timeout\s*=\s*(.+)$", source, re.MULTILINE).group(1)
    variable = re.search(r"""os\.environ\.get\(\s*["']([A-Z_]+)["']\s*,\s*["'](\d+)["']""", line)
    return (variable.group(1), int(variable.group(2))) if variable else (None, int(line))


def gunicorn_port(service: str) -> int:
    """The port of the gunicorn config's default `bind`."""
    source = (ROOT / service / "gunicorn.conf.py").read_text()
    return int(re.search(r"""os\.environ\.get\(\s*"BIND"\s*,\s*"[^"]*:(\d+)"\s*\)""", source).group(1))
