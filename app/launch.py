"""Start the app in its own process, as `r2r app` does, and wait until it answers: for the browser
tests (tests/test_browser.py) and the timing bench (bench/app_timing.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

from r2r_core.config import CONFIG_ENV_VAR

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(config: Path, port: int, output: IO | int = subprocess.DEVNULL) -> subprocess.Popen:
    """`streamlit run app/Home.py` headless on 127.0.0.1:port with ``config`` as its r2r.toml."""
    env = dict(os.environ, **{CONFIG_ENV_VAR: str(config), "PYTHONPATH": str(REPO_ROOT)})
    command = [sys.executable, "-m", "streamlit", "run", "app/Home.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)


def wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Until ``url``/_stcore/health answers ok; RuntimeError if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"streamlit did not answer /_stcore/health within {timeout_s} s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
