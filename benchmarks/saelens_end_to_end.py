"""A dictionary trained by SAELens's own trainer on SmolLM2, evaluated by mechscope and by SAELens
(run alone, in the SAE benchmark environment: `.venv-bench-sae/bin/python benchmarks/saelens_end_to_end.py`).

1. mechscope harvests SmolLM2's `blocks.6.resid_post` on Shakespeare training blocks (the sink
   position left out); SAELens's `SAETrainer` trains a TopK SAE on those rows, fed through its
   `data_provider` argument (its language-model runner would need the hub), and SAELens writes it
   with `save_inference_model`.
2. mechscope reads the folder (`load_dictionary(..., model=smollm2)`), splices it into SmolLM2 and
   evaluates it (`evaluate(drop_first=False)`: every position spliced, every prediction scored).
3. SAELens's own `evals.get_recons_loss` runs the same SAE file on the same test tokens through a
   TransformerLens model holding the same weights (no processing, as SAELens loads models).

CE loss recovered = (CE zero-ablated − CE spliced) / (CE zero-ablated − CE clean), compared. Tolerance
1e-3 absolute: both are float32 forwards of the same weights through different code (TransformerLens
vs Hugging Face kernels; logits agree to ~1e-6 relative), and the three CE means enter a ratio whose
denominator is a few nats. Writes a section to RESULTS.md; exits non-zero outside the tolerance.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import machine, transformer_lens_model, write_section  # noqa: E402

SITE, HOOK = "blocks.6.resid_post", "blocks.6.hook_resid_post"
TOL = 1e-3


def neuronpedia_check(sae, model) -> str:
    """Feature cards of the loaded SAE exported for Neuronpedia and read back by sae-dashboard's own
    Neuronpedia classes (which refuse unknown fields): the same JSON must come out."""
    import json

    from sae_dashboard.neuronpedia.neuronpedia_dashboard import NeuronpediaDashboardBatch

    from mechscope.sae import feature_cards

    cards = feature_cards(sae, model, list(range(8)), n_blocks=16, length=64, progress=False)
    ours = cards.to_neuronpedia("smollm2-135m", "6-res-topk-saelens")
    theirs = NeuronpediaDashboardBatch(**ours).to_dict()
    same = json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)
    if not same:
        raise SystemExit("the Neuronpedia export differs once read by sae-dashboard's classes")
    n = sum(len(f["activations"]) for f in ours["features"])
    return (f"Neuronpedia export: feature cards of 8 features (`FeatureCards.to_neuronpedia`) read back by "
            f"sae-dashboard {__import__('importlib.metadata').metadata.version('sae-dashboard')}'s "
            f"`NeuronpediaDashboardBatch` and written out again: identical JSON ({n} activation records).")


def main() -> None:
    import sae_lens
    from sae_lens import SAE
    from sae_lens.config import SAETrainerConfig
    from sae_lens.evals import get_recons_loss
    from sae_lens.saes import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.activation_scaler import ActivationScaler
    from sae_lens.training.sae_trainer import SAETrainer

    from mechscope.data import token_blocks
    from mechscope.models.load import load
    from mechscope.sae import evaluate, load_dictionary

    threads = 2
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load("smollm2-135m")
    t0 = time.perf_counter()
    train = token_blocks(model.tokenizer, 256, 64)
    rows = torch.cat([model.run(train[i:i + 16], cache=SITE).cache[SITE][:, 1:].reshape(-1, model.cfg.d_model)
                      for i in range(0, len(train), 16)]).float()
    harvest_s = time.perf_counter() - t0

    def batches(size: int):
        g = torch.Generator().manual_seed(0)
        while True:
            for chunk in torch.randperm(len(rows), generator=g).split(size):
                if len(chunk) == size:
                    yield rows[chunk]

    batch, epochs = 1024, 8
    peer = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=2048, k=32))
    trainer = SAETrainer(SAETrainerConfig(total_training_samples=epochs * len(rows), train_batch_size_samples=batch,
                                          lr=1e-3, lr_end=1e-3, device="cpu"), peer, data_provider=batches(batch))
    t0 = time.perf_counter()
    trainer.fit()
    train_s = time.perf_counter() - t0
    peer.cfg.metadata.hook_name = HOOK
    peer.cfg.metadata.model_name = model.name
    folder = tempfile.mkdtemp()
    peer.save_inference_model(folder)

    test = token_blocks(model.tokenizer, 16, 64, split="test")
    ours = load_dictionary(folder, model=model)
    mine = evaluate(ours, model, test, drop_first=False, progress=False)

    saelens_sae = SAE.load_from_disk(folder)
    tl = transformer_lens_model(model)
    ce = torch.zeros(3, dtype=torch.float64)
    n = 0
    with torch.no_grad():
        for i in range(0, len(test), 8):
            m = get_recons_loss(saelens_sae, tl, ActivationScaler(), test[i:i + 8], compute_kl=False, compute_ce_loss=True)
            per_token = [m[k] for k in ("ce_loss_without_sae", "ce_loss_with_sae", "ce_loss_with_ablation")]
            ce += torch.stack([t.double().sum() for t in per_token])
            n += per_token[0].numel()
    ce /= n
    theirs = float((ce[2] - ce[1]) / (ce[2] - ce[0]))
    diff = abs(theirs - mine.ce_recovered)
    table = ["| | CE clean | CE spliced | CE zero-ablated | CE recovered |", "|---|---:|---:|---:|---:|",
             f"| mechscope `evaluate` (HF model) | {mine.ce_orig:.4f} | {mine.ce_sae:.4f} | {mine.ce_zero:.4f} | "
             f"{mine.ce_recovered:.4f} |",
             f"| SAELens `get_recons_loss` (TransformerLens) | {ce[0]:.4f} | {ce[1]:.4f} | {ce[2]:.4f} | {theirs:.4f} |"]
    md = "\n".join([
        "## A SAELens-trained SAE on SmolLM2, evaluated by mechscope and by SAELens (cpu)", "",
        f"`.venv-bench-sae/bin/python benchmarks/saelens_end_to_end.py`: sae-lens {sae_lens.__version__}. SAELens's "
        f"`SAETrainer` trained a TopK SAE (2,048 latents, k = 32) on {len(rows):,} rows of `{SITE}` that mechscope "
        f"harvested from 256 Shakespeare blocks of 64 tokens ({harvest_s:.0f} s), {epochs} epochs of {batch}-row "
        f"batches ({train_s:.0f} s), saved with `save_inference_model`; mechscope read the folder with "
        f"`load_dictionary(model=smollm2)`. Both evaluate on the same {test.numel():,} test tokens, every position "
        f"spliced (mechscope `drop_first=False`). L0 {mine.l0:.1f}, FVU {mine.fvu:.3f} (mechscope). "
        f"{machine(threads, 'cpu')}.", "", *table, "",
        f"CE recovered differs by **{diff:.1e}** (tolerance {TOL}: float32 forwards of the same weights in two "
        f"codebases). With its default `drop_first=True` (the sink position left alone) mechscope reports "
        f"{evaluate(ours, model, test, progress=False).ce_recovered:.4f}.",
    ])
    md += "\n\n" + neuronpedia_check(ours, model)
    write_section("saelens_end_to_end", md)
    print(md)
    if diff > TOL:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
