"""Bad input gets a clear error naming the bad value and what would be valid."""

import pytest
import torch
from conftest import PROMPTS, assert_no_hooks

import mechscope as ms
from mechscope.models.tiny import tiny_hf


def test_unknown_site_lists_close_names(llama):
    with pytest.raises(ms.SiteError) as err:
        llama.run(PROMPTS, cache="blocks.1.attn.patern")
    assert "blocks.1.attn.pattern" in str(err.value) and "unknown site" in str(err.value)
    with pytest.raises(ms.SiteError, match="blocks.0 .. blocks.2"):
        llama.run(PROMPTS, cache="blocks.7.resid_post")
    with pytest.raises(ms.SiteError, match="unknown site"):
        llama.run(PROMPTS, interventions=[ms.Ablate("blocks.*.attn.zz")])


def test_head_out_of_range(llama):
    with pytest.raises(ms.InterventionError, match=r"head 4 out of range .* 4 heads \(0..3\)"):
        llama.run(PROMPTS, interventions=[ms.Ablate("blocks.0.attn.z", heads=[4])])
    with pytest.raises(ms.InterventionError, match=r"2 heads \(0..1\)"):  # k has the kv-head count
        llama.run(PROMPTS, interventions=[ms.Ablate("blocks.0.attn.k", heads=[2])])
    with pytest.raises(ms.InterventionError, match="no head dimension"):
        llama.run(PROMPTS, interventions=[ms.Ablate("blocks.0.resid_post", heads=[0])])
    assert_no_hooks(llama)


def test_position_out_of_range(llama):
    with pytest.raises(ms.InterventionError, match=r"position 40 out of range .*valid positions -\d+..\d+"):
        llama.run(PROMPTS, interventions=[ms.Ablate("blocks.0.resid_post", positions=[40])])
    with pytest.raises(ms.InterventionError, match="position -99"):
        llama.run(PROMPTS, cache="blocks.0.resid_post", cache_positions=[-99])


def test_shape_mismatched_patch(llama):
    clean = llama.run(["The cat sat on the mat"], cache="blocks.0.resid_pre")
    with pytest.raises(ms.InterventionError, match="does not match the run's .* positions="):
        llama.run(["Paris"], interventions=[ms.Patch("blocks.0.resid_pre", source=clean)])
    with pytest.raises(ms.InterventionError, match="source has batch 3, the run has 2"):
        llama.run(PROMPTS[:2], interventions=[ms.Patch("blocks.0.resid_pre", source=torch.zeros(3, 5, 64))])
    with pytest.raises(ms.SiteError, match="was not cached"):
        llama.run(["The cat sat on the mat"], interventions=[ms.Patch("blocks.1.resid_pre", source=clean)])
    with pytest.raises(ms.InterventionError, match="different padding"):
        src = llama.run(["Paris is", "The cat sat"], cache="blocks.0.resid_pre")
        llama.run(["The cat sat", "Paris is"], interventions=[ms.Patch("blocks.0.resid_pre", source=src)])
    assert_no_hooks(llama)


def test_bad_vectors(llama):
    with pytest.raises(ms.InterventionError, match="NaN"):
        ms.Add("blocks.0.resid_post", torch.tensor([1.0, float("nan")]))
    with pytest.raises(ms.InterventionError, match="does not fit|last dim"):
        llama.run(PROMPTS, interventions=[ms.Add("blocks.0.resid_post", torch.ones(10))])
    with pytest.raises(ms.InterventionError, match="zero"):
        ms.ProjectOut("blocks.0.resid_post", torch.zeros(64))
    with pytest.raises(ms.InterventionError, match=r"fn returned \(3,\)"):
        llama.run(PROMPTS, interventions=[ms.Replace("blocks.0.resid_post", lambda x: torch.ones(3))])
    with pytest.raises(ms.InterventionError, match="how='median'"):
        ms.Ablate("blocks.0.resid_post", how="median")
    with pytest.raises(TypeError, match="not an intervention"):
        llama.run(PROMPTS, interventions=["blocks.0.resid_post"])


