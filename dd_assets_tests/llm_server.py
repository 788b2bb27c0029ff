"""A local OpenAI-compatible chat-completions server for tests: deterministic answers, counted requests.

Besides answering, it behaves like a real server (vLLM, OpenAI) where dd_assets depends on it: an answer longer
than the request's ``max_tokens`` is cut there with ``finish_reason: "length"``; with ``usage = "text"`` the usage
counts every message's tokens plus the chat template's and the answer's own tokens (the default ``"prompt_words"``
keeps the fixed counts older tests pin: the last user message's words in, 2 tokens out); ``context_window`` answers
a request whose messages and ``max_tokens`` do not fit with the 400 error vLLM or OpenAI return; and
:meth:`FakeLLMServer.go_away` makes the server stop listening after a number of generation requests (connections are
refused, requests already accepted are reset), until :meth:`FakeLLMServer.come_back`. ``request_log`` holds one
entry per answered request (kind, status, tokens, finish reason).

A structured request (a ``response_format`` with a JSON schema, or Data Designer's ``<response_schema>`` block in a
message) is answered with an object built from that schema (:func:`instance_of`), and a code request (Data
Designer's "Your response must be code written in <language>") with one fenced code block; both are deterministic
per prompt. Prompts are read from plain string content and from content parts (``[{"type": "text", ...}]``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEALTH_CHECK_PROMPT = "Hello!"
# The server's tokenizer: runs of word characters or of punctuation, four characters to a token (so "a", "{"
# and '":' are a token each); close to what BPE tokenizers count for English text and JSON, never fewer.
TOKEN_PIECE = re.compile(r"\w+|[^\w\s]+")
CHARS_PER_PIECE_TOKEN = 4
# The chat template's tokens: per message (role markers) and per request (the assistant's turn header).
TEMPLATE_TOKENS_PER_MESSAGE = 4
TEMPLATE_TOKENS_PER_REQUEST = 3


def count_tokens(text: str) -> int:
    """Tokens of ``text`` by the server's tokenizer."""
    return sum(math.ceil(len(piece) / CHARS_PER_PIECE_TOKEN) for piece in TOKEN_PIECE.findall(text))


