"""An OpenAI-compatible server that misbehaves on request, on 127.0.0.1 only.

It serves well by default: a model list, chat completions streamed with n
choices and log-probs, `[DONE]` at the end.  A fault makes one answer
misbehave, chosen two ways:

- the first path segment, for every request through that base URL (a fault
  at start-up: the model list and the probe misbehave too):
  `server.url("html")` is `http://127.0.0.1:PORT/html/v1`;
- the words `fault NAME` in the last user message, for that turn only.

With the path segment `embeds` it also embeds text (POST /v1/embeddings):
a bag of the text's words hashed into EMBED_DIMS numbers, so that texts
that share words point alike; the words `fault embed-nonsense`, `fault
embed-refuse` or `fault embed-slow` (no answer for HOLD_SECONDS) in the
first text spoil that one answer.

With the path segment `vllm-lora` it also loads LoRA adapters on request
as vLLM does with VLLM_ALLOW_RUNTIME_LORA_UPDATING (POST
/v1/load_lora_adapter), and a reply drawn under such an adapter's name says
so (vLLM needs a GPU; this is its API, not its model).

Every loop is bounded in count and time: a trickle stops after TRICKLE_BYTES,
a silent answer after HOLD_SECONDS, a huge stream after the megabytes it was
asked for.  `hits` counts the requests of each fault (the backoff tests read
it).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import threading
import time
import zlib
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "mis"
TRICKLE_SECONDS, TRICKLE_BYTES = 0.2, 400
HOLD_SECONDS = 30.0
WRONG_TYPES = {  # a chunk's field replaced by a value of the wrong type
    "choices-string": ("choices", "abc"),
    "choices-number": ("choices", 5),
    "choice-string": ("choice", "abc"),
    "index-string": ("index", "0"),
    "index-float": ("index", 0.5),
    "index-bool": ("index", True),
    "content-number": ("content", 7),
    "content-list": ("content", ["a"]),
    "delta-string": ("delta", "hi"),
    "finish-number": ("finish_reason", 3),
    "logprobs-string": ("logprobs", "x"),
}
RETRY_AFTER = {"retry-0": "0", "retry-negative": "-5", "retry-junk": "soon",
               "retry-date": "Wed, 21 Oct 2015 07:28:00 GMT", "retry-days": "864000"}
# The server's own paths beside /v1 (llama-server's, vLLM's, Ollama's): no fault.
ROOT_PATHS = ("v1", "props", "tokenize", "detokenize", "apply-template", "version", "api",
              "health")
_FAULT = re.compile(r"\bfault ([a-z0-9-]+)")
EMBED_DIMS = 32


def reply_words(message: str, row: int, seed: int) -> list[str]:
    """A reply of its own for each row (and seed), token by token."""
    words = ["Reply", f"{row}", "of", f"{seed % 97}", "to", *message.split()[:6],
             "with", "some", "plain", "words."]
    return [words[0]] + [" " + w for w in words[1:]]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small writes go out at once
    server: MisbehavingServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()  # rlchat hangs up on a fault, as it should

    # plumbing ---------------------------------------------------------------
    def _body(self) -> dict[str, Any]:
        size = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(size) if size else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        return body if isinstance(body, dict) else {}

    def _send(self, status: int, payload: bytes, content_type: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(self, status: int, value: Any, **headers: str) -> None:
        self._send(status, json.dumps(value).encode(), headers=headers)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True

    def _event(self, value: Any) -> None:
        data = value if isinstance(value, bytes) else json.dumps(value).encode()
        self.wfile.write(b"data: " + data + b"\n\n")

    def _split(self) -> tuple[str, str]:
        """(fault from the path, the path under /v1 or the root)."""
        parts = self.path.split("?")[0].strip("/").split("/")
        fault = ""
        if parts and parts[0] not in ROOT_PATHS:
            fault = parts.pop(0)
        if parts and parts[0] == "v1":
            parts.pop(0)
        return fault, "/" + "/".join(parts)

    # requests ---------------------------------------------------------------
    def do_GET(self) -> None:
        fault, path = self._split()
        self._serve(fault, path, {})

    def do_POST(self) -> None:
        fault, path = self._split()
        body = self._body()
        if path in ("/chat/completions", "/completions") and not fault:
            messages = body.get("messages") or [{}]
            last = messages[-1] if isinstance(messages, list) and messages else {}
            found = _FAULT.search(str(last.get("content", "")) if isinstance(last, dict)
                                  else "")
            fault = found.group(1) if found else ""
        self._serve(fault, path, body)

    def _serve(self, fault: str, path: str, body: dict[str, Any]) -> None:
        self.server.hits[fault] += 1
        self.server.times[fault].append(time.monotonic())
        self.server.keys.add(self.headers.get("authorization", ""))
        if self._misbehave(fault, path, body):
            return
        if path == "/models":
            listed = [] if fault in ("unlisted", "refuse-unlisted") else [{"id": MODEL}]
            self._json(200, {"object": "list", "data": listed})
        elif path == "/embeddings" and fault == "embeds":
            self._embed(body)
        elif path == "/load_lora_adapter" and fault == "vllm-lora":
            self._load_lora(body)
        elif path == "/chat/completions":
            if fault == "refuse-unlisted" and body.get("model") != MODEL:
                self._json(404, {"error": {"message": f"model '{body.get('model')}' not found"}})
            else:
                self._chat(fault, body)
        else:
            self._json(404, {"error": {"message": "not found"}})

    def _misbehave(self, fault: str, path: str, body: dict[str, Any]) -> bool:
        """Answer as the fault says; False where it changes nothing here."""
        if fault == "no-headers":  # reads the request, then says nothing
            self.server.stopped.wait(HOLD_SECONDS)
            self.close_connection = True
            return True
        if fault == "trickle-headers":
            self.close_connection = True
            head = b"HTTP/1.1 200 OK\r\n" + b"x-pad: " + b"a" * TRICKLE_BYTES
            for byte in head:
                if self.server.stopped.wait(TRICKLE_SECONDS):
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            return True
        if fault == "html":
            self._send(200, b"<html><body><h1>Gateway</h1></body></html>", "text/html")
            return True
        if fault == "not-json":
            self._send(200, b"this is not json {", "application/json")
            return True
        if fault == "bad-gzip":  # says gzip, is not
            self._send(200, b'{"object": "list", "data": []}',
                       headers={"content-encoding": "gzip"})
            return True
        if fault == "redirect":
            self._send(307, b"", headers={"location": "http://198.51.100.7/v1" + path})
            return True
        if fault in RETRY_AFTER or fault == "busy-503":
            status = 503 if fault == "busy-503" else 429
            headers = {"retry-after": RETRY_AFTER[fault]} if fault in RETRY_AFTER else {}
            self._json(status, {"error": {"message": "overloaded"}}, **headers)
            return True
        if fault == "echo-key-refusal":
            self._json(400, {"error": {"message": "bad key "
                                       + self.headers.get("authorization", "")}})
            return True
        return False

    def _embed(self, body: dict[str, Any]) -> None:
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            self._json(400, {"error": {"message": "input must be text or a list of texts"}})
            return
        found = _FAULT.search(texts[0]) if texts else None
        if found and found.group(1) == "embed-nonsense":
            self._json(200, {"object": "list", "data": [{"embedding": "many numbers"}]})
            return
        if found and found.group(1) == "embed-slow":
            self.server.stopped.wait(HOLD_SECONDS)
            self.close_connection = True
            return
        if found and found.group(1) == "embed-refuse":
            self._json(500, {"error": {"message": "the embedding model crashed"}})
            return
        data = []
        for index, text in enumerate(texts):
            vector = [0.0] * EMBED_DIMS
            vector[0] = 1.0
            for word in re.findall(r"[a-z]+", text.lower()):
                h = zlib.crc32(word.encode())
                vector[1 + h % (EMBED_DIMS - 1)] += 1.0 if h >> 16 & 1 else -1.0
            data.append({"object": "embedding", "index": index, "embedding": vector})
        self._json(200, {"object": "list", "data": data, "model": body.get("model")})

    def _load_lora(self, body: dict[str, Any]) -> None:
        """vLLM's runtime LoRA loading (VLLM_ALLOW_RUNTIME_LORA_UPDATING), as
        its docs describe it: a name and a path, a plain-text success."""
        name, path = body.get("lora_name"), body.get("lora_path")
        if not isinstance(name, str) or not isinstance(path, str):
            self._json(400, {"error": {"message": "lora_name and lora_path are required"}})
        elif name in self.server.loras:
            self._json(400, {"error": {"message": f"The lora adapter '{name}' has already "
                                                  "been loaded."}})
        else:
            self.server.loras[name] = path
            self._send(200, f"Success: LoRA adapter '{name}' added successfully.".encode(),
                       "text/plain")

    def _chat(self, fault: str, body: dict[str, Any]) -> None:
        n = body.get("n") if isinstance(body.get("n"), int) else 1
        max_tokens = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else 16
        seed = body.get("seed") if isinstance(body.get("seed"), int) else 0
        messages = body.get("messages") or [{}]
        message = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) else ""
        if fault == "echo-key":
            message = "your key is " + self.headers.get("authorization", "")
        if body.get("model") in self.server.loras:  # an adapter loaded on request says so
            message = f"adapted by {body['model']}: {message}"
        if fault == "gzip-stream":  # a stream that is gzip and says so: fine
            payload = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n"
                               for e in self._events(message, n, max_tokens, seed, ""))
            payload = gzip.compress(payload + b"data: [DONE]\n\n")
            self._send(200, payload, "text/event-stream", {"content-encoding": "gzip"})
            return
        self._start_stream()
        try:
            if fault.startswith("huge-"):
                self._huge(fault)
                return
            if fault == "trickle":
                self._event(self._chunk(0, "Hi", None))
                for _ in range(TRICKLE_BYTES):
                    if self.server.stopped.wait(TRICKLE_SECONDS):
                        break
                    self.wfile.write(b" ")
                    self.wfile.flush()
                return
            if fault == "error-in-stream":
                self._event(self._chunk(0, "Hi", None))
                self._event({"error": {"message": "the model crashed", "code": 500}})
                return
            for number, event in enumerate(self._events(message, n, max_tokens, seed, fault)):
                if fault == "early-end" and number == 3:
                    return
                self._event(event)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _chunk(self, row: int, text: str | None, finish: str | None,
               logprob: Any = -0.5) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": row, "delta": {} if text is None else
                                  {"content": text}, "finish_reason": finish}
        if text is not None:
            choice["logprobs"] = {"content": [{"token": text, "logprob": logprob}]}
        return {"object": "chat.completion.chunk", "model": MODEL, "choices": [choice]}

    def _events(self, message: str, n: int, max_tokens: int, seed: int, fault: str):
        """Rows side by side, a token each per step, then each row's finish."""
        rows = [reply_words(message, 0 if fault == "greedy" else row, seed)
                for row in range(n)]
        ends = [min(len(words), max_tokens) for words in rows]
        for step in range(max(ends) + 1):
            for row, words in enumerate(rows):
                if step < ends[row]:
                    yield self._spoil(self._chunk(row, words[step], None), fault, step)
                elif step == ends[row]:
                    yield self._chunk(row, None, "length" if ends[row] < len(words)
                                      else "stop")

    def _spoil(self, chunk: dict[str, Any], fault: str, step: int) -> Any:
        choice = chunk["choices"][0]
        if fault in WRONG_TYPES and step == 1:
            field, value = WRONG_TYPES[fault]
            if field == "choices":
                chunk["choices"] = value
            elif field == "choice":
                chunk["choices"] = [value]
            elif field == "content":
                choice["delta"]["content"] = value
            else:
                choice[field] = value
        if fault == "nan-logprobs":  # not JSON's numbers; Python writes them
            choice["logprobs"]["content"][0]["logprob"] = [float("nan"), float("inf"), "x",
                                                          True][step % 4]
        if fault == "broken-unicode" and step == 1:
            text = json.dumps(chunk).replace('"delta": {"content": "',
                                             '"delta": {"content": "\\udfff\\ud800\\ud83d')
            return text.encode().replace(b"\\ud83d", b"\\ud83d\xff\xfe")
        return chunk

    def _huge(self, fault: str) -> None:
        """`huge-MB-small`, `huge-MB-large`: that many megabytes of reply text
        in small (one token) or large (256 kB) pieces, or `huge-MB-empty`:
        that many of chunks that carry no text; no max_tokens is heeded."""
        _, megabytes, kind = fault.split("-")
        total = int(megabytes) << 20
        piece = {"small": "word ", "large": "word " * (256 << 10 >> 2) + " ",
                 "empty": ""}[kind]
        event = b"data: " + json.dumps(self._chunk(0, piece, None)).encode() + b"\n\n"
        if kind == "empty":
            event = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {}}]}
                                           ).encode() + b"\n\n"
        batch = event * max(1, (64 << 10) // len(event))
        sent = 0
        while sent < total and not self.server.stopped.is_set():
            self.wfile.write(batch)
            sent += len(batch)
        self._event(self._chunk(0, None, "stop"))
        self.wfile.write(b"data: [DONE]\n\n")


class MisbehavingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.hits: Counter[str] = Counter()
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self.keys: set[str] = set()
        self.loras: dict[str, str] = {}  # vllm-lora: the adapters loaded, name -> path
        self.stopped = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def url(self, fault: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{'/' + fault if fault else ''}/v1"

    def start(self) -> MisbehavingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)

