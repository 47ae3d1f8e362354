"""The critic client: a vision model behind Ollama's /api/chat or an OpenAI-compatible
/v1/chat/completions. A bad answer is retried with the error and ends as a recorded failed
judgement; only a critic that cannot work at all (down, model missing, blind) raises."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import requests

from imitatoes.clients.critic_image import Prepared, prepare
from imitatoes.clients.net import LimitExceeded, bounded, port_of, reason, session_for
from imitatoes.errors import ImitatoesError
from imitatoes.loop import verdict as verdicts
from imitatoes.loop.ports import Critic
from imitatoes.loop.verdict import Attempt, Judgement
from imitatoes.spec.model import CriticConfig

ANSWER_CAP = 16 * 2**20  # a verdict is a few kB; a server streaming forever stops here
SYSTEM = ("You are a meticulous visual critic. You look at the attached image, check it against "
          "a checklist and answer only with a JSON object in the requested shape.")
def how_to_start(url: str) -> str:
    """What to do when the critic does not answer at `url`."""
    port = port_of(url, 11434)
    serve = "ollama serve" if port == 11434 else f"OLLAMA_HOST=127.0.0.1:{port} ollama serve"
    return (f"Start Ollama ({serve}), or point imitatoes at it with --ollama-url or "
            "IMITATOES_OLLAMA_URL.")


class CriticError(ImitatoesError):
    """The critic cannot work at all; the run should stop before wasting renders."""


class CriticUnreachable(CriticError):
    pass


class ModelMissing(CriticError):
    exit_code = 2


class ModelBlind(CriticError):
    exit_code = 2


class _Base(Critic):
    """What both critic backends share; each serves the loop's Critic port."""

    def __init__(self, spec: CriticConfig, read_timeout: float | None = None) -> None:
        self.spec = spec
        self.checklist: tuple[str, ...] = ()  # the requirements of the question being asked
        self.schema: dict[str, Any] | None = None  # another question's schema (head-to-head)
        self.url = spec.url.rstrip("/")
        self.timeout = (5.0, read_timeout or spec.timeout)
        self.session = session_for(self.url)

    def _post(self, path: str, body: dict[str, Any], seconds: float | None = None
              ) -> requests.Response:
        return self._call("POST", path, seconds or self.timeout[1], json=body)

    def _get(self, path: str) -> requests.Response:
        return self._call("GET", path, 30.0)

    def _call(self, method: str, path: str, seconds: float, **kwargs: Any) -> requests.Response:
        """One request, over within `seconds` whatever the server does, its answer capped."""
        try:
            return bounded(self.session, method, self.url + path, seconds, ANSWER_CAP,
                           self.timeout[0], **kwargs)
        except requests.exceptions.Timeout:
            raise CriticUnreachable(f"the critic at {self.url} did not answer {path} within "
                                    f"{seconds:g} s (a cold model load counts; raise "
                                    "critic.timeout if the model is large)") from None
        except LimitExceeded as exc:
            raise CriticUnreachable(f"the critic at {self.url} began to answer {path}, but "
                                    f"{exc.what}; is something in between holding the "
                                    "connection open?") from None
        except requests.exceptions.RequestException as exc:
            raise CriticUnreachable(f"the critic is not reachable at {self.url} ({path}: "
                                    f"{reason(exc)}). {how_to_start(self.url)}") from None

    def judge(self, image: bytes, prompt: str, checklist: Sequence[str] = ()) -> Judgement:
        """Ask for a verdict; retry a bad answer with what was wrong, up to spec.retries times.
        With `checklist`, the schema sent asks for exactly those items, in order."""
        self.checklist = tuple(checklist)
        start = time.monotonic()
        g = self.spec.image
        prepared = prepare(image, g.max_edge, g.format, g.quality)
        messages = self._messages(prompt, prepared)
        attempts: list[Attempt] = []
        for _ in range(1 + self.spec.retries):
            attempt = self._ask(messages)
            try:
                if attempt.error:
                    raise verdicts.VerdictInvalid(attempt.error)
                found = verdicts.parse(attempt.content)
            except verdicts.VerdictInvalid as exc:
                attempts.append(Attempt(attempt.content, attempt.thinking, str(exc), attempt.stats))
                if attempt.content:  # tell the model what was wrong with its own answer
                    messages = [*messages, {"role": "assistant", "content": attempt.content},
                                {"role": "user", "content": f"That answer was not usable: {exc}. "
                                 "Answer again with only the JSON object, complete and valid."}]
                continue
            attempts.append(attempt)
            return Judgement(found, tuple(attempts), prepared, time.monotonic() - start)
        return Judgement(None, tuple(attempts), prepared, time.monotonic() - start)

    def compare(self, first: bytes, second: bytes, prompt: str) -> verdicts.Pairwise:
        """Both images in one question (search.head_to_head): which meets the checklist
        better. Its own strict schema; a bad answer is retried like a verdict."""
        start = time.monotonic()
        g = self.spec.image
        images = [prepare(data, g.max_edge, g.format, g.quality) for data in (first, second)]
        messages = self._messages(prompt, *images)
        self.schema = verdicts.PAIR_SCHEMA
        attempts: list[Attempt] = []
        try:
            for _ in range(1 + self.spec.retries):
                attempt = self._ask(messages)
                try:
                    if attempt.error:
                        raise verdicts.VerdictInvalid(attempt.error)
                    winner, reason = verdicts.parse_pair(attempt.content)
                except verdicts.VerdictInvalid as exc:
                    attempts.append(Attempt(attempt.content, attempt.thinking, str(exc),
                                            attempt.stats))
                    continue
                attempts.append(attempt)
                return verdicts.Pairwise(winner, reason, tuple(attempts),
                                         time.monotonic() - start)
        finally:
            self.schema = None
        return verdicts.Pairwise(None, attempts[-1].error if attempts else "no answer",
                                 tuple(attempts), time.monotonic() - start)

    def close(self) -> None:
        self.session.close()

    def _format(self) -> dict[str, Any]:
        """The JSON Schema of the question being asked."""
        return self.schema or verdicts.schema_for(self.checklist, self.spec.knobs,
                                                  self.spec.regions)

    def _messages(self, prompt: str, *images: Prepared) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _ask(self, messages: list[dict[str, Any]]) -> Attempt:
        raise NotImplementedError


