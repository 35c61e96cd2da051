"""A real nginx on loopback, configured from the same template and variables docker-compose.yml uses."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ruamel.yaml import YAML

from tests.processes import stop

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
# Where the official nginx image looks for templates (compose mounts our directory there).
IMAGE_TEMPLATES = "/etc/nginx/templates"


def nginx_binary() -> str | None:
    """Debian installs nginx in /usr/sbin, which is not on a non-root user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def compose() -> dict:
    """docker-compose.yml as compose reads it (YAML merge keys resolved)."""
    return YAML(typ="safe").load(COMPOSE_FILE.read_text())


def unescape(value: str) -> str:
    """Compose's `$$` is a literal `$` once compose has interpolated the file."""
    return str(value).replace("$$", "$")


def gateway_templates() -> list[Path]:
    """The template files of the host directory that compose mounts on the image's templates directory."""
    for volume in compose()["services"]["gateway"]["volumes"]:
        source, target = volume.split(":")[:2]
        if target == IMAGE_TEMPLATES:
            return sorted((COMPOSE_FILE.parent / source).glob("*.template"))
    raise AssertionError(f"the gateway service mounts nothing on {IMAGE_TEMPLATES}")


def template_variables() -> list[str]:
    """The variables compose hands the image's envsubst step: the gateway's environment, as filtered."""
    environment = compose()["services"]["gateway"]["environment"]
    names = [name for name in environment if not name.startswith("NGINX_")]
    envsubst_filter = unescape(environment.get("NGINX_ENVSUBST_FILTER", ""))
    return [name for name in names if re.search(envsubst_filter, name)]


def render(template: str, values: Mapping[str, str]) -> str:
    """What the image's envsubst does: replace `${NAME}` and `$NAME` for the given names only."""
    for name, value in values.items():
        template = re.sub(rf"\$(\{{{name}\}}|{name}\b)", lambda _m, v=value: v, template)
    return template


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def compose_defaults() -> dict[str, str]:
    """The gateway's variables as compose renders them with nothing set (`${NAME:-default}` -> default)."""
    environment = compose()["services"]["gateway"]["environment"]
    defaults = {}
    for name in template_variables():
        value = str(environment[name])
        match = re.fullmatch(r"\$\{\w+:?-(.*)\}", value)
        defaults[name] = match.group(1) if match else unescape(value)
    return defaults


def write_config(prefix: Path, values: Mapping[str, str]) -> Path:
    """The image's nginx.conf in miniature: our rendered templates inside `http`, paths under `prefix`;
    a variable `values` leaves out takes compose's default."""
    values = {**compose_defaults(), **values}
    assert sorted(values) == sorted(template_variables()), "render with the names compose passes"
    conf_d = prefix / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    for template in gateway_templates():
        rendered = render(template.read_text(), values)
        assert "${" not in rendered, f"{template.name} uses a variable compose does not pass"
        (conf_d / template.name.removesuffix(".template")).write_text(rendered)
    temp = prefix / "temp"
    main = prefix / "nginx.conf"
    main.write_text(
        f"""
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    keepalive_timeout 65;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {conf_d}/*.conf;
}}
"""
    )
    return main


def command(binary: str, prefix: Path, main: Path, *extra: str) -> list[str]:
    # One process, in the foreground, under the current user: no master forking workers as nobody.
    return [binary, "-p", f"{prefix}/", "-e", f"{prefix}/error.log", "-c", str(main),
            "-g", "daemon off; master_process off;", *extra]  # fmt: skip


def check_config(binary: str, prefix: Path, upstreams: Mapping[str, str]) -> subprocess.CompletedProcess:
    """`nginx -t` on the rendered configuration."""
    values = {"GATEWAY_LISTEN": f"127.0.0.1:{free_port()}", **upstreams}
    main = write_config(prefix, values)
    (prefix / "temp").mkdir(exist_ok=True)
    return subprocess.run(command(binary, prefix, main, "-t"), capture_output=True, text=True, timeout=30)


@contextmanager
def run_gateway(binary: str, prefix: Path, upstreams: Mapping[str, str]) -> Iterator[str]:
    """Start nginx on a free loopback port in front of `upstreams`; yields its base URL.

    The access log (the template logs to /dev/stdout) lands in `prefix/access.log`.
    """
    port = free_port()
    main = write_config(prefix, {"GATEWAY_LISTEN": f"127.0.0.1:{port}", **upstreams})
    (prefix / "temp").mkdir(exist_ok=True)
    with open(prefix / "access.log", "wb") as stdout, open(prefix / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(command(binary, prefix, main), stdout=stdout, stderr=stderr)
        try:
            _wait_until_listening(process, port, prefix)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(process, timeout=10)


def _wait_until_listening(process: subprocess.Popen, port: int, prefix: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited with {process.returncode}: {read_errors(prefix)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nginx did not listen on {port}: {read_errors(prefix)}")


def read_errors(prefix: Path) -> str:
    return "\n".join(
        path.read_text(errors="replace")
        for name in ("stderr.log", "error.log")
        if (path := prefix / name).exists()
    )


def access_log_entries(prefix: Path, wanted: Callable[[dict], bool], timeout: float = 5.0) -> list[dict]:
    """The gateway's access-log entries that `wanted` accepts, once there are any: nginx writes a
    request's line when it finalizes the request, which may be just after the client read the answer."""
    deadline = time.monotonic() + timeout
    while True:
        logged = [json.loads(line) for line in (prefix / "access.log").read_text().splitlines()]
        found = [entry for entry in logged if wanted(entry)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
