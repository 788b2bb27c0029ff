"""A local OpenAI-compatible chat-completions server for tests: deterministic answers, counted requests."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH_CHECK_PROMPT = "Hello!"


class FakeLLMServer:
    """Answers ``POST /v1/chat/completions`` on 127.0.0.1 with text derived from the prompt.

    ``requests`` counts every completion request by kind (``health_check`` or ``generation``) and model;
    ``auth_headers`` keeps the Authorization headers seen (to check the key reached the server).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, str]] = Counter()
        self.prompts: list[str] = []
        self.auth_headers: set[str] = set()
        # fault injection: prompt -> (HTTP status, body) or None for a normal answer
        self.fault = None
        # when set, generation requests are answered with this object as JSON (structured / judge columns)
        self.structured_answer = None
        self.delay_s = 0.0  # per generation request, to make runs slow enough to interrupt
        self.generation_requests = 0
        self.hang_s = 2.0
        self.in_flight = 0  # generation requests being answered now
        self.peak_in_flight = 0  # the most answered at once since the last reset
        self.spans: list[tuple[float, float, str]] = []  # (start, end, prompt) of answered generation requests
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                server._record(body, self.headers.get("Authorization", ""))
                prompt = server.user_prompt(body)
                started = server._enter(prompt)
                try:
                    self._answer(body)
                finally:
                    server._leave(prompt, started)

            def _answer(self, body: dict) -> None:
                if server.delay_s and server.user_prompt(body) != HEALTH_CHECK_PROMPT:
                    time.sleep(server.delay_s)
                fault = server.fault(server.user_prompt(body)) if server.fault else None
                if fault == "hang":
                    time.sleep(server.hang_s)
                    fault = (504, {"error": {"message": "gateway timeout"}})
                if fault == "malformed":
                    data = b'{"id": "x", "choices": [{"message": {"content": '
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if fault is not None:
                    status, payload = fault
                    self._send(status, payload)
                    return
                self._send(200, server.completion(body))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL to configure as a provider endpoint."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def user_prompt(body: dict) -> str:
        """The text of the last user message (plain or content parts)."""
        messages = body.get("messages", [])
        user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        if isinstance(user, list):
            user = " ".join(part.get("text", "") for part in user if isinstance(part, dict))
        return str(user or "")

    def _record(self, body: dict, auth: str) -> None:
        user = self.user_prompt(body)
        kind = "health_check" if user == HEALTH_CHECK_PROMPT else "generation"
        with self.lock:
            self.requests[(kind, body.get("model", ""))] += 1
            self.prompts.append(user)
            self.auth_headers.add(auth)

    def _enter(self, prompt: str) -> float:
        with self.lock:
            if prompt != HEALTH_CHECK_PROMPT:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return time.monotonic()

    def _leave(self, prompt: str, started: float) -> None:
        with self.lock:
            if prompt != HEALTH_CHECK_PROMPT:
                self.in_flight -= 1
                self.spans.append((started, time.monotonic(), prompt))

    def spans_matching(self, text: str) -> list[tuple[float, float]]:
        """(start, end) of the generation requests whose prompt contains ``text``."""
        with self.lock:
            return [(start, end) for start, end, prompt in self.spans if text in prompt]

    def count(self, kind: str | None = None, model: str | None = None) -> int:
        """Requests seen, optionally of one kind and one model."""
        with self.lock:
            return sum(n for (k, m), n in self.requests.items() if kind in (None, k) and model in (None, m))

    def reset(self) -> None:
        self.generation_requests = 0
        self.delay_s = 0.0
        self.fault = None
        self.structured_answer = None
        with self.lock:
            self.requests.clear()
            self.prompts.clear()
            self.peak_in_flight = self.in_flight
            self.spans.clear()

    @staticmethod
    def answer_for(prompt: str) -> str:
        """The deterministic answer the server gives to a prompt."""
        digest = hashlib.sha256(prompt.encode()).hexdigest()[:10]
        return f"answer-{digest}"

    def completion(self, body: dict) -> dict:
        user = self.user_prompt(body)
        if user == HEALTH_CHECK_PROMPT:
            content = "Hi!"
        elif self.structured_answer is not None:
            content = json.dumps(self.structured_answer)
        else:
            content = self.answer_for(user)
        prompt_tokens = max(1, len(user.split()))
        return {
            "id": f"chatcmpl-{int(time.time() * 1000)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2},
        }


def every_kth(server: FakeLLMServer, k: int, fault):
    """A fault hook that hits every k-th generation request (so retries of a hit request usually succeed).

    ``fault`` is ``(status, body)``, ``"hang"`` (answer after ``hang_s`` seconds, past the client timeout) or
    ``"malformed"`` (a truncated JSON body with status 200). ``k=1`` hits every request.
    """

    def hook(prompt: str):
        if prompt == HEALTH_CHECK_PROMPT:
            return None
        with server.lock:
            server.generation_requests += 1
            number = server.generation_requests
        return fault if number % k == 0 else None

    return hook


def first_prompt_always(server: FakeLLMServer, fault):
    """A fault hook that fails every request for the first generation prompt it sees (retries included),
    so exactly one record is dropped."""
    chosen: list[str] = []

    def hook(prompt: str):
        if prompt == HEALTH_CHECK_PROMPT:
            return None
        with server.lock:
            if not chosen:
                chosen.append(prompt)
        return fault if prompt == chosen[0] else None

    return hook


class after_n_answers:  # noqa: N801 - used like the other fault hooks
    """A fault hook that answers the first ``n`` generation requests and fails every later one (retries included):
    a provider that starts rate-limiting for good in the middle of a run. ``first_fault_at`` is when it started
    (``time.monotonic()``)."""

    def __init__(self, server: FakeLLMServer, n: int, fault):
        self.server, self.n, self.fault = server, n, fault
        self.first_fault_at: float | None = None

    def __call__(self, prompt: str):
        if prompt == HEALTH_CHECK_PROMPT:
            return None
        with self.server.lock:
            self.server.generation_requests += 1
            if self.server.generation_requests <= self.n:
                return None
            if self.first_fault_at is None:
                self.first_fault_at = time.monotonic()
        return self.fault
