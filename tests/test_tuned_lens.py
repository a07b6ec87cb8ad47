"""The corpus and the tuned lens: identity start, training beats the logit lens on held-out text."""

import pytest
import torch

from mechscope.data import shakespeare, token_blocks
from mechscope.lenses.tuned import TunedLens, compare_lenses, train_tuned_lens


def test_the_corpus_has_42_works_split_by_work(llama):
    texts = shakespeare()
    assert len(texts) == 42 and "hamlet" in texts and sum(map(len, texts.values())) > 4_000_000
    small = {k: texts[k][:3000] for k in list(texts)[:14]}
    train = token_blocks(llama.tokenizer, 10_000, 16, "train", texts=small)
    test = token_blocks(llama.tokenizer, 10_000, 16, "test", texts=small)
    assert train.shape[1] == test.shape[1] == 16 and len(train) > 4 * len(test) > 0
    held_out = [n for i, n in enumerate(small) if i % 7 == 6]
    first = llama.tokenizer.decode(test[0])
    assert any(first in small[n] for n in held_out) and not any(first in small[n] for n in small if n not in held_out)
    with pytest.raises(ValueError, match="split="):
        token_blocks(llama.tokenizer, 1, 16, "dev", texts=small)


def _blocks(model, n, seed):
    texts = shakespeare()
    text = " ".join(list(texts.values())[seed][:20000].split())
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[i * 24:(i + 1) * 24] for i in range(n)])


def test_an_untrained_tuned_lens_is_the_logit_lens(llama):
    lens = TunedLens(64, [0, 1])
    run = llama.run("The cat sat", cache="blocks.1.resid_post")
    h = run.cache["blocks.1.resid_post"][0]
    norm = llama.hf.get_submodule("model.norm")
    assert torch.equal(lens.decode(llama, h, 1), llama.hf.get_output_embeddings()(norm(h)))


def test_training_beats_the_logit_lens_on_held_out_text_and_round_trips(llama, tmp_path):
    fit = train_tuned_lens(llama, _blocks(llama, 40, 0), steps=60, batch_size=8, progress=False)
    lens, losses = fit.lens, fit.losses
    assert losses[-1] < losses[0]
    result = compare_lenses(llama, lens, _blocks(llama, 10, 7), losses)
    assert (result.tuned_kl < result.logit_kl).all(), (result.tuned_kl, result.logit_kl)
    back = TunedLens.load(lens.save(tmp_path / "lens"))
    h = torch.randn(5, 64)
    torch.testing.assert_close(back.translate(h, 1), lens.translate(h, 1))
    assert "tuned lens" in result.summary() and result.png_bytes()[:4] == b"\x89PNG"