def test_bad_inputs(llama):
    with pytest.raises(ValueError, match="no inputs"):
        llama.run([])
    with pytest.raises(ValueError, match="token id 999 out of range for vocab"):
        llama.run(torch.tensor([[1, 999]]))
    with pytest.raises(ValueError, match="needs metric"):
        llama.run(PROMPTS, grads=["embed"])


def test_unsupported_architecture_names_the_supported_ones():
    from transformers import BertConfig, BertLMHeadModel

    hf = BertLMHeadModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=32, is_decoder=True))
    _, tok = tiny_hf("llama")
    with pytest.raises(ms.UnsupportedArchitecture, match="'bert'.*supported: .*gpt2.*llama") as err:
        ms.Model(hf, tok)
    assert "llama-like: lacks model.layers" in str(err.value) and "no known layout fits" in str(err.value)


@pytest.mark.parametrize("variant,says", [
    ({"do_layer_norm_before": False}, "post-LN variant"),
    ({"word_embed_proj_dim": 8}, "project_in/project_out"),
    ({"_remove_final_layer_norm": True}, "no final layer norm"),
])
def test_opt_variants_mechscope_cannot_place_are_refused_by_name(variant, says):
    """OPT-125m's layout is supported; the post-LN variant, projected embeddings and a removed final
    norm (OPT-350m has the first two) are refused, each by name with its reason."""
    from transformers import OPTConfig, OPTForCausalLM

    config = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "ffn_dim": 32,
              "word_embed_proj_dim": 16}
    hf = OPTForCausalLM(OPTConfig(**{**config, **variant}))
    _, tok = tiny_hf("llama")
    with pytest.raises(ms.UnsupportedArchitecture, match=rf"opt \(OPTForCausalLM\) is not supported: .*{says}"):
        ms.Model(hf, tok)


@pytest.mark.parametrize("family", ["qwen2_moe", "qwen3_moe"])
def test_a_mixture_of_experts_with_dense_layers_is_refused_by_name(family):
    hf, tok = tiny_hf(family, mlp_only_layers=[0])
    with pytest.raises(ms.UnsupportedArchitecture, match="mixes dense MLP layers among its mixture-of-experts"):
        ms.Model(hf, tok)


def test_an_unknown_family_with_a_known_layout_is_pointed_at_it_and_can_be_registered():
    """A model type mechscope does not know whose modules are all where the llama layout puts them:
    the error says so and how to register it; registered, it runs exactly as HF does."""

    from mechscope.models import adapters

    hf, tok = tiny_hf("llama")
    hf.config.model_type = "my_llama"
    with pytest.raises(ms.UnsupportedArchitecture, match=r"every module path of the llama layout exists.*"
                                                        r"register\('my_llama', ADAPTERS\['llama'\]\)"):
        ms.Model(hf, tok)
    adapters.register("my_llama", adapters.ADAPTERS["llama"])
    try:
        model = ms.Model(hf, tok)
        ids, mask = model.tokenize("The cat")
        with torch.no_grad():
            assert torch.equal(model.run("The cat").logits, hf(input_ids=ids, attention_mask=mask).logits)
    finally:
        del adapters.ADAPTERS["my_llama"]


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'gpt-17'.*smollm2-135m"):
        ms.load("gpt-17")


