"""The server installs and runs on its own: a fresh virtual environment with only ``pip install .[server]`` holds
none of the workbench's heavy dependencies (torch, MLflow, sentence-transformers, pandas), and a ``handoff serve``
started from it passes the whole conversation lifecycle against this test's clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from handoff_testing import Server, WebhookReceiver, serve_process
from test_server_lifecycle import run_whole_lifecycle

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "mlflow", "sentence_transformers", "pandas", "sklearn", "matplotlib")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Python of a new virtual environment with the project installed with the ``server`` extra only."""
    folder = tmp_path_factory.mktemp("server-only")
    # Built from a copy, so the build leaves nothing in the checkout.
    source = folder / "source"
    source.mkdir()
    for part in ("pyproject.toml", "README.md", "src", "server"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy2
        copy(ROOT / part, source / part, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
                                            if (ROOT / part).is_dir() else {}))
    where = folder / "venv"
    venv.create(where, with_pip=True)
    python = str(where / "bin" / "python")
    done = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           f"{source}[server]"], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise AssertionError(f"pip install .[server] failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    yield python


def test_the_server_extra_pulls_no_workbench_dependency(server_python: str) -> None:
    probe = f"import importlib.util as u; print(' '.join(m for m in {HEAVY!r} if u.find_spec(m)))"
    found = subprocess.run([server_python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert found == []
    # Everything the server imports is there (its own modules and the protocol it shares with the workbench).
    subprocess.run([server_python, "-c", "import handoff.app, handoff.cli, handoff.store, copilot.live.protocol"],
                   check=True, capture_output=True, text=True)


def test_asking_a_server_only_install_for_champions_says_what_to_install(server_python: str, tmp_path: Path) -> None:
    done = subprocess.run([server_python, "-m", "handoff", "serve", "--port", "0"], capture_output=True, text=True,
                          timeout=120, env={"HANDOFF_DATABASE_URL": f"sqlite:///{tmp_path / 'h.db'}",
                                            "HANDOFF_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                            "PATH": os.environ.get("PATH", "")})
    assert done.returncode != 0
    assert "pip install 'copilot-handoff[serving]'" in done.stderr + done.stdout


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hook = await WebhookReceiver().start()
    yield hook
    await hook.stop()


async def test_a_server_only_install_passes_the_lifecycle(server_python: str, database_url: str,
                                                          receiver: WebhookReceiver) -> None:
    # No tracking URI (the test session sets MLflow's for the workbench): this server serves no champions.
    process = serve_process(database_url, python=server_python, env={"MLFLOW_TRACKING_URI": ""})
    try:
        async with aiohttp.ClientSession() as http:
            server = Server(process.url, None, http)
            await run_whole_lifecycle(server, receiver)
            await server.close_clients()
        assert process.stop() == 0
    finally:
        if process.proc.poll() is None:
            process.kill()