def truncate_to_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` with at most ``max_tokens`` tokens (what a server returns at the limit)."""
    used, end = 0, 0
    for match in TOKEN_PIECE.finditer(text):
        cost = math.ceil(len(match.group()) / CHARS_PER_PIECE_TOKEN)
        if used + cost > max_tokens:
            return text[: match.start() + (max_tokens - used) * CHARS_PER_PIECE_TOKEN]
        used, end = used + cost, match.end()
    return text if used <= max_tokens else text[:end]


# the schema block itself, not the instructions' mention of "<response_schema> markup tags"
RESPONSE_SCHEMA = re.compile(r"<response_schema>\s*(\{.*?\})\s*</response_schema>", re.DOTALL)
CODE_LANGUAGE = re.compile(r"Your response must be code written in ([\w+#.:-]+?)\.?\s*$", re.MULTILINE)
WORDS = ["alpha", "bravo", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kestrel"]


def _pick(seed: str, path: str, n: int) -> int:
    """A deterministic choice in ``range(n)`` for one place (``path``) of the answer to one prompt (``seed``)."""
    return int(hashlib.sha256(f"{seed}|{path}".encode()).hexdigest()[:12], 16) % max(n, 1)


def instance_of(schema: dict, seed: str, *, root: dict | None = None, path: str = "$"):
    """A value matching the JSON schema ``schema`` (the subset structured outputs use: objects, arrays, scalars with
    bounds, ``enum``/``const``, ``$ref`` to ``$defs``, ``anyOf``/``oneOf``/``allOf``), the same for the same
    ``seed``. Every declared property is filled, so the value also holds when all of them are required."""
    root = schema if root is None else root
    if "$ref" in schema:
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        return instance_of({**_resolved(schema, root), **extra}, seed, root=root, path=path)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][_pick(seed, path, len(schema["enum"]))]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return instance_of(options[0], seed, root=root, path=path)
    if schema.get("allOf"):
        merged: dict = {}
        for part in schema["allOf"]:
            part = _resolved(part, root)
            merged = {**merged, **part, "properties": {**merged.get("properties", {}), **part.get("properties", {})}}
        return instance_of(merged, seed, root=root, path=path)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: instance_of(sub, seed, root=root, path=f"{path}.{name}") for name, sub in properties.items()}
    if kind == "array":
        low = schema.get("minItems", 1)
        count = max(low, min(schema.get("maxItems", 2), 2))
        items = schema.get("items", {})
        return [instance_of(items, seed, root=root, path=f"{path}[{i}]") for i in range(count)]
    if kind in ("integer", "number"):
        low = schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else schema.get("minimum", 0)
        high = schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else schema.get("maximum", low + 100)
        value = math.ceil(low) + _pick(seed, path, math.floor(high) - math.ceil(low) + 1)
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return bool(_pick(seed, path, 2))
    if kind == "null":
        return None
    if schema.get("format") == "date":
        return f"2024-{1 + _pick(seed, path, 12):02d}-{1 + _pick(seed, path + 'd', 28):02d}"
    if schema.get("format") == "date-time":
        return f"2024-{1 + _pick(seed, path, 12):02d}-{1 + _pick(seed, path + 'd', 28):02d}T12:00:00Z"
    text = f"{WORDS[_pick(seed, path, len(WORDS))]} {hashlib.sha256(f'{seed}|{path}'.encode()).hexdigest()[:6]}"
    text = text.ljust(schema.get("minLength", 0), "x")
    return text[: schema["maxLength"]] if "maxLength" in schema else text


def _resolved(schema: dict, root: dict) -> dict:
    """``schema`` with its ``$ref`` (a JSON pointer into ``root``, such as ``#/$defs/Name``) followed."""
    while "$ref" in schema:
        target: dict = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            if part:
                target = target[part]
        schema = target
    return schema


def code_answer_for(prompt: str, language: str) -> str:
    """A deterministic code answer in one fenced block: a small linter-clean function for Python, a query for SQL."""
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:10]
    if language in ("python", "py"):
        code = (
            f"def answer_{digest}(values: list[int]) -> int:\n"
            f'    """Return the sum of the values, plus {int(digest[:2], 16)}."""\n'
            f"    return sum(values) + {int(digest[:2], 16)}\n"
        )
    elif language.startswith("sql"):
        code = f"SELECT '{digest}' AS answer;\n"
    else:
        code = f"// answer {digest}\n"
    return f"```{language}\n{code}```"


def message_text(content) -> str:
    """The text of a message's content (a string or a list of content parts)."""
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")


class FakeLLMServer:
    """Answers ``POST /v1/chat/completions`` on 127.0.0.1 with text derived from the prompt.

    ``requests`` counts every completion request by kind (``health_check`` or ``generation``) and model;
    ``auth_headers`` keeps the Authorization headers seen (to check the key reached the server). The behaviours of a
    real server (module docstring) are set by attribute and undone by :meth:`reset`.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.usage = "prompt_words"  # or "text": usage counted from every message and the answer
        self.answer_tokens: int | None = None  # answer this many tokens of text (default: a short answer)
        self.context_window: int | None = None  # messages + max_tokens above this get a 400
        self.context_error = "vllm"  # the shape of that 400: "vllm" or "openai"
        self.request_log: list[dict] = []
        self.refuse_after: int | None = None  # see go_away()
        self.dropped = 0  # requests reset without an answer since the server went away
        self._back_timer: threading.Timer | None = None
        self._back_after_s: float | None = None
        self._generation_posts = 0
        self.requests: Counter[tuple[str, str]] = Counter()
        self.prompts: list[str] = []
        self.auth_headers: set[str] = set()
        # fault injection: prompt -> (HTTP status, body) or None for a normal answer
        self.fault = None
        # when set, every generation request is answered with this object as JSON (instead of one built from the
        # request's schema)
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
                if not server._admit(body):
                    self._reset_connection()
                    return
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
                    server._log(body, status)
                    self._send(status, payload)
                    return
                overflow = server.context_overflow(body)
                if overflow is not None:
                    server._log(body, 400)
                    self._send(400, overflow)
                    return
                answer = server.completion(body)
                server._log(body, 200, answer)
                self._send(200, answer)

            def _reset_connection(self) -> None:
                # what a client sees of a server that died: the connection is reset, no answer
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._handler = Handler
        self.httpd: ThreadingHTTPServer | None = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._listen_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The base URL to configure as a provider endpoint."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLLMServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._cancel_back_timer()
        self._close_listener()

    @property
    def listening(self) -> bool:
        """False while the server is away (connections refused)."""
        return self.httpd is not None

    def go_away(self, after: int = 0, back_after_s: float | None = None) -> None:
        """Stop listening once ``after`` more generation requests have arrived (health checks do not count):
        later connections are refused and requests accepted meanwhile are reset unanswered, as when a server
        process dies mid-stage. With ``back_after_s`` it listens again on the same port that long after leaving."""
        with self.lock:
            self.refuse_after = self._generation_posts + after
            self._back_after_s = back_after_s
        if after <= 0:
            self._leave_now()

    def come_back(self) -> None:
        """Listen again on the same port and answer every request (undoes :meth:`go_away`)."""
        self._cancel_back_timer()
        with self.lock:
            self.refuse_after = None
        with self._listen_lock:
            if self.httpd is None:
                self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
                self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
                self.thread.start()

    def _leave_now(self) -> None:
        self._close_listener()
        back = self._back_after_s
        if back is not None:
            self._cancel_back_timer()
            self._back_timer = threading.Timer(back, self.come_back)
            self._back_timer.daemon = True
            self._back_timer.start()

    def _close_listener(self) -> None:
        with self._listen_lock:
            if self.httpd is not None:
                self.httpd.shutdown()
                self.httpd.server_close()
                self.httpd = None  # only now: `listening` turns False once connections are refused

    def _cancel_back_timer(self) -> None:
        timer, self._back_timer = self._back_timer, None
        if timer is not None:
            timer.cancel()

    def _admit(self, body: dict) -> bool:
        """Whether to answer this request; the one that reaches ``refuse_after`` closes the listener."""
        if self.user_prompt(body) == HEALTH_CHECK_PROMPT:
            with self.lock:
                refused = self.refuse_after is not None and self._generation_posts >= self.refuse_after
                self.dropped += refused
            return not refused
        with self.lock:
            self._generation_posts += 1
            number, limit = self._generation_posts, self.refuse_after
            refused = limit is not None and number > limit
            self.dropped += refused
        if limit is not None and number == limit:
            threading.Thread(target=self._leave_now, daemon=True).start()  # shutdown() waits for the serve loop
        return not refused

    @staticmethod
    def user_prompt(body: dict) -> str:
        """The text of the last user message (plain or content parts)."""
        messages = body.get("messages", [])
        return message_text(next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""))

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
        self.come_back()
        self.generation_requests = 0
        self.delay_s = 0.0
        self.fault = None
        self.structured_answer = None
        self.usage = "prompt_words"
        self.answer_tokens = None
        self.context_window = None
        self.context_error = "vllm"
        with self.lock:
            self.requests.clear()
            self.prompts.clear()
            self.peak_in_flight = self.in_flight
            self.spans.clear()
            self.request_log.clear()
            self.dropped = 0

    def _log(self, body: dict, status: int, answer: dict | None = None) -> None:
        kind = "health_check" if self.user_prompt(body) == HEALTH_CHECK_PROMPT else "generation"
        usage = (answer or {}).get("usage", {})
        entry = {
            "kind": kind,
            "model": body.get("model", ""),
            "status": status,
            "messages": len(body.get("messages", [])),
            "max_tokens": self.max_tokens(body),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "finish_reason": answer["choices"][0]["finish_reason"] if answer else None,
        }
        with self.lock:
            self.request_log.append(entry)

    def tokens_used(self, kind: str | None = "generation") -> int:
        """Prompt plus completion tokens of the answered requests of one kind (``None``: all), as reported."""
        with self.lock:
            return sum(
                e["prompt_tokens"] + e["completion_tokens"] for e in self.request_log if kind in (None, e["kind"])
            )

    @staticmethod
    def max_tokens(body: dict) -> int | None:
        """The answer limit a request asks for (``max_tokens`` or ``max_completion_tokens``)."""
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return int(value) if isinstance(value, (int, float)) else None

    @staticmethod
    def prompt_tokens(body: dict) -> int:
        """Input tokens of a request as a real server counts them: every message and the chat template's own."""
        messages = body.get("messages", [])
        content = sum(count_tokens(message_text(m.get("content"))) for m in messages)
        return content + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + TEMPLATE_TOKENS_PER_REQUEST

    def context_overflow(self, body: dict) -> dict | None:
        """The 400 body of a request that does not fit ``context_window``, in vLLM's or OpenAI's shape."""
        if self.context_window is None:
            return None
        prompt, limit = self.prompt_tokens(body), self.max_tokens(body) or 0
        if prompt + limit <= self.context_window:
            return None
        if self.context_error == "openai":
            message = (
                f"This model's maximum context length is {self.context_window} tokens. However, your messages "
                f"resulted in {prompt} tokens. Please reduce the length of the messages."
            )
            return {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
        message = (
            f"This model's maximum context length is {self.context_window} tokens. However, you requested "
            f"{prompt + limit} tokens ({prompt} in the messages, {limit} in the completion). Please reduce the "
            "length of the messages or completion."
        )
        return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}

    @staticmethod
    def requested_schema(body: dict) -> dict | None:
        """The JSON schema a request asks the answer to match: ``response_format`` (``json_schema``; ``json_object``
        asks for any object) or, as Data Designer writes it, a ``<response_schema>`` block in the newest message
        that has one."""
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            spec = response_format.get("json_schema") or {}
            return spec.get("schema", spec)
        if response_format.get("type") == "json_object":
            return {"type": "object"}
        for message in reversed(body.get("messages", [])):
            found = RESPONSE_SCHEMA.search(message_text(message.get("content")))
            if found:
                try:
                    return json.loads(found.group(1))
                except json.JSONDecodeError:
                    return None  # not a schema we can read: a plain answer, as before
        return None

    @staticmethod
    def requested_code_language(body: dict) -> str | None:
        """The language a code request asks for (Data Designer's code columns say it in the prompt)."""
        for message in reversed(body.get("messages", [])):
            found = CODE_LANGUAGE.search(message_text(message.get("content")))
            if found:
                return found.group(1).lower()
        return None

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
        elif self.answer_tokens is not None:
            content = self.long_answer_for(user, self.answer_tokens)
        elif (schema := self.requested_schema(body)) is not None:
            content = json.dumps(instance_of(schema, user))
        elif (language := self.requested_code_language(body)) is not None:
            content = code_answer_for(user, language)
        else:
            content = self.answer_for(user)
        limit = self.max_tokens(body)
        finish_reason = "stop"
        if limit is not None and count_tokens(content) > limit:
            content, finish_reason = truncate_to_tokens(content, limit), "length"
        if self.usage == "text":
            prompt_tokens, completion_tokens = self.prompt_tokens(body), count_tokens(content)
        else:
            prompt_tokens = max(1, len(user.split()))
            completion_tokens = 2 if limit is None else min(2, limit)
        return {
            "id": f"chatcmpl-{int(time.time() * 1000)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "test-model"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    @staticmethod
    def long_answer_for(prompt: str, tokens: int) -> str:
        """A deterministic answer of ``tokens`` tokens: words of four characters from the prompt's digest."""
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        return " ".join(digest[(i * 4) % 60 : (i * 4) % 60 + 4] for i in range(tokens))


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
