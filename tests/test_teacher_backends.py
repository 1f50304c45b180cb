"""Teacher backends against real engines: SmolLM2 in-process, llama.cpp's HTTP server, and a small
scripted HTTP server (a real server speaking the chat-completions protocol) for retries and fallbacks."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from r2r_core.config import TeacherConfig
from r2r_core.errors import R2RError
from r2r_core.teacher.backends import (
    ChatError,
    ChatMessage,
    ChatRequest,
    ChatResult,
    LlamaCppServer,
    LocalLlamaBackend,
    OpenAIChatBackend,
    create_backend,
)
from r2r_core.teacher.generate import GenerationSettings, direct_parser, generate
from r2r_core.teacher.models import KNOWN_MODELS, VERIFIED_FILE, KnownModel, ResolvedModel, resolve_gguf, resolve_model
from r2r_core.teacher.parsing import parse_direct
from r2r_core.teacher.prompts import DIRECT_CITE, DIRECT_CRITERIA, render_direct
from r2r_core.teacher.scoring import score_pair, score_relevance

SMOL = "smollm2-135m-instruct"
QUERY = "how do I make a python script executable on unix"
RELEVANT = "Put #! /usr/bin/env python3 on the first line of the script and make it executable with chmod +x."
OTHER = "The gc module exposes the garbage collector and lets you tune its thresholds."
API_KEY = "test-key-123"


def _user(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage("user", text),)


# ---------------------------------------------------------------------------------------------
# Model files


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("teacher-models")


@pytest.fixture(scope="module")
def smol(model_cache: Path) -> ResolvedModel:
    return resolve_model(SMOL, model_cache)


def test_registered_model_is_verified_and_remembered(smol: ResolvedModel, model_cache: Path) -> None:
    assert smol.sha256 == KNOWN_MODELS[SMOL].sha256
    assert smol.path.read_bytes()[:4] == b"GGUF"
    remembered = json.loads((model_cache / VERIFIED_FILE).read_text())
    assert remembered[str(smol.path)]["sha256"] == smol.sha256
    assert remembered[str(smol.path)]["size"] == smol.path.stat().st_size


def _fake_model(tmp_path: Path, sha256: str | None = None) -> tuple[KnownModel, bytes]:
    chunks = [os.urandom(1000), os.urandom(1500), b"tail"]
    parts = []
    for n, chunk in enumerate(chunks, start=1):
        part = tmp_path / "pkg" / f"part{n:02d}.bin"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(chunk)
        parts.append(part)
    whole = b"".join(chunks)
    model = KnownModel(
        name="fake", filename="fake.gguf", sha256=sha256 or hashlib.sha256(whole).hexdigest(), size=len(whole),
        parts=lambda: parts, packages=("fake-part1",), chat_template="", license="",
    )
    return model, whole


def test_multipart_model_is_assembled_once_and_verification_is_cached(tmp_path: Path) -> None:
    model, whole = _fake_model(tmp_path)
    cache = tmp_path / "cache"
    resolved = resolve_model("fake", cache, registry={"fake": model})
    assert resolved.path == (cache / "fake.gguf").resolve()
    assert resolved.path.read_bytes() == whole
    assert sorted(p.name for p in cache.iterdir()) == sorted(["fake.gguf", VERIFIED_FILE])  # no temp files

    # Same size and mtime: the cached verification is trusted, so the file is not hashed again
    # (proved by changing its bytes behind the cache's back and seeing them survive).
    stat = resolved.path.stat()
    tampered = bytes([whole[0] ^ 0xFF]) + whole[1:]
    resolved.path.write_bytes(tampered)
    os.utime(resolved.path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    resolve_model("fake", cache, registry={"fake": model})
    assert resolved.path.read_bytes() == tampered

    # A changed mtime makes it hash again, find the mismatch and rebuild from the parts.
    os.utime(resolved.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = resolve_model("fake", cache, registry={"fake": model})
    assert again.path.read_bytes() == whole


def test_assembly_with_wrong_hash_raises_and_leaves_nothing(tmp_path: Path) -> None:
    model, whole = _fake_model(tmp_path, sha256="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(R2RError) as err:
        resolve_model("fake", cache, registry={"fake": model})
    message = str(err.value)
    assert "expected " + "0" * 64 in message
    assert hashlib.sha256(whole).hexdigest() in message
    assert not any(cache.iterdir())  # no partial or temporary file left behind


def test_plain_gguf_path_checks_magic_and_expected_hash(smol: ResolvedModel, tmp_path: Path) -> None:
    assert resolve_gguf(smol.path, tmp_path, expected_sha256=smol.sha256) == smol.path
    with pytest.raises(R2RError, match=f"expected {'a' * 64}, got {smol.sha256}"):
        resolve_gguf(smol.path, tmp_path, expected_sha256="a" * 64)
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(R2RError, match="not a GGUF file"):
        resolve_gguf(not_gguf, tmp_path)
    with pytest.raises(R2RError, match="unknown model 'no-such-model'"):
        resolve_gguf("no-such-model", tmp_path)


# ---------------------------------------------------------------------------------------------
# In-process llama.cpp


@pytest.fixture(scope="module")
def local(smol: ResolvedModel, model_cache: Path) -> Iterator[LocalLlamaBackend]:
    backend = LocalLlamaBackend(smol.path, model_name=SMOL, sha256=smol.sha256, cache_dir=model_cache,
                                ctx_size=2048, n_threads=2)
    yield backend
    backend.close()


def test_local_chat_returns_text_token_counts_and_first_token_logprobs(local: LocalLlamaBackend) -> None:
    request = ChatRequest(_user("Is Paris the capital of France? Answer Yes or No."), max_tokens=4, top_logprobs=5)
    result = local.chat(request)
    assert result.text.strip()
    assert result.tokens_in is not None and result.tokens_in > 10
    assert result.tokens_out is not None and 1 <= result.tokens_out <= 4
    assert result.finish_reason in ("stop", "length")
    assert result.latency_s > 0
    top = result.first_token_top_logprobs
    assert len(top) == 5
    assert all(lp <= 0 for _, lp in top)
    assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    assert result.logprobs[0].token == top[0][0]  # greedy decoding picks the most likely token
    assert result.text.startswith(result.logprobs[0].token.strip())
    prov = local.provenance()
    assert prov["backend"] == "llama_cpp_local" and prov["model_sha256"] == KNOWN_MODELS[SMOL].sha256


def test_local_json_schema_constrained_output_parses(local: LocalLlamaBackend) -> None:
    prompt = render_direct(QUERY, RELEVANT)
    result = local.chat(prompt.request(max_tokens=300, structured=True))
    assert result.structured == "json_schema"
    parsed = parse_direct(result.text, RELEVANT, finish_reason=result.finish_reason, sentences=prompt.sentences[0])
    assert parsed.ok, parsed.failure
    assert parsed.value is not None and parsed.value.label in (0, 1, 2, 3)
    assert parsed.data is not None and set(parsed.data) == {"evidence", "reasoning", "label"}


def test_local_direct_answer_carries_its_grade_distribution(local: LocalLlamaBackend) -> None:
    for template in (DIRECT_CITE, DIRECT_CRITERIA):
        prompt = render_direct(QUERY, RELEVANT, template=template)
        rationale = generate(local, prompt, direct_parser(prompt), GenerationSettings(max_tokens=300))
        assert rationale.status == "ok", rationale.failure_message
        grades = rationale.label_probabilities
        assert grades is not None and len(grades) == 4 and sum(grades) == pytest.approx(1.0)
        assert grades[rationale.label] == max(grades), (template.name, rationale.label, grades)  # greedy


def test_local_prompt_cache_reuses_shared_prefix(local: LocalLlamaBackend) -> None:
    first = local.chat(render_direct(QUERY, RELEVANT).request(max_tokens=1, structured=False))
    second = local.chat(render_direct(QUERY, OTHER).request(max_tokens=1, structured=False))
    uncached = local.chat(render_direct(QUERY, OTHER).request(max_tokens=1, structured=False,
                                                             extra={"cache_prompt": False}))
    assert first.tokens_in and second.cached_tokens is not None
    # Everything up to the document (instructions and query) came from the cache.
    assert second.cached_tokens > 0.6 * (second.tokens_in or 0)
    assert uncached.cached_tokens == 0


def test_local_errors_are_chat_errors(local: LocalLlamaBackend) -> None:
    with pytest.raises(ChatError) as too_long:
        local.chat(ChatRequest(_user("word " * 5000), max_tokens=1))
    assert too_long.value.kind == "context_exceeded"
    with pytest.raises(ChatError) as bad_schema:
        local.chat(ChatRequest(_user("hi"), max_tokens=2, json_schema={"type": "no-such-type"}))
    assert bad_schema.value.kind == "bad_request" and "no-such-type" in str(bad_schema.value)


def test_pairwise_probability_averages_both_orders(local: LocalLlamaBackend) -> None:
    pair = score_pair(local, QUERY, RELEVANT, OTHER)
    assert 0.0 <= pair.p_a <= 1.0
    assert pair.p_a == pytest.approx((pair.p_a_shown_first + pair.p_a_shown_second) / 2)
    # The second request showed the documents swapped, so doc_a's probability there is P(B).
    assert pair.p_a_shown_second == pytest.approx(1.0 - pair.details[1].p)


# ---------------------------------------------------------------------------------------------
# llama.cpp's HTTP server and the OpenAI-compatible backend


@pytest.fixture(scope="module")
def llama_http(smol: ResolvedModel) -> Iterator[LlamaCppServer]:
    with LlamaCppServer(smol.path, ctx_size=2048, n_threads=2, api_key=API_KEY, model_alias="smol") as server:
        yield server


def test_llama_server_serves_health_models_and_requires_the_key(llama_http: LlamaCppServer) -> None:
    assert llama_http.base_url.startswith("http://127.0.0.1:") and llama_http.base_url.endswith("/v1")
    assert httpx.get(f"{llama_http.address}/health").json() == {"status": "ok"}
    models = httpx.get(f"{llama_http.base_url}/models", headers={"Authorization": f"Bearer {API_KEY}"}).json()
    assert [m["id"] for m in models["data"]] == ["smol"]
    with OpenAIChatBackend(llama_http.base_url, "smol", api_key="wrong", max_retries=3) as backend, \
            pytest.raises(ChatError) as err:
        backend.chat(ChatRequest(_user("hi"), max_tokens=1))
    assert err.value.kind == "auth" and err.value.status == 401 and err.value.attempts == 1


def test_openai_backend_chat_logprobs_and_structured_output(llama_http: LlamaCppServer) -> None:
    with OpenAIChatBackend(llama_http.base_url, "smol", api_key=API_KEY) as backend:
        plain = backend.chat(ChatRequest(_user("Say hello."), max_tokens=5, top_logprobs=3))
        assert plain.text and plain.tokens_in and plain.tokens_out and plain.model == "smol"
        assert len(plain.first_token_top_logprobs) == 3
        prompt = render_direct(QUERY, RELEVANT)
        result = backend.chat(prompt.request(max_tokens=300))
        assert result.structured == "json_schema" and backend.structured_mode == "json_schema"
        parsed = parse_direct(result.text, RELEVANT, finish_reason=result.finish_reason,
                              sentences=prompt.sentences[0])
        assert parsed.ok, parsed.failure
        assert backend.provenance() == {"backend": "openai_http", "model": "smol",
                                        "base_url": llama_http.base_url, "structured": "json_schema"}


def test_relevance_score_is_the_same_through_both_backends(
    local: LocalLlamaBackend, llama_http: LlamaCppServer
) -> None:
    through_local = score_relevance(local, QUERY, RELEVANT)
    with OpenAIChatBackend(llama_http.base_url, "smol", api_key=API_KEY) as backend:
        through_http = score_relevance(backend, QUERY, RELEVANT)
    assert through_local.detail.status != "fallback"
    assert through_local.score == pytest.approx(through_http.score, abs=0.02)
    assert through_local.prompt_version == through_http.prompt_version


def test_create_backend_from_config(smol: ResolvedModel, model_cache: Path) -> None:
    with create_backend(TeacherConfig(backend="local", model=str(smol.path), ctx_size=512), model_cache) as b:
        assert isinstance(b, LocalLlamaBackend) and b.provenance()["model_sha256"] == smol.sha256
    with pytest.raises(R2RError, match=r"needs teacher\.base_url"):
        create_backend(TeacherConfig(backend="openai"), model_cache)
    with pytest.raises(R2RError, match=r"unknown teacher\.backend 'grpc'"):
        create_backend(TeacherConfig(backend="grpc"), model_cache)


# ---------------------------------------------------------------------------------------------
# A scripted chat-completions server: answers each POST with the next scripted reply.


def completion(text: str, *, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "x", "object": "chat.completion", "model": "scripted",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }
    if top is not None:
        body["choices"][0]["logprobs"] = {"content": [{"token": top[0][0], "logprob": top[0][1],
                                                       "top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}
    return body


class Scripted:
    """A real HTTP server on 127.0.0.1. `script` maps each request to (status, headers, body)."""

    def __init__(self, script: Any, delay_s: float = 0.0) -> None:
        self.script = script
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append(body)
                    outer.times.append(time.monotonic())
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    n = len(outer.requests)
                try:
                    time.sleep(outer.delay_s)
                    status, headers, reply = outer.script(n, body)
                    data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def sequence(*replies: tuple[int, dict[str, str], Any]) -> Any:
    return lambda n, body: replies[min(n, len(replies)) - 1]


def test_retries_429_then_503_then_succeeds_honouring_retry_after() -> None:
    script = sequence(
        (429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}),
        (503, {}, {"error": {"message": "loading model"}}),
        (200, {}, completion("done")),
    )
    with Scripted(script) as server, OpenAIChatBackend(
        server.base_url, "m", max_retries=4, backoff_base_s=0.01, backoff_max_s=0.05
    ) as backend:
        result = backend.chat(ChatRequest(_user("hi"), max_tokens=3))
    assert result.text == "done" and result.attempts == 3
    assert len(server.requests) == 3
    gap_after_429, gap_after_503 = server.times[1] - server.times[0], server.times[2] - server.times[1]
    assert gap_after_429 >= 0.95  # Retry-After: 1 was honoured (backoff alone is <= 0.05 s)
    assert gap_after_503 < 0.5  # no Retry-After: only the short exponential backoff


def test_client_error_is_not_retried_and_carries_the_server_message() -> None:
    script = sequence((400, {}, {"error": {"message": "max_tokens must be at most 4096", "type": "invalid"}}))
    with Scripted(script) as server, OpenAIChatBackend(server.base_url, "m", max_retries=4) as backend, \
            pytest.raises(ChatError) as err:
        backend.chat(ChatRequest(_user("hi"), max_tokens=99999))
    assert len(server.requests) == 1
    assert err.value.kind == "bad_request" and err.value.status == 400 and not err.value.retryable
    assert "max_tokens must be at most 4096" in str(err.value)


def test_gives_up_after_max_retries() -> None:
    with Scripted(sequence((503, {}, b"busy"))) as server, OpenAIChatBackend(
        server.base_url, "m", max_retries=2, backoff_base_s=0.01
    ) as backend, pytest.raises(ChatError) as err:
        backend.chat(ChatRequest(_user("hi"), max_tokens=3))
    assert len(server.requests) == 3 and err.value.attempts == 3
    assert err.value.kind == "server" and err.value.retryable and "busy" in str(err.value)


def test_connection_errors_are_retried_then_reported() -> None:
    with Scripted(sequence((200, {}, completion("x")))) as server:
        url = server.base_url
    started = time.monotonic()
    with OpenAIChatBackend(url, "m", max_retries=2, backoff_base_s=0.05) as backend, \
            pytest.raises(ChatError) as err:
        backend.chat(ChatRequest(_user("hi"), max_tokens=3))
    assert err.value.kind == "connection" and err.value.attempts == 3
    assert time.monotonic() - started >= 0.05  # it did wait between attempts


def test_structured_output_falls_back_and_remembers() -> None:
    def script(n: int, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        if body.get("response_format", {}).get("type") == "json_schema":
            return 400, {}, {"error": {"message": 'response_format type must be one of "text" or "json_object"'}}
        return 200, {}, completion('{"label": 1}')

    request = ChatRequest(_user("Reply in JSON."), max_tokens=20, json_schema={"type": "object"})
    with Scripted(script) as server, OpenAIChatBackend(server.base_url, "m") as backend:
        first = backend.chat(request)
        second = backend.chat(request)
    assert first.structured == second.structured == "json_object" and backend.structured_mode == "json_object"
    sent = [r.get("response_format", {}).get("type") for r in server.requests]
    assert sent == ["json_schema", "json_object", "json_object"]  # the fallback was remembered


def test_fixed_structured_mode_does_not_fall_back() -> None:
    script = sequence((400, {}, {"error": {"message": "response_format json_schema is not supported"}}))
    with Scripted(script) as server, OpenAIChatBackend(server.base_url, "m", structured="json_schema") as b, \
            pytest.raises(ChatError, match="not supported"):
        b.chat(ChatRequest(_user("JSON"), max_tokens=5, json_schema={"type": "object"}))
    assert len(server.requests) == 1


def test_chat_many_keeps_order_limits_concurrency_and_can_return_errors() -> None:
    def script(n: int, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        text = body["messages"][-1]["content"]
        if text == "bad":
            return 400, {}, {"error": {"message": "bad input"}}
        return 200, {}, completion(text.upper(), top=[("Yes", -0.1), ("No", -2.5)])

    texts = ["d", "b", "bad", "a", "c", "f", "e", "g"]
    with Scripted(script, delay_s=0.15) as server, OpenAIChatBackend(server.base_url, "m", concurrency=3) as b:
        results = b.chat_many([ChatRequest(_user(t), max_tokens=3) for t in texts], return_exceptions=True)
        with pytest.raises(ChatError, match="bad input"):
            b.chat_many([ChatRequest(_user(t), max_tokens=3) for t in texts[:3]])
    assert [r.text if isinstance(r, ChatResult) else "ERR" for r in results] == [
        t.upper() if t != "bad" else "ERR" for t in texts
    ]
    assert isinstance(results[2], ChatError) and results[2].status == 400
    assert 1 < server.max_in_flight <= 3
    ok = results[0]
    assert isinstance(ok, ChatResult) and ok.first_token_top_logprobs == [("Yes", -0.1), ("No", -2.5)]
