"""Plain-HF references the tests compare mechscope with, and small shared fixtures."""

import re
from contextlib import contextmanager

import torch


@contextmanager
def attn_implementation(model, impl):
    """Temporarily run the HF model with another attention implementation ('eager', 'sdpa')."""
    config = model.hf.config
    saved = config._attn_implementation
    config._attn_implementation = impl
    try:
        yield
    finally:
        config._attn_implementation = saved


def hf_forward(model, prompts, impl=None, **kwargs):
    """The plain HF forward on the same left-padded inputs mechscope builds."""
    ids, mask = model.tokenize(prompts)
    with torch.no_grad():
        if impl is None:
            return model.hf(**model.hf_inputs(ids, mask), use_cache=False, **kwargs)
        with attn_implementation(model, impl):
            return model.hf(**model.hf_inputs(ids, mask), use_cache=False, **kwargs)


def random_task(model, n=3, length=6, seed=0):
    """Random clean/corrupted pairs of one length on a tiny model; metric logit(a) − logit(b)."""
    from mechscope.tasks import Task

    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(5, model.cfg.vocab, (n, length), generator=gen).tolist()
    corrupted = torch.randint(5, model.cfg.vocab, (n, length), generator=gen).tolist()
    good = [[int(x)] for x in torch.randint(5, model.cfg.vocab, (n,), generator=gen)]
    bad = [[int(x)] for x in torch.randint(5, model.cfg.vocab, (n,), generator=gen)]
    return Task("random", 1, seed, clean, corrupted, good, bad)


class RuleChat:
    """A scripted scorer: says 1 for a shown context that contains one of the explanation's quoted words
    (simulating: 10 on a token that holds one),
    and writes the explanation "'WORD'" for the commonest marked word of the explainer's contexts. Answers
    listed in ``garbage`` (by call number) are malformed."""

    name = "rule"

    def __init__(self, garbage=()):
        from mechscope.explain.clients import Usage

        self.usage, self.calls, self.garbage = Usage(), 0, set(garbage)

    def chat(self, conversations, *, max_tokens, temperature=0.0, top_logprobs=0, seed=0, binary_answers=0,
             answer_prefix="", choices=()):
        out = []
        for conv in conversations:
            self.calls += 1
            text = conv[-1]["content"]
            if self.calls in self.garbage:
                reply = "I think so."
            elif text.startswith('{"to_find"'):  # the simulator (JSON mode): 10 on a token holding a quoted word
                import json

                asked = json.loads(text)
                words = re.findall(r"'([^']+)'", asked["to_find"])
                reply = json.dumps({**asked, "activations": [
                    {"token": e["token"], "activation": 10 if any(w in e["token"] for w in words) else 0}
                    for e in asked["activations"]]})
            elif text.startswith("Examples:"):  # the intruder: the context without a marked quoted word
                shown = re.findall(r"Example (\d+):(.*)", text)
                odd = [i for i, s in shown if "<<" not in s or ">>" not in s] or [shown[0][0]]
                reply = f"[RESPONSE]: {odd[0]}"
            elif text.startswith("Latent explanation:"):
                words = re.findall(r"'([^']+)'", text.split("\n")[0])
                shown = re.findall(r"Example \d+: (.*)", text)
                reply = "[" + ",".join("1" if any(w in s for w in words) else "0" for s in shown) + "]"
            else:
                marked = re.findall(r"<<([^>]+)>>", text)
                commonest = max(dict.fromkeys(marked), key=marked.count) if marked else ""  # ties: the first seen
                reply = f"[EXPLANATION]: '{commonest.strip()}'" if marked else "no idea"
            from mechscope.explain import Reply

            r = Reply(reply, prompt_tokens=len(text) // 4, completion_tokens=3)
            self.usage.add(r)
            out.append(r)
        return out