def _error_text(resp: requests.Response) -> str:
    """Ollama's {"error": "..."} (sometimes a llama-server JSON inside the string) or /v1's."""
    try:
        err = resp.json().get("error", resp.text)
    except (ValueError, AttributeError, RecursionError):
        return resp.text.strip()[:300]
    if isinstance(err, str) and err.startswith("{"):
        with contextlib.suppress(ValueError, AttributeError):  # not JSON after all: keep it
            err = json.loads(err).get("error", err)
    if isinstance(err, dict):
        return str(err.get("message", err))
    return str(err)


def _blind(text: str) -> bool:
    return "multimodal" in text or "image input is not supported" in text


class OllamaCritic(_Base):
    """Ollama's /api/chat, non-streaming, with the verdict schema as `format`."""

    def __init__(self, spec: CriticConfig, read_timeout: float | None = None) -> None:
        super().__init__(spec, read_timeout)
        self.structured = True  # False once a server older than 0.5 refused a schema

    def _messages(self, prompt: str, *images: Prepared) -> list[dict[str, Any]]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt, "images": [i.base64() for i in images]}]

    def _ask(self, messages: list[dict[str, Any]]) -> Attempt:
        fmt: Any = self._format() if self.structured else "json"
        body = {"model": self.spec.model, "messages": messages, "stream": False,
                "format": fmt, "keep_alive": self.spec.keep_alive,
                "options": {"temperature": self.spec.temperature, "seed": self.spec.seed,
                            "num_ctx": self.spec.num_ctx}}
        resp = self._post("/api/chat", body)
        if resp.status_code == 400 and self.structured and "format" in _error_text(resp):
            self.structured = False  # a server older than 0.5 takes only "json"
            return self._ask(messages)
        if resp.status_code >= 500 and not _blind(_error_text(resp)):
            return Attempt("", "", f"Ollama answered {resp.status_code}: {_error_text(resp)}")
        self._raise_for(resp)
        data = _json(resp, self.url)
        message = data.get("message") or {}
        stats = _numbers(data, ("total_duration", "load_duration", "prompt_eval_count",
                                "eval_count", "eval_duration"))
        content, thinking = str(message.get("content", "")), str(message.get("thinking", ""))
        error = ""
        if data.get("done_reason") == "length":
            error = "the answer was cut off (done_reason length); keep it short"
        elif data.get("done") is False:
            error = "the answer was aborted before it finished (done: false)"
        return Attempt(content, thinking, error, stats)

    def _raise_for(self, resp: requests.Response) -> None:
        if resp.status_code == 200:
            return
        text = _error_text(resp)
        if resp.status_code == 404 and "not found" in text:
            raise ModelMissing(f"the model {self.spec.model!r} is not in Ollama at {self.url}; "
                               f"run: ollama pull {self.spec.model}")
        if _blind(text):
            raise ModelBlind(f"the model {self.spec.model!r} cannot see images ({text}); choose "
                             "a vision model such as qwen2.5vl:7b, gemma3 or llava")
        raise CriticUnreachable(f"Ollama at {self.url} answered {resp.status_code}: {text}")

    # -- checks before the first render ---------------------------------------------------------
    def version(self) -> str:
        resp = self._get("/api/version")
        return str(_json(resp, self.url).get("version", "unknown"))

    def check(self) -> dict[str, Any]:
        """Reachable, model pulled, model sees images; raises the CriticError that says which."""
        version = self.version()
        tags = _json(self._get("/api/tags"), self.url).get("models") or []
        mine = [m for m in tags if isinstance(m, dict) and _tagged(self.spec.model) in
                {_tagged(str(m.get("name"))), _tagged(str(m.get("model")))}]
        if not mine:
            raise ModelMissing(f"the model {self.spec.model!r} is not pulled in Ollama at "
                               f"{self.url}; run: ollama pull {self.spec.model}")
        resp = self._post("/api/show", {"model": self.spec.model}, 30.0)
        self._raise_for(resp)
        shown = _json(resp, self.url)
        capabilities = shown.get("capabilities")
        if capabilities is not None and "vision" not in capabilities:
            raise ModelBlind(f"the model {self.spec.model!r} cannot see images (capabilities: "
                             f"{', '.join(capabilities)}); choose a vision model such as "
                             "qwen2.5vl:7b, gemma3 or llava")
        size, details = mine[0].get("size"), shown.get("details") or mine[0].get("details")
        return {"version": version, "model": self.spec.model, "capabilities": capabilities,
                "size": size if isinstance(size, int) else None,
                "digest": str(mine[0].get("digest") or "") or None,
                "details": {k: details.get(k) for k in ("family", "parameter_size",
                                                         "quantization_level", "format")}
                if isinstance(details, dict) else None}

    def unload(self, wait: float = 30.0) -> None:
        """Free the GPU for ComfyUI: keep_alive 0 unloads the model; then wait (at most `wait`
        seconds) until /api/ps no longer lists it, so the render finds the memory free."""
        self._post("/api/chat", {"model": self.spec.model, "messages": [], "keep_alive": 0},
                   60.0)
        if wait:
            self.wait_unloaded(wait)

    def wait_unloaded(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            loaded = _json(self._get("/api/ps"), self.url).get("models") or []
            if _tagged(self.spec.model) not in {_tagged(str(m.get("name"))) for m in loaded}:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)


