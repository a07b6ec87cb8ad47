"""Chat models that write and judge explanations: a local model mechscope opens, or any OpenAI-compatible
endpoint (vLLM, llama.cpp's server, ``transformers serve``, hosted APIs), behind one interface.

``client.chat(conversations, max_tokens=, temperature=, top_logprobs=, seed=)`` answers a batch of
conversations (lists of {"role", "content"} messages) with one ``Reply`` each: its text, optionally the
log-probabilities of each generated token and of its ``top_logprobs`` alternatives, and the tokens it cost.
``binary_answers=n`` asks for a scorer's answer "[d,d,...]" of n digits 0/1: a local model's decoding is
held to that form (each digit the likelier of 0 and 1, both listed among the alternatives, so the answer
is well formed and its probabilities defined — the 135M embedded model otherwise copies the few-shot
answers' five digits); an endpoint answers freely and a malformed answer counts as one.
``answer_prefix`` begins a local model's answer with that text (the reply's text includes it), as the
explainer begins it with "[EXPLANATION]:"; ``choices`` (single tokens) make a local model's answer the
likeliest one of them (the intruder scorer's index); an endpoint is sent the conversation alone.

- ``LocalChat(model)``: the model's own chat template; greedy (or seeded sampled) decoding, batched, with
  the conversations' shared beginning (system prompt and few-shot examples: most of every scorer prompt)
  computed once and its key/value cache reused — by every conversation of a batch and by later batches
  that begin the same way. ``prompt_logprobs(conversations, after="\t")`` reads, without generating, the
  likeliest next tokens after every ``after`` of each conversation's last message (the simulation scorer's
  log-probability mode; vLLM's ``prompt_logprobs``); an endpoint has no such method.
- ``OpenAIChat(base_url, model)``: the ``openai`` client (``pip install 'mechscope[explain]'``); the API
  key from ``$OPENAI_API_KEY`` only (never a flag: it would land in shell history and process lists);
  ``concurrency`` requests in flight, a per-request ``timeout``, ``retries`` with exponential backoff on
  connection errors, 408, 409, 429 and 5xx (the client's own retry policy).
- ``CachedChat(client, path)``: every request and its reply stored in a SQLite file keyed by the sha256 of
  the model's name, the messages and the generation settings, so a rerun (or a resumed run) costs nothing
  for what was already asked. ``usage`` counts requests, cache hits and tokens.

``open_chat(spec)`` reads what a user names: ``http(s)://…`` is an endpoint (its model from
``$MECHSCOPE_EXPLAINER_MODEL`` or ``endpoint_model=``), anything else a model ``mechscope.load`` opens.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch

Message = dict[str, str]


class ChatError(ValueError):
    """A chat model could not be used: the model or endpoint named cannot chat, cannot be reached, or refused
    the request (the message says which and why; the command line prints it as an error)."""


@dataclass
class Reply:
    """One answer: ``text``; ``logprobs`` per generated token {"token", "logprob", "top": [[token, logprob], ...]}
    (None unless asked for and given); the tokens it cost; ``cached``: read from the reply cache."""

    text: str
    logprobs: list[dict] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


@dataclass
class Usage:
    """What a client has been asked and what it cost."""

    requests: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, reply: Reply) -> None:
        self.requests += 1
        if reply.cached:
            self.cache_hits += 1
        else:
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"requests": self.requests, "cache_hits": self.cache_hits, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}


class ChatClient(Protocol):
    name: str
    usage: Usage

    def chat(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int, temperature: float = 0.0,
             top_logprobs: int = 0, seed: int = 0, binary_answers: int = 0,
             answer_prefix: str = "", choices: Sequence[str] = ()) -> list[Reply]: ...


def _check_settings(max_tokens: int, temperature: float, top_logprobs: int) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens}: must be ≥ 1")
    if not 0 <= temperature <= 2:
        raise ValueError(f"temperature={temperature}: must be in [0, 2]")
    if not 0 <= top_logprobs <= 20:
        raise ValueError(f"top_logprobs={top_logprobs}: must be in [0, 20]")


class LocalChat:
    """A chat model mechscope opened (``mechscope.load``), answering in-process (see the module docstring)."""

    def __init__(self, model: Any, *, batch_size: int = 16, keep_prefixes: int = 4):
        tok = model.tokenizer
        if not getattr(tok, "chat_template", None):
            raise ChatError(f"{model.name} has no chat template: explaining and scoring need a chat (instruct) model, "
                            "e.g. the embedded smollm2-135m (SmolLM2-135M-Instruct)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be ≥ 1")
        self.model, self.batch_size, self.keep_prefixes = model, batch_size, keep_prefixes
        self.name = f"local:{model.name}"
        self.usage = Usage()
        self._prefixes: list[tuple[tuple[int, ...], Any]] = []  # (ids, key/value cache of those ids), newest last
        eos = model.hf.generation_config.eos_token_id if model.hf.generation_config is not None else None
        eos = eos if eos is not None else tok.eos_token_id
        self._stop = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._limit = getattr(model.hf.config, "max_position_embeddings", None)

    def ids(self, messages: Sequence[Message], answer_prefix: str = "") -> list[int]:
        """The conversation in the model's chat template, ready for the assistant's answer (begun with
        ``answer_prefix``)."""
        text = self.model.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.model.tokenizer(text + answer_prefix, add_special_tokens=False)["input_ids"]

    def chat(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int, temperature: float = 0.0,
             top_logprobs: int = 0, seed: int = 0, binary_answers: int = 0,
             answer_prefix: str = "", choices: Sequence[str] = ()) -> list[Reply]:
        _check_settings(max_tokens, temperature, top_logprobs)
        rows = [self.ids(c, answer_prefix) for c in conversations]
        for r in rows:
            if self._limit is not None and len(r) + max_tokens > self._limit:
                raise ChatError(f"a prompt of {len(r)} tokens (+{max_tokens} to answer) exceeds {self.model.name}'s "
                                f"{self._limit}-token context: show fewer or shorter examples")
        out: list[Reply] = []
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths batch with little padding
        replies: dict[int, Reply] = {}
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for i, reply in zip(chunk, self._generate([rows[i] for i in chunk], max_tokens, temperature,
                                                      top_logprobs, seed, binary_answers, choices)):
                replies[i] = reply
        for i in range(len(rows)):
            replies[i].text = answer_prefix + replies[i].text
            out.append(replies[i])
            self.usage.add(replies[i])
        return out

    def _prefix_cache(self, prefix: list[int]) -> Any:
        """The key/value cache of ``prefix`` [1, P]: a kept one that is ``prefix`` or begins it, extended."""
        from transformers import DynamicCache

        key = tuple(prefix)
        best = None
        for ids, cache in self._prefixes:
            if len(ids) <= len(key) and key[:len(ids)] == ids and (best is None or len(ids) > len(best[0])):
                best = (ids, cache)
        if best is not None and len(best[0]) == len(key):
            return best[1]
        hf = self.model.hf
        dev = self.model.device
        cache = copy.deepcopy(best[1]) if best is not None else DynamicCache(config=hf.config)
        done = len(best[0]) if best is not None else 0
        rest = torch.tensor([prefix[done:]], device=dev)
        hf(input_ids=rest, attention_mask=torch.ones(1, len(prefix), dtype=torch.long, device=dev),
           position_ids=torch.arange(done, len(prefix), device=dev)[None], past_key_values=cache, use_cache=True)
        self._prefixes = ([p for p in self._prefixes if p[0] != key] + [(key, cache)])[-self.keep_prefixes:]
        return cache

    def _token(self, piece: str) -> int:
        ids = self.model.tokenizer.encode(piece, add_special_tokens=False)
        if len(ids) != 1:
            raise ChatError(f"{self.model.name}'s tokenizer spells {piece!r} as {len(ids)} tokens: its answers cannot be "
                            "held to a form; score with free_answers=True")
        return ids[0]

    def _binary_form(self, n: int) -> list[int | tuple[int, ...]]:
        """The token steps of an answer "[d,d,...]" with ``n`` digits: a fixed token, or the (0, 1) choice."""
        pieces = {piece: self._token(piece) for piece in "[],01"}
        digits = (pieces["0"], pieces["1"])
        form: list[int | tuple[int, int]] = [pieces["["]]
        for k in range(n):
            form += [digits] + ([pieces[","]] if k < n - 1 else [pieces["]"]])
        return form

    @torch.no_grad()
    def _generate(self, rows: list[list[int]], max_tokens: int, temperature: float, top_logprobs: int,
                  seed: int, binary_answers: int = 0, choices: Sequence[str] = ()) -> list[Reply]:
        from ..models.hookset import model_lock

        hf, dev, tok = self.model.hf, self.model.device, self.model.tokenizer
        n = len(rows)
        shared = 0
        shortest = min(len(r) for r in rows)
        while shared < shortest - 1 and all(r[shared] == rows[0][shared] for r in rows):
            shared += 1
        gen = torch.Generator(device="cpu").manual_seed(seed)
        with model_lock(hf):
            cache = copy.deepcopy(self._prefix_cache(rows[0][:shared])) if shared else None
            if cache is not None:
                cache.batch_repeat_interleave(n)
            tails = [r[shared:] for r in rows]
            width = max(len(t) for t in tails)
            pad = self.model.pad_id if self.model.pad_id is not None else 0
            ids = torch.tensor([[pad] * (width - len(t)) + t for t in tails], device=dev)
            tail_mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in tails], device=dev)
            mask = torch.cat([torch.ones(n, shared, dtype=torch.long, device=dev), tail_mask], 1)
            pos = shared + (tail_mask.cumsum(1) - 1).clamp(min=0)
            kwargs: dict[str, Any] = {"past_key_values": cache} if cache is not None else {}
            if cache is None:
                from transformers import DynamicCache

                kwargs["past_key_values"] = DynamicCache(config=hf.config)
            logits = hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                        **kwargs).logits[:, -1]
            cache = kwargs["past_key_values"]
            made: list[list[int]] = [[] for _ in range(n)]
            steps: list[list[dict]] = [[] for _ in range(n)]
            done = torch.zeros(n, dtype=torch.bool)
            last_pos = pos[:, -1]
            form = self._binary_form(binary_answers) if binary_answers else \
                [tuple(self._token(c) for c in choices)] if choices else None
            for step in range(len(form) if form else max_tokens):
                logp = torch.log_softmax(logits.float(), -1).cpu()
                if form is not None:  # the answer's form is fixed: "[", then 0 or 1 (the likelier), "," ... "]"
                    fixed = form[step]
                    nxt = torch.full((n,), fixed) if isinstance(fixed, int) else \
                        torch.tensor(fixed)[logp[:, list(fixed)].argmax(-1)]
                elif temperature > 0:
                    nxt = torch.multinomial(torch.softmax(logits.float().cpu() / temperature, -1), 1, generator=gen)[:, 0]
                else:
                    nxt = logp.argmax(-1)
                for i in range(n):
                    if done[i]:
                        continue
                    t = int(nxt[i])
                    if t in self._stop and form is None:
                        done[i] = True
                        continue
                    made[i].append(t)
                    if top_logprobs:
                        vals, idx = logp[i].topk(top_logprobs)
                        top = list(zip(idx.tolist(), vals.tolist()))
                        if form is not None and not isinstance(form[step], int):  # both digits always listed
                            top += [(d, float(logp[i, d])) for d in form[step] if d not in idx.tolist()]
                        steps[i].append({"token": tok.decode([t]), "id": t, "logprob": float(logp[i, t]),
                                         "top": [[tok.decode([j]), v] for j, v in top]})
                last = len(form) - 1 if form else max_tokens - 1
                if bool(done.all()) or step == last:
                    break
                last_pos = last_pos + 1
                mask = torch.cat([mask, torch.ones(n, 1, dtype=torch.long, device=dev)], 1)
                logits = hf(input_ids=nxt[:, None].to(dev), attention_mask=mask, position_ids=last_pos[:, None],
                            past_key_values=cache, use_cache=True).logits[:, -1]
        return [Reply(tok.decode(made[i], skip_special_tokens=True), steps[i] if top_logprobs else None,
                      prompt_tokens=len(rows[i]), completion_tokens=len(made[i])) for i in range(n)]

    @torch.no_grad()
    def prompt_logprobs(self, conversations: Sequence[Sequence[Message]], *, after: str, top: int = 15) -> list[Reply]:
        """Per conversation (whose last message is the assistant's), read in one forward pass without
        generating: at every token ``after`` of the last message, the ``top`` likeliest next tokens. The
        reply's ``logprobs`` has one step per such token: {"token": after, "top": [[decoded, logprob, id], ...]}
        (likeliest first; the log-probabilities over the whole vocabulary); its text is empty."""
        from ..models.hookset import model_lock

        if not 1 <= top <= 100:
            raise ValueError(f"top={top}: must be in [1, 100]")
        mark = self._token(after)
        tok, hf, dev = self.model.tokenizer, self.model.hf, self.model.device
        rows, starts = [], []
        for c in conversations:
            ids = self.ids(c)
            head = tok(tok.apply_chat_template(list(c[:-1]), tokenize=False, add_generation_prompt=False),
                       add_special_tokens=False)["input_ids"]
            if ids[:len(head)] != head:
                raise ChatError(f"{self.model.name}'s chat template does not begin a conversation as it begins the "
                                "conversation without its last message: cannot find the last message's tokens")
            if self._limit is not None and len(ids) > self._limit:
                raise ChatError(f"a prompt of {len(ids)} tokens exceeds {self.model.name}'s {self._limit}-token context")
            rows.append(ids)
            starts.append(len(head))
        shortest = min((len(r) for r in rows), default=0)
        shared = 0
        while rows and shared < min(shortest - 1, min(starts)) and all(r[shared] == rows[0][shared] for r in rows):
            shared += 1
        out = []
        with model_lock(hf):
            prefix = self._prefix_cache(rows[0][:shared]) if shared else None
            for ids, start in zip(rows, starts):
                wanted = [i for i in range(start, len(ids) - 1) if ids[i] == mark]  # the next token's distribution
                if not wanted:
                    out.append(Reply("", [], prompt_tokens=len(ids)))
                    continue
                from transformers import DynamicCache

                cache = copy.deepcopy(prefix) if prefix is not None else DynamicCache(config=hf.config)
                tail = ids[shared:]
                keep = torch.tensor([i - shared for i in wanted], device=dev)
                logits = hf(input_ids=torch.tensor([tail], device=dev),
                            attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=dev),
                            position_ids=torch.arange(shared, len(ids), device=dev)[None], past_key_values=cache,
                            use_cache=True, logits_to_keep=keep).logits[0]
                logp = torch.log_softmax(logits.float(), -1).cpu()
                vals, idx = logp.topk(top, -1)
                steps = [{"token": after, "top": [[tok.decode([j]), v, j] for j, v in zip(ix.tolist(), vs.tolist())]}
                         for vs, ix in zip(vals, idx)]
                out.append(Reply("", steps, prompt_tokens=len(ids)))
        for r in out:
            self.usage.add(r)
        return out


class OpenAIChat:
    """An OpenAI-compatible chat endpoint (see the module docstring)."""

    def __init__(self, base_url: str, model: str, *, concurrency: int = 8, timeout: float = 120.0,
                 retries: int = 4, api_key: str | None = None):
        try:
            import openai
        except ImportError:
            raise ChatError("an OpenAI-compatible endpoint needs the openai package: pip install 'mechscope[explain]'") \
                from None
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency}: must be ≥ 1")
        if not model:
            raise ChatError(f"which model at {base_url}? name it (--explainer-model or $MECHSCOPE_EXPLAINER_MODEL)")
        self.base_url, self.model_name, self.concurrency = base_url, model, concurrency
        self.name = f"openai:{model}"
        self.usage = Usage()
        self._openai = openai
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
                                     timeout=timeout, max_retries=retries)

    def _one(self, messages: Sequence[Message], max_tokens: int, temperature: float, top_logprobs: int,
             seed: int) -> Reply:
        o = self._openai
        extra: dict[str, Any] = {"logprobs": True, "top_logprobs": top_logprobs} if top_logprobs else {}
        try:
            r = self._client.chat.completions.create(model=self.model_name, messages=list(messages),
                                                     max_tokens=max_tokens, temperature=temperature, seed=seed, **extra)
        except o.APIConnectionError as err:
            raise ChatError(f"cannot reach {self.base_url}: {err} (is the server running? check --explainer)") from None
        except o.APIStatusError as err:
            said = err.body.get("detail") or err.body.get("error") or err.body.get("message") \
                if isinstance(err.body, dict) else err.body
            hint = f" (is {self.model_name!r} the model it serves?)" if err.status_code in (400, 404, 422) else ""
            raise ChatError(f"{self.base_url} refused the request ({err.status_code}): {said or err.message}{hint}") \
                from None
        choice = r.choices[0]
        steps = None
        if top_logprobs and choice.logprobs is not None and choice.logprobs.content:
            steps = [{"token": c.token, "logprob": c.logprob, "top": [[t.token, t.logprob] for t in c.top_logprobs]}
                     for c in choice.logprobs.content]
        u = r.usage
        return Reply(choice.message.content or "", steps, prompt_tokens=u.prompt_tokens if u else 0,
                     completion_tokens=u.completion_tokens if u else 0)

    def chat(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int, temperature: float = 0.0,
             top_logprobs: int = 0, seed: int = 0, binary_answers: int = 0,
             answer_prefix: str = "", choices: Sequence[str] = ()) -> list[Reply]:
        _check_settings(max_tokens, temperature, top_logprobs)
        with ThreadPoolExecutor(self.concurrency) as pool:
            replies = list(pool.map(lambda c: self._one(c, max_tokens, temperature, top_logprobs, seed), conversations))
        for r in replies:
            self.usage.add(r)
        return replies


@dataclass
class CachedChat:
    """``client`` with every reply kept in the SQLite file ``path`` (see the module docstring)."""

    client: Any
    path: Path
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.name = self.client.name
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def key(self, messages: Sequence[Message], max_tokens: int, temperature: float, top_logprobs: int, seed: int,
            binary_answers: int = 0, answer_prefix: str = "", choices: Sequence[str] = ()) -> str:
        what = {"model": self.client.name, "messages": list(messages), "max_tokens": max_tokens,
                "temperature": temperature, "top_logprobs": top_logprobs, "seed": seed if temperature > 0 else 0,
                **({"binary_answers": binary_answers, "answer_prefix": answer_prefix, "choices": list(choices)}
                   if isinstance(self.client, LocalChat) else {})}
        return _digest(what)

    def chat(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int, temperature: float = 0.0,
             top_logprobs: int = 0, seed: int = 0, binary_answers: int = 0,
             answer_prefix: str = "", choices: Sequence[str] = ()) -> list[Reply]:
        keys = [self.key(c, max_tokens, temperature, top_logprobs, seed, binary_answers, answer_prefix, choices)
                for c in conversations]
        return self._answer(keys, lambda todo: self.client.chat(
            [conversations[i] for i in todo], max_tokens=max_tokens, temperature=temperature, top_logprobs=top_logprobs,
            seed=seed, binary_answers=binary_answers, answer_prefix=answer_prefix, choices=choices))

    def prompt_logprobs(self, conversations: Sequence[Sequence[Message]], *, after: str, top: int = 15) -> list[Reply]:
        """``LocalChat.prompt_logprobs`` through the cache (a ValueError for a client without it)."""
        if not hasattr(self.client, "prompt_logprobs"):
            raise ValueError(f"{self.name} gives no prompt log-probabilities (only a local model does): "
                             "simulate with mode='json'")
        keys = [_digest({"model": self.client.name, "messages": list(c), "prompt_logprobs": top, "after": after})
                for c in conversations]
        return self._answer(keys, lambda todo: self.client.prompt_logprobs([conversations[i] for i in todo],
                                                                           after=after, top=top))

    def _answer(self, keys: list[str], ask: Any) -> list[Reply]:
        """The replies of ``keys``: from the file where kept, else from ``ask(indices)`` (then kept)."""
        with self._lock, self._db() as db:
            found = dict(db.execute(f"SELECT key, reply FROM replies WHERE key IN ({','.join('?' * len(keys))})",
                                    keys).fetchall()) if keys else {}
        missing = [i for i, k in enumerate(keys) if k not in found]
        fresh = ask(missing) if missing else []
        with self._lock, self._db() as db:
            db.executemany("INSERT OR REPLACE INTO replies VALUES (?, ?)",
                           [(keys[i], json.dumps(r.__dict__)) for i, r in zip(missing, fresh)])
        got = dict(zip(missing, fresh))
        out = []
        for i, k in enumerate(keys):
            r = got[i] if i in got else Reply(**{**json.loads(found[k]), "cached": True})
            self.usage.add(r)
            out.append(r)
        return out


def _digest(request: dict) -> str:
    """A request's key in the reply cache: the sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def open_chat(spec: str | Any, *, endpoint_model: str | None = None, cache: str | os.PathLike | None = None,
              concurrency: int = 8, timeout: float = 120.0, retries: int = 4, batch_size: int = 16) -> ChatClient:
    """A chat client from what a user names: an ``http(s)://`` URL (an OpenAI-compatible endpoint; its model
    ``endpoint_model`` or ``$MECHSCOPE_EXPLAINER_MODEL``), a loaded ``Model``, or a name ``mechscope.load``
    opens. ``cache``: the reply cache's SQLite file (None: no cache)."""
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        client: Any = OpenAIChat(spec, endpoint_model or os.environ.get("MECHSCOPE_EXPLAINER_MODEL", ""),
                                 concurrency=concurrency, timeout=timeout, retries=retries)
    elif isinstance(spec, str):
        from ..models.load import load

        client = LocalChat(load(spec), batch_size=batch_size)
    elif hasattr(spec, "chat"):
        client = spec
    else:
        client = LocalChat(spec, batch_size=batch_size)
    return CachedChat(client, Path(cache)) if cache is not None else client


def default_cache() -> Path:
    """The reply cache every run shares unless told otherwise: ``<mechscope cache>/explain/replies.sqlite``."""
    from ..models.load import cache_dir

    return cache_dir() / "explain" / "replies.sqlite"