def _planted_sae_dir(tmp_path):
    from safetensors.torch import load_file, save_file

    from mechscope.sae import SAEConfig, SparseCoder

    SparseCoder(SAEConfig("topk", 16, 32, k=2)).save(tmp_path / "sae")
    weights = tmp_path / "sae" / "sae.safetensors"
    if not weights.exists():
        weights = next((tmp_path / "sae").glob("*.safetensors"))
    state = load_file(str(weights))
    name = sorted(state)[0]
    state[name][0, 0] = float("nan")
    save_file(state, str(weights))
    return tmp_path / "sae"


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _bad_input_cases():
    """(id, call(model, tmp_path), error type, text that names the value): the cases that used to be
    silently wrong or to fail with another library's message."""
    from mechscope.attribution import integrated_gradients, token_ig
    from mechscope.compile import compile_example, mlp_transcoders
    from mechscope.sae import SAEConfig, SAEError, load_sae
    from mechscope.verify.vnnlib import VNNLibError, read_vnnlib
    from mechscope.concepts.geometry import WordVectors
    from mechscope.components.heads import detect_heads
    from mechscope.concepts.datasets import ProbeDataset
    from mechscope.concepts.probes import activations
    from mechscope.sae import SparseCoder
    from mechscope.sae.store import harvest
    from mechscope.toy import train_induction, train_superposition
    from mechscope.vision.images import read_image

    data = ProbeDataset("s", ["I love it.", "I hate it."], [1, 0], ["a", "a"])

    f = lambda x: x.sum(-1)  # noqa: E731
    return [
        ("fractional head", lambda m, p: m.run(PROMPTS, interventions=[ms.Ablate("blocks.0.attn.z", heads=[1.5])]),
         ms.InterventionError, "1.5"),
        ("boolean head", lambda m, p: ms.Ablate("blocks.0.attn.z", heads=[True]), ms.InterventionError, "True"),
        ("string positions", lambda m, p: ms.Ablate("blocks.0.resid_post", positions="-1"), ms.InterventionError, "'-1'"),
        ("integer patch source", lambda m, p: ms.Patch("blocks.0.resid_post", source=torch.ones(3, 5, 64, dtype=torch.long)),
         ms.InterventionError, "torch.int64"),
        ("complex steering vector", lambda m, p: ms.Add("blocks.0.resid_post", torch.ones(64, dtype=torch.complex64)),
         ms.InterventionError, "torch.complex64"),
        ("prompt longer than the context", lambda m, p: m.run([list(range(3, 203))]), ValueError, "200 tokens"),
        ("zero IG steps", lambda m, p: integrated_gradients(f, torch.ones(4), steps=0), ValueError, "steps=0"),
        ("zero IG batch", lambda m, p: integrated_gradients(f, torch.ones(4), batch_size=0), ValueError, "batch_size=0"),
        ("unknown IG rule", lambda m, p: token_ig(m, "The cat", 5, method="simpson"), ValueError, "'simpson'"),
        ("a dictionary too big for memory", lambda m, p: SAEConfig("topk", 10**6, 10**6, k=8), SAEError, "GiB"),
        ("a dictionary with NaN weights", lambda m, p: load_sae(_planted_sae_dir(p)), SAEError, "NaN"),
        ("a VNNLIB variable index of two billion", lambda m, p: read_vnnlib("(declare-const X_2000000000 Real)"),
         VNNLibError, "X_2000000000"),
        ("VNNLIB nested 10,000 deep", lambda m, p: read_vnnlib("(assert " + "(and " * 10_000 + ")" * 10_001),
         VNNLibError, "nested deeper than 200"),
        ("a VNNLIB file that is not UTF-8", lambda m, p: read_vnnlib(_write(p / "x.vnnlib", b"(assert \xff\xfe)")),
         VNNLibError, "not UTF-8"),
        ("a text file as an image", lambda m, p: read_image(_write(p / "notes.png", b"just text")), ValueError,
         "notes.png"),
        ("zero probe batch", lambda m, p: activations(m, data, "blocks.0.resid_post", batch_size=0), ValueError, "batch_size=0"),
        ("negative probe batch", lambda m, p: activations(m, data, "blocks.0.resid_post", batch_size=-1), ValueError,
         "batch_size=-1"),
        ("zero head-detector batch", lambda m, p: detect_heads(m, batch=0), ValueError, "batch=0"),
        ("zero induction-training batch", lambda m, p: train_induction(1, batch_size=0, progress=False), ValueError, "batch_size=0"),
        ("zero superposition batch", lambda m, p: train_superposition(batch_size=0, progress=False), ValueError, "batch_size=0"),
        ("zero analogy chunk", lambda m, p: WordVectors(["a", "b", "c"], torch.eye(3)).analogies([("a", "b", "c")], chunk=0,
                                                                                              vocab=None),
         ValueError, "chunk=0"),
        ("zero SAE batch", lambda m, p: SparseCoder(SAEConfig("topk", 16, 32, k=2)).fit(torch.ones(8, 16), batch_size=0),
         ValueError, "batch_size=0"),
        ("zero harvest batch", lambda m, p: harvest(m, "blocks.0.resid_post", p / "store", batch_size=0), ValueError,
         "batch_size=0"),
        ("a folder without config.json as a model", lambda m, p: ms.load(p), ValueError, "holds no config.json"),
        ("a hub id that is not in the cache", lambda m, p: ms.load("mechscope-test/absent-model", revision="v9"),
         ValueError, "'mechscope-test/absent-model' (revision 'v9') is not in the Hugging Face cache"),
        ("exact transcoders of a model that is not compiled", lambda m, p: mlp_transcoders(m), ValueError,
         "not a compiled program"),
        ("an unknown example program", lambda m, p: compile_example("reverse2"), ValueError, "'reverse2'"),
    ]


