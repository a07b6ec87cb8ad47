"""delphi's scorers (eai-delphi 0.1.3, run by .venv-delphi's python) through delphi's own HTTP client against
an OpenAI-compatible server — the delphi side of benchmarks/explain_http.py:

    .venv-delphi/bin/python benchmarks/delphi_http_driver.py IN.json OUT.json

IN: {"url": chat-completions URL, "model": name, "max_tokens": int, "units": [{"test", "negatives",
"explanation", "max_act"}]}. Per unit: detection and fuzzing (one context per prompt, ``max_tokens`` per
answer) and the simulator in JSON mode (``RefactoredOpenAISimulator(all_at_once=False)``), each unit's
scorers concurrently as delphi's pipeline runs them. OUT: {"seconds", "requests"}."""

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "oracles"))
from delphi_scorers import WindowTokens, windows_record  # noqa: E402  (installs the vllm stand-in delphi imports)

from delphi.clients import OpenRouter  # noqa: E402
from delphi.scorers import DetectionScorer, FuzzingScorer  # noqa: E402
from delphi.scorers.simulator.simulation.oai_simulator import RefactoredOpenAISimulator  # noqa: E402


class Counting(OpenRouter):
    requests = 0

    async def generate(self, prompt, **kwargs):
        Counting.requests += 1
        return await super().generate(prompt, **kwargs)


async def score_all(data):
    client = Counting(data["model"], api_key="none", base_url=data["url"])
    for i, unit in enumerate(data["units"]):
        words = WindowTokens()
        r = windows_record(unit, i, words)
        small = windows_record({**unit, "test": unit["test"][:data["sim_n"]], "negatives": unit["negatives"][:data["sim_n"]]},
                               i, words)
        await asyncio.gather(
            DetectionScorer(client, n_examples_shown=1, max_tokens=data["max_tokens"])(r),
            FuzzingScorer(client, n_examples_shown=1, max_tokens=data["max_tokens"])(r),
            RefactoredOpenAISimulator(client, words, all_at_once=False)(small))


def main(src, dst):
    data = json.load(open(src))
    t0 = time.perf_counter()
    asyncio.run(score_all(data))
    json.dump({"seconds": time.perf_counter() - t0, "requests": Counting.requests}, open(dst, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:])