class OpenAICritic(_Base):
    """An OpenAI-compatible /v1/chat/completions (llama.cpp server, LM Studio, vLLM, Ollama)."""

    def _messages(self, prompt: str, *images: Prepared) -> list[dict[str, Any]]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": [{"type": "text", "text": prompt}, *(
                    {"type": "image_url", "image_url": {"url": i.data_uri()}}
                    for i in images)]}]

    def _ask(self, messages: list[dict[str, Any]]) -> Attempt:
        body = {"model": self.spec.model, "messages": messages, "stream": False,
                "temperature": self.spec.temperature, "seed": self.spec.seed,
                "response_format": {"type": "json_schema", "json_schema": {
                    "name": "verdict", "strict": True, "schema": self._format()}}}
        resp = self._post("/v1/chat/completions", body)
        if resp.status_code != 200:
            text = _error_text(resp)
            if resp.status_code == 404 and "not found" in text:
                raise ModelMissing(f"the model {self.spec.model!r} is not served at {self.url}")
            if _blind(text):
                raise ModelBlind(f"the model {self.spec.model!r} cannot see images ({text})")
            raise CriticUnreachable(f"{self.url} answered {resp.status_code}: {text}")
        data = _json(resp, self.url)
        choice = (data.get("choices") or [{}])[0]
        content = str((choice.get("message") or {}).get("content") or "")
        error = "the answer was cut off (finish_reason length)" \
            if choice.get("finish_reason") == "length" else ""
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        return Attempt(content, "", error, _numbers(usage, ("prompt_tokens", "completion_tokens",
                                                            "total_tokens")))

    def check(self) -> dict[str, Any]:
        models = _json(self._get("/v1/models"), self.url).get("data") or []
        ids = {str(m.get("id")) for m in models}
        if ids and self.spec.model not in ids and _tagged(self.spec.model) not in ids:
            raise ModelMissing(f"the model {self.spec.model!r} is not served at {self.url} "
                               f"(it serves: {', '.join(sorted(ids))})")
        return {"model": self.spec.model}

    def unload(self, wait: float = 0.0) -> None:  # OpenAI-compatible servers cannot unload
        pass


def make_critic(spec: CriticConfig) -> OllamaCritic | OpenAICritic:
    """The one place a critic is built from its configuration."""
    return OpenAICritic(spec) if spec.provider == "openai" else OllamaCritic(spec)


def _numbers(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, int | float]:
    """The server's counters that are plain finite numbers (they go into strict JSON)."""
    return {k: data[k] for k in keys if isinstance(data.get(k), int | float)
            and not isinstance(data[k], bool) and math.isfinite(data[k])}


def _tagged(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _json(resp: requests.Response, url: str) -> dict[str, Any]:
    try:
        data = resp.json()
    except (ValueError, RecursionError):
        raise CriticUnreachable(f"{url} answered {resp.status_code} without JSON: "
                                f"{resp.text[:80]!r}; is this URL really the critic's server?") \
            from None
    if not isinstance(data, dict):
        raise CriticUnreachable(f"{url} answered with {str(data)[:80]!r}, not a JSON object")
    return data