@pytest.mark.parametrize("case", _bad_input_cases(), ids=lambda c: c[0])
def test_bad_input_table(llama, tmp_path, case):
    _, call, error, named = case
    with pytest.raises(error) as err:
        call(llama, tmp_path)
    assert named in str(err.value), str(err.value)
    assert_no_hooks(llama)


def test_one_parser_reads_every_index_list():
    """Features, channels and layers are read by ``checks.indices``; bad text names itself."""
    from mechscope.checks import indices
    from mechscope.sae import SAEError
    from mechscope.sae.dashboard import parse_features
    from mechscope.vision.model import VisionSiteError, parse_channels

    assert indices("3,17,40-42") == [3, 17, 40, 41, 42] == parse_channels("3,17,40-42")
    assert parse_features(" 0-2, 7", 128) == [0, 1, 2, 7]
    for bad, match in (("3,,4", "write numbers and ranges"), ("5-2", "runs backwards: write 2-5"), ("x", "'x'")):
        with pytest.raises(ValueError, match=match):
            indices(bad, "layer")
    with pytest.raises(ValueError, match="layer 8 in '7-9' is out of range: valid are 0..7"):
        indices("7-9", "layer", 8)
    with pytest.raises(SAEError, match="feature 128 .* out of range: valid are 0..127 .*128 features"):
        parse_features("120-130,130", 128)
    with pytest.raises(VisionSiteError, match="channel list '1-a'"):
        parse_channels("1-a")


def test_load_names_bad_devices_keywords_and_placements(tmp_path):
    """``ms.load`` with device="cuda" on a machine without one raised torch's bare AssertionError, an
    unknown keyword the model class's TypeError, an impossible device map an error naming none of it."""
    hf, tok = tiny_hf("llama")
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"device='tpu' is not a device .*valid here: cpu"):
        ms.load(str(tmp_path), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device='cuda': this machine's torch cannot run there; valid here: cpu"):
            ms.load(str(tmp_path), device="cuda")
        with pytest.raises(ValueError, match=r"could not place the model with device_map=\{'': 'cuda:3'\}"):
            ms.load(str(tmp_path), device_map={"": "cuda:3"})
    with pytest.raises(TypeError, match=r"unknown keyword 'bogus'; valid: device, dtype, and transformers' .*device_map"):
        ms.load(str(tmp_path), bogus=1)
