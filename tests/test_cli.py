"""The `mechscope` command on a local tiny model directory."""

import json
from pathlib import Path

import pytest

from mechscope.cli import main
from mechscope.models.tiny import tiny_hf


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-gpt2")
    hf, tok = tiny_hf("gpt2")
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_info(model_dir, capsys):
    assert main(["info", model_dir]) == 0
    out = capsys.readouterr().out
    assert "gpt2: 3 layers, 4 heads" in out and "fingerprint" in out and "45 sites" in out  # 3 × 14 block sites + embed, final_norm, logits
    assert main(["info", model_dir, "--json", "-"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_layers"] == 3 and "blocks.2.attn.pattern" in info["sites"]


def test_run_prints_top_tokens(model_dir, capsys):
    from mechscope.results import NextTokens

    assert main(["run", model_dir, "The cat", "Paris is", "-k", "3", "--json", "-"]) == 0
    result = NextTokens.from_json(capsys.readouterr().out)
    assert len(result.tokens) == 2 and result.probs.shape == (2, 3)


def test_unknown_model_is_a_clean_error(capsys):
    assert main(["info", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_lens_and_attribute_print_tables_and_write_pages(model_dir, capsys, tmp_path):
    out = tmp_path / "lens.html"
    assert main(["lens", model_dir, "The cat sat", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "layer" in text and "L2" in text and "DLA of logit" in text and out.read_text().count('<table class="lens-grid"') == 1
    for method in ("ig", "shap", "lime", "occlusion", "saliency", "gradxinput"):
        page = tmp_path / f"{method}.html"
        assert main(["attribute", model_dir, "The cat sat", "--method", method, "--out", str(page)]) == 0
        assert "attribution of" in capsys.readouterr().out and "attr-text" in page.read_text()


def test_heads_prints_a_table(model_dir, capsys, tmp_path):
    page = tmp_path / "heads.html"
    assert main(["heads", model_dir, "--top", "3", "-k", "2", "--seeds", "2", "-n", "2", "--length", "8",
                 "--circuits", "--out", str(page)]) == 0
    out = capsys.readouterr().out
    assert "induction" in out and "random heads" in out and "k-composition" in out
    assert "Attention head detectors" in page.read_text() and "Head circuits: copying and composition" in page.read_text()


@pytest.mark.parametrize("method", ["eap-ig", "acdc"])
def test_circuit_finds_stores_and_exports_a_circuit(model_dir, capsys, tmp_path, method):
    from mechscope.archive import open as open_archive
    from mechscope.circuits import Circuit

    page, js, arch = tmp_path / "c.html", tmp_path / "c.json", str(tmp_path / "archive")
    assert main(["circuit", model_dir, "--task", "induction", "--method", method, "-n", "12", "--faithfulness", "0.5",
                 "--steps", "2", "--threshold", "1e-7", "--candidates", "150", "--out", str(page), "--json", str(js), "--archive", arch,
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "faithfulness" in out and "stored specimen" in out
    circuit = Circuit.from_json(js.read_text())
    assert circuit.faithfulness is not None and circuit.edges
    if method == "eap-ig":
        assert circuit.faithfulness >= 0.5
    assert "<svg" in page.read_text()
    spec = open_archive(arch).search(tag="circuit")[0]
    assert spec.name == f"induction circuit ({method})"


def test_probe_and_steer(model_dir, tmp_path, capsys):
    from mechscope.archive import open as open_archive

    archive = str(tmp_path / "a.db")
    assert main(["probe", model_dir, "--dataset", "truth", "--site", "blocks.*.resid_post", "--quiet",
                 "--archive", archive, "--out", str(tmp_path / "p.html")]) == 0
    out = capsys.readouterr().out
    assert "logistic probes for 'truth'" in out and "blocks.1.resid_post" in out and "selectivity" in out
    assert "Probe sweep" in (tmp_path / "p.html").read_text()
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("I love it\tI hate it\nvery good\tvery bad\n")
    assert main(["steer", model_dir, "The cat", "Paris is", "--pairs", str(pairs), "--site", "blocks.0.resid_post",
                 "--coef", "8", "--max-new-tokens", "4", "--quiet", "--archive", archive,
                 "--out", str(tmp_path / "s.html")]) == 0
    out = capsys.readouterr().out
    assert "mean-diff control vector from 2 pairs" in out and "coef +8" in out
    spec = open_archive(archive).get(f"steering: {pairs}")
    assert [f.kind for f in spec.findings()] == ["ControlVector", "SteeringSweep"]
    pairs.write_text("only one column\n")
    assert main(["steer", model_dir, "x", "--pairs", str(pairs), "--archive", archive]) == 2
    assert "each pair needs a positive and a negative prompt" in capsys.readouterr().err


def test_sae_harvest_train_eval_dashboard(model_dir, tmp_path, capsys):
    from mechscope.archive import open as open_archive

    archive = str(tmp_path / "a.db")
    store, target, out = str(tmp_path / "store"), str(tmp_path / "target"), str(tmp_path / "sae")
    assert main(["sae", "harvest", model_dir, "--site", "blocks.1.resid_mid", "--target-site", "blocks.1.mlp.out",
                 "--dir", store, "--target-dir", target, "--blocks", "12", "--context", "16", "--quiet"]) == 0
    assert capsys.readouterr().out.count("180 tokens") == 2  # 12 blocks × 15 (the first of each is the sink)
    assert main(["sae", "train", store, "--arch", "topk", "-k", "4", "--width", "64", "--batch-size", "60",
                 "--epochs", "3", "--dir", out, "--quiet"]) == 0
    assert "topk SAE × 64: 9 steps" in capsys.readouterr().out
    assert main(["sae", "eval", out, "--model", model_dir, "--blocks", "2", "--context", "16", "--quiet",
                 "--archive", archive, "--out", str(tmp_path / "e.html")]) == 0
    text = capsys.readouterr().out
    assert "CE loss recovered" in text and "L0 4.0" in text
    assert main(["sae", "dashboard", out, "--model", model_dir, "--features", "0-3", "--blocks", "4", "--quiet",
                 "--archive", archive, "--out", str(tmp_path / "d.html"), "--neuronpedia", str(tmp_path / "np.json")]) == 0
    assert [f["feature_index"] for f in json.loads((tmp_path / "np.json").read_text())["features"]] == [0, 1, 2, 3]
    assert (tmp_path / "d.html").read_text().count('class="card"') == 4
    from mechscope.explain.sidecar import SIDECAR, dictionary_fingerprint  # explanations beside the weights: shown
    from mechscope.sae import load_dictionary

    (Path(out) / SIDECAR).write_text(json.dumps({"fingerprint": dictionary_fingerprint(load_dictionary(out)),
                                                 "site": "blocks.1.resid_mid", "kind": "feature", "features": {
        "2": {"explanation": "cats <b>and</b> dogs", "explainer": "x", "scorer": "x",
              "scores": {"detection": {"balanced_accuracy": 0.75, "auc": None, "malformed": 0, "n": 4}}}}}))
    capsys.readouterr()
    assert main(["sae", "dashboard", out, "--model", model_dir, "--features", "0-3", "--blocks", "4", "--quiet",
                 "--out", str(tmp_path / "d2.html")]) == 0
    assert "F2: " in capsys.readouterr().out.split("“cats <b>and</b> dogs”")[0].splitlines()[-1]
    page = (tmp_path / "d2.html").read_text()
    assert "“cats &lt;b&gt;and&lt;/b&gt; dogs”" in page and "detection 0.75" in page
    assert [s.tags for s in open_archive(archive).search()] == [["sae"], ["sae"]]
    tc = str(tmp_path / "tc")
    assert main(["sae", "train", store, "--target", target, "--arch", "topk", "--k", "4", "--width", "64",
                 "--batch-size", "60", "--epochs", "1", "--skip", "--dir", tc, "--quiet"]) == 0
    assert main(["sae", "eval", tc, "--model", model_dir, "--blocks", "2", "--context", "16", "--quiet",
                 "--archive", archive, "--out", str(tmp_path / "t.html")]) == 0
    assert "at blocks.1.mlp.out" in capsys.readouterr().out
    assert main(["sae", "dashboard", out, "--model", model_dir, "--features", "60-70"]) == 2
    assert "is out of range: valid are 0..63 (this dictionary has 64 features)" in capsys.readouterr().err
    # the same dictionaries as SAELens and sparsify files: described, converted, evaluated
    for src, fmt in ((out, "saelens"), (out, "sparsify"), (tc, "sparsify")):
        dest = str(tmp_path / f"{fmt}-{len(src)}" / "layers.1.mlp")
        assert main(["sae", "convert", src, "--dir", dest, "--to", fmt]) == 0
        assert f"({fmt}); read back, its outputs on 256 random rows differ by" in capsys.readouterr().out
    assert main(["sae", "info", dest]) == 0
    info = capsys.readouterr().out
    assert "format     sparsify" in info and "topk transcoder with a skip connection" in info
    assert "reads      blocks.1.resid_mid, d_in 64" in info and "writes     blocks.1.mlp.out, d_out 64" in info
    assert main(["sae", "eval", dest, "--model", model_dir, "--blocks", "2", "--context", "16", "--quiet",
                 "--archive", archive, "--out", str(tmp_path / "s.html")]) == 0
    assert "topk × 64 at blocks.1.mlp.out" in capsys.readouterr().out
    assert main(["sae", "convert", tc, "--dir", str(tmp_path / "x"), "--to", "saelens"]) == 2
    assert "SAELens transcoders are ReLU or JumpReLU; this one is 'topk'" in capsys.readouterr().err
    assert main(["sae", "info", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder; a dictionary is a folder with" in capsys.readouterr().err


def test_sae_explain_writes_scores_and_refuses_a_model_that_cannot_chat(model_dir, tmp_path, capsys):
    from mechscope.models.tiny import tiny_chat

    chat_dir = tmp_path / "chat"
    chat = tiny_chat()
    chat.hf.save_pretrained(chat_dir)
    chat.tokenizer.save_pretrained(chat_dir)
    args = ["sae", "explain", "neurons:1", "--model", model_dir, "--features", "0-2", "--blocks", "8", "--context", "32",
            "--ctx-len", "4", "--quantiles", "2", "--n-test", "2", "--n-train", "2", "--n-negatives", "2", "--quiet"]
    assert main(args) == 2
    assert "has no chat template" in capsys.readouterr().err
    assert main(args + ["--explainer", str(chat_dir), "--cache", str(tmp_path / "r.sqlite"), "--json",
                        str(tmp_path / "x.json"), "--out", str(tmp_path / "x.html")]) == 0
    out = capsys.readouterr().out
    assert "neurons at blocks.1.mlp.post explained by local:" in out and "chat usage: explainer:" in out
    assert json.loads((tmp_path / "x.json").read_text())["type"] == "Explanations"
    assert main(args + ["--explainer", str(chat_dir), "--cache", str(tmp_path / "r.sqlite")]) == 0
    assert "(0 cached)" not in capsys.readouterr().out  # the rerun is answered from the cache
    assert main(["sae", "explain", "neurons:99", "--model", model_dir]) == 2
    assert "has layers 0.." in capsys.readouterr().err
    assert main(args + ["--quantiles", "5"]) == 2
    assert "n_test=2 draws nothing from each of 5 quantiles" in capsys.readouterr().err


def test_vision_gradcam(tmp_path, capsys):
    from mechscope.archive import open as open_archive

    archive = str(tmp_path / "a.db")
    assert main(["vision", "gradcam", "chelsea", "--class", "tabby", "--archive", archive,
                 "--out", str(tmp_path / "g.html")]) == 0
    out = capsys.readouterr().out
    assert "Egyptian cat" in out and "Grad-CAM for 'tabby, tabby cat'" in out
    assert "Image attribution" in (tmp_path / "g.html").read_text()
    assert [s.tags for s in open_archive(archive).search()] == [["vision"]]
    assert main(["vision", "gradcam", "no-such.png"]) == 2
    assert "no image file 'no-such.png'" in capsys.readouterr().err
    assert main(["vision", "gradcam", "chelsea", "--class", "spaceship", "--archive", archive]) == 2
    assert "no class named 'spaceship'" in capsys.readouterr().err


def test_vision_visualize(tmp_path, capsys):
    archive = str(tmp_path / "a.db")
    assert main(["vision", "visualize", "_blocks.10:17", "--steps", "3", "--quiet", "--archive", archive,
                 "--out", str(tmp_path / "v.html")]) == 0
    assert "_blocks.10:17: " in capsys.readouterr().out and "Feature visualization" in (tmp_path / "v.html").read_text()
    with pytest.raises(SystemExit):
        main(["vision", "visualize", "--archive", archive])
    assert "the following arguments are required: channel" in capsys.readouterr().err


def test_vision_fashion_model_is_offered_only_where_it_works(capsys):
    with pytest.raises(SystemExit):
        main(["vision", "gradcam", "chelsea", "--model", "fashion-cnn"])
    assert "unrecognized arguments: --model fashion-cnn" in capsys.readouterr().err


def test_graph_command_writes_page_json_and_specimen(model_dir, capsys, tmp_path):
    import torch

    from mechscope.archive import open as open_archive
    from mechscope.sae import SAEConfig, SparseCoder

    tdir = tmp_path / "transcoders"
    for layer in range(3):
        c = SparseCoder(SAEConfig("relu", 64, 16, d_out=64, site=f"blocks.{layer}.mlp.in",
                                  target_site=f"blocks.{layer}.mlp.out"), seed=layer)
        with torch.no_grad():
            c.b_enc.fill_(0.02)
        c.save(tdir / f"layer_{layer}")
    out, js, arch = tmp_path / "graph.html", tmp_path / "graph.json", tmp_path / "archive"
    assert main(["graph", model_dir, "The cat sat", "--transcoders", str(tdir), "--target", " the", "--quiet",
                 "--out", str(out), "--json", str(js), "--archive", str(arch), "--cards", "4", "--group",
                 "--explain", "3", "--validate", "3"]) == 0
    printed = capsys.readouterr().out
    assert "Replacement score" in printed and "kept" in printed and "stored specimen" in printed
    assert "supernodes" in printed and "L" in printed.split("supernodes")[1]
    doc = json.loads(js.read_text())
    assert doc["metadata"]["prompt_tokens"][0] == "<bos>" and any(n["feature_type"] == "logit" for n in doc["nodes"])
    assert "Attribution graph" in out.read_text()
    spec = open_archive(str(arch)).specimens()[0]
    assert [f.kind for f in spec.findings()] == ["AttributionGraph", "GraphValidation"]
    features = [n["node_id"] for n in doc["nodes"] if n["feature_type"] == "cross layer transcoder"][:3]
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"cat features": features}))
    assert main(["graph", model_dir, "The cat sat", "--transcoders", str(tdir), "--target", " the", "--quiet",
                 "--out", str(out), "--json", str(js), "--supernodes", str(named), "--validate", "1"]) == 0
    assert "1 supernodes named by hand: cat features (3)" in capsys.readouterr().out
    assert json.loads(js.read_text())["qParams"]["supernodes"] == [["cat features", *features]]
    named.write_text(json.dumps({"cat features": ["9_9_9"]}))
    assert main(["graph", model_dir, "The cat sat", "--transcoders", str(tdir), "--quiet", "--out", str(out),
                 "--supernodes", str(named)]) == 2
    assert "['9_9_9'] are no feature or error node of this graph" in capsys.readouterr().err
    assert main(["graph", model_dir, "The cat", "--transcoders", str(tmp_path / "none")]) == 2
    assert "is not a folder of transcoders" in capsys.readouterr().err
    assert main(["graph", model_dir, "The cat sat", "--transcoders", str(tdir), "--target", " the", "--quiet", "--out",
                 str(out), "--explain-features", "2", "--explain-contexts", "2"]) == 2  # this model cannot chat
    assert "has no chat template" in capsys.readouterr().err


def test_transcoders_command_trains_every_layer_and_scores_them(model_dir, capsys, tmp_path, monkeypatch):
    from mechscope.models.tiny import _TEXT

    corpus = {f"w{i}": (_TEXT + " ") * 4 for i in range(14)}
    monkeypatch.setattr("mechscope.data.corpus", lambda names: corpus)
    out = tmp_path / "tc"
    assert main(["transcoders", model_dir, "--dir", str(out), "--tokens", "600", "--width", "16", "-k", "4", "--context",
                 "16", "--batch-size", "60", "--eval-blocks", "3", "--device", "cpu", "--quiet",
                 "--out", str(tmp_path / "tc.html")]) == 0
    printed = capsys.readouterr().out
    assert "3 transcoders" in printed and "CE recovered" in printed
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["layer_0", "layer_1", "layer_2"]


def test_compile_command_checks_the_program_and_stores_its_true_circuit(capsys, tmp_path):
    import mechscope as ms
    from mechscope.archive import open as open_archive

    out, arch = tmp_path / "sort", tmp_path / "archive"
    assert main(["compile", "sort", "--max-len", "4", "--pairs", "8", "--dir", str(out), "--archive", str(arch),
                 "--out", str(tmp_path / "c.html")]) == 0
    printed = capsys.readouterr().out
    assert "equals the program on 780 inputs (every input" in printed and "0 mismatches" in printed
    assert "zero ablation: faithfulness 1.000, completeness 1.000" in printed
    assert "target_pos: head L0H0" in printed and "sort: head L1H0" in printed
    assert ms.load(str(out)).cfg.family == "mechscope_compiled"
    spec = open_archive(str(arch)).specimens()[0]
    assert "target_pos:mlp: every input within L∞ 0.0125 of its 5 codes decodes to its value: VERIFIED" in printed
    assert spec.name == "compiled: sort" and [f.kind for f in spec.findings()] == ["Circuit", "Circuit", "Verdict"]
    assert main(["compile", "length", "--out", str(tmp_path / "l.html")]) == 0
    assert "no task to measure the circuit on" in capsys.readouterr().out


def test_circuit_command_on_a_compiled_program_scores_against_the_truth(capsys, tmp_path):
    assert main(["circuit", "--task", "compiled:reverse", "--method", "acdc", "--ablation", "zero", "--measure", "task",
                 "-n", "8", "--quiet", "--out", str(tmp_path / "c.html"), "--archive", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out
    assert "against the true circuit (12 edges, 5 inert on these inputs under zero ablation): 7 of 7 found, 0 false" in printed
    assert main(["circuit", "--task", "ioi", "--quiet"]) == 2
    assert "--task ioi needs a MODEL" in capsys.readouterr().err


def _commands(p, prefix=()):
    """(full name, parser) of every command that runs (leaves of the subcommand tree)."""
    import argparse

    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield " ".join(prefix), p
        return
    for name, child in subs[0].choices.items():
        yield from _commands(child, prefix + (name,))


def test_one_grammar_every_command_has_subcommands_an_example_and_the_same_outputs():
    """`mechscope --help` lists each command once, in the order of the work; every command that runs has an
    example of itself in its help; --out is a page, --json a path, --dir a folder, -q quiet, everywhere."""
    from mechscope.cli import PIPELINE, parser

    p = parser()
    top = p.format_help()
    names = [name for _, group in PIPELINE for name in group]
    assert [top.index(f"\n    {name} ") for name in names] == sorted(top.index(f"\n    {name} ") for name in names)
    assert all(len(line) <= 100 for line in top.split("\n"))
    leaves = dict(_commands(p))
    assert {"sae train", "sae info", "vision gradcam", "specimens import", "lens"} <= set(leaves)
    for name, leaf in leaves.items():
        epilog = leaf.epilog or ""
        assert epilog.startswith("example") and f"mechscope {name}" in epilog, name
        assert leaf.format_usage().startswith(f"usage: mechscope {name} [-h]"), leaf.format_usage()  # not the top usage
        assert leaf.get_default("command_name") == name
        options = {o: a for a in leaf._actions for o in a.option_strings}
        assert not {"--page", "--output", "--store", "--sae", "--directory"} & set(options), name
        if "--out" in options:
            assert options["--out"].metavar == "PAGE" and "-o" in options["--out"].option_strings, name
        if "--json" in options:
            assert options["--json"].metavar == "PATH", name
        if "--quiet" in options:
            assert "-q" in options["--quiet"].option_strings, name
        for flag in ("-k", "-n", "-q", "-o"):  # a short flag means one thing
            if flag in options:
                assert options[flag].dest == {"-k": "k", "-n": "n", "-q": "quiet", "-o": "out"}[flag], (name, flag)


def test_pages_go_to_the_pages_folder_and_storing_is_asked_for(model_dir, tmp_path, monkeypatch, capsys):
    from mechscope.archive import open as open_archive
    from mechscope.lenses.logit import LogitLens

    work, pages, archive = tmp_path / "work", tmp_path / "pages", tmp_path / "archive"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MECHSCOPE_PAGES", str(pages))
    monkeypatch.setenv("MECHSCOPE_ARCHIVE", str(archive))
    assert main(["lens", model_dir, "The cat sat"]) == 0
    assert f"wrote {pages / 'lens.html'}" in capsys.readouterr().out
    assert list(work.iterdir()) == [] and not archive.exists()  # nothing in the working directory, nothing stored
    assert main(["lens", model_dir, "The cat sat", "--json", "lens.json", "--archive"]) == 0
    assert "stored specimen" in capsys.readouterr().out
    assert "".join(LogitLens.from_json((work / "lens.json").read_text()).tokens).endswith("The cat sat")
    assert [f.kind for f in open_archive(str(archive)).specimens()[0].findings()] == ["LogitLens", "LogitAttribution"]


def test_bad_arguments_are_refused_before_the_work(model_dir, tmp_path, capsys):
    """`compile --max-len 0` used the default silently; `compile` into a file reported success after
    a failed write; `graph` checked its thresholds only after computing the whole graph."""
    assert main(["compile", "sort", "--max-len", "0"]) == 2
    assert "--max-len=0: the longest input must be an integer ≥ 1" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["compile", "sort", "--dir", str(tmp_path / "file")]) == 2
    assert "a file is there; the compiled model is saved as a folder" in capsys.readouterr().err
    assert main(["graph", model_dir, "The cat", "--transcoders", str(tmp_path / "none"), "--node-threshold", "8"]) == 2
    assert "node_threshold=8.0: it must be between 0 and 1" in capsys.readouterr().err  # not "no transcoders"


def test_the_command_starts_without_torch():
    """`mechscope --help` took ~12 s (torch and transformers imported by `import mechscope`); the command
    line, every command's help and `import mechscope` itself now load neither."""
    import subprocess
    import sys

    code = ("import sys, mechscope, mechscope.cli as cli; cli.parser().format_help(); import mechscope.compile; "
            "mechscope.compile.PROGRAMS; print(sorted(m for m in ('torch', 'transformers', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    import mechscope as ms

    assert ms.load.__module__ == "mechscope.models.load" and "Route" in dir(ms) and ms.compile.PROGRAMS


def test_threads_default_to_the_free_cores_and_are_set_by_flag_or_environment(model_dir, monkeypatch, capsys):
    """torch's one thread per core ran commands 5-18x slower when another process was busy; the command
    line chooses the free cores unless --threads / $MECHSCOPE_THREADS says, and says so."""
    import torch

    from mechscope.models import threads

    before = torch.get_num_threads()
    monkeypatch.delenv("MECHSCOPE_THREADS")  # the suite's own setting (conftest)
    try:
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 1.0, 1.0))
        assert threads.choose_threads() == (1, "free cores (4 cores, load 2.6); --threads or $MECHSCOPE_THREADS sets it")
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
        assert threads.choose_threads()[0] == 4
        monkeypatch.setenv("MECHSCOPE_THREADS", "2")
        assert threads.choose_threads() == (2, "set by $MECHSCOPE_THREADS")
        assert threads.choose_threads("3") == (3, "set by --threads")
        assert main(["--threads", "1", "lens", model_dir, "The cat"]) == 0
        assert "threads: 1 (set by --threads)" in capsys.readouterr().err and torch.get_num_threads() == 1
        assert main(["--threads", "0", "lens", model_dir, "The cat"]) == 2
        assert "--threads='0': threads must be an integer ≥ 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)
