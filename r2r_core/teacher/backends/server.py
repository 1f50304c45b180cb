"""llama.cpp's own OpenAI-compatible HTTP server on loopback, for tests, benches and local endpoints."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from r2r_core.errors import R2RError
from r2r_core.teacher.backends.local import _llama_params


class LlamaCppServer:
    """llama.cpp's own HTTP server (OpenAI-compatible) for a GGUF file, in this process.

    Serves /health, /v1/models and /v1/chat/completions on `host` (loopback by default). With port=0
    the OS picks a free port; read `base_url` (".../v1", what OpenAIChatBackend expects). With an
    api_key, requests must send `Authorization: Bearer <key>` (/health stays open).

        with LlamaCppServer(path) as server:
            backend = OpenAIChatBackend(server.base_url, server.model_alias, api_key=server.api_key)
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ctx_size: int = 4096,
        n_threads: int = 2,
        n_parallel: int = 1,
        api_key: str | None = None,
        model_alias: str = "local",
        ready_timeout_s: float = 60.0,
        verbose: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise R2RError(f"GGUF file {self.model_path} does not exist")
        self.host = host
        self.port = port
        self.ctx_size = ctx_size
        self.n_threads = n_threads
        self.n_parallel = n_parallel
        self.api_key = api_key
        self.model_alias = model_alias
        self.ready_timeout_s = ready_timeout_s
        self.verbose = verbose
        self._server: Any = None
        self.address: str | None = None  # e.g. "http://127.0.0.1:41234"

    @property
    def base_url(self) -> str:
        if self.address is None:
            raise R2RError("the llama.cpp server is not running (use it as a context manager or start())")
        return f"{self.address}/v1"

    def start(self) -> LlamaCppServer:
        import xllamacpp

        if self._server is not None:
            return self
        params = _llama_params(
            self.model_path, ctx_size=self.ctx_size, n_threads=self.n_threads, n_parallel=self.n_parallel,
            alias=self.model_alias, host=self.host, port=self.port, api_key=self.api_key,
            verbose=self.verbose,
        )
        try:
            self._server = xllamacpp.Server(params)
        except Exception as exc:
            raise R2RError(f"llama.cpp server could not start for {self.model_path}: {exc}") from exc
        self.address = str(self._server.listening_address).rstrip("/")
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"{self.address}/health", timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop()
        raise R2RError(
            f"llama.cpp server at {self.address} not healthy after {self.ready_timeout_s} s: {last}"
        )

    def stop(self) -> None:
        self._server = None  # the destructor stops the loop and closes the socket
        self.address = None

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
