"""Real OpenAI-compatible servers for tests and benchmarks, on 127.0.0.1 only.

- llama.cpp's `llama-server`, built by `.ci/llama-server.sh` into a cache
  folder outside the clone (`$RLCHAT_LLAMA_DIR`, else the script's default);
  a Hugging Face model folder is converted to GGUF with the converter in the
  same sources.
- `transformers serve` from the `transformers[serving]` extra.

Each server is started at a free port, waited for with a deadline, and
stopped (killed if it does not stop) by the caller.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

LLAMA_VERSION = "0.3.36"
START_SECONDS = 120.0

# convert_hf_to_gguf.py refuses a BPE tokenizer whose pre-tokenizer it does
# not know by hash, as the tiny models' own is: declare GPT-2's byte-level one.
_CONVERT = """
import runpy, sys
root = sys.argv[1]
sys.path[:0] = [root, root + "/gguf-py"]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(root + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def llama_dir() -> Path | None:
    """The folder .ci/llama-server.sh built (bin/llama-server, src/), if it did."""
    given = os.environ.get("RLCHAT_LLAMA_DIR")
    if given:
        folder = Path(given)
    else:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = next((line for line in info if line.startswith("flags")), "")
        digest = hashlib.md5(flags.encode()).hexdigest()[:8]
        folder = Path.home() / ".cache" / "rlchat" / f"llama.cpp-{LLAMA_VERSION}-{digest}"
    return folder if (folder / "bin" / "llama-server").is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def to_gguf(model: Path, out: Path, outtype: str = "f16") -> Path:
    """A Hugging Face model folder converted to one GGUF file (f16, q8_0, ...)."""
    folder = llama_dir()
    assert folder is not None, "llama.cpp is not built: run .ci/llama-server.sh"
    subprocess.run([sys.executable, "-c", _CONVERT, str(folder / "src"), str(model),
                    "--outfile", str(out), "--outtype", outtype],
                   check=True, capture_output=True)
    return out


class Server:
    """One server process; `base_url` ends in /v1."""

    def __init__(self, command: list[str], port: int, log: Path) -> None:
        self.command, self.port, self.log = command, port, log
        self.process: subprocess.Popen | None = None
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def start(self, ready_path: str = "/health", timeout: float = START_SECONDS) -> Server:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{ready_path}", timeout=2).is_success:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server not ready in {timeout:g} s: {self.log}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: the server dies as if it crashed."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def llama_server(gguf: Path, log: Path, *, port: int | None = None, parallel: int = 8,
                 context: int = 4096, alias: str = "tinychat",
                 extra: tuple[str, ...] = ()) -> Server:
    folder = llama_dir()
    assert folder is not None, "llama.cpp is not built: run .ci/llama-server.sh"
    port = port or free_port()
    command = [str(folder / "bin" / "llama-server"), "-m", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "-np", str(parallel), "-c", str(context),
               "--alias", alias, "--no-webui", *extra]
    return Server(command, port, log)


def transformers_server(model: Path | None, log: Path, *, port: int | None = None) -> Server:
    """`transformers serve`, with one model, or none (it loads what it is asked for)."""
    port = port or free_port()
    cli = shutil.which("transformers", path=str(Path(sys.executable).parent))
    command = [cli or "transformers", "serve", *([str(model)] if model else []),
               "--host", "127.0.0.1", "--port", str(port)]
    server = Server(command, port, log)
    return server
