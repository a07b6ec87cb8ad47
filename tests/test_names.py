"""Component names: one module writes and reads both spellings, and everything accepts either."""

import pytest

from mechscope import names
from mechscope.circuits.graph import Graph


@pytest.mark.parametrize("label,node,site", [
    ("L3H2", "a3.h2", ("blocks.3.attn.z", {"heads": [2]})),
    ("L3H2.q", "a3.h2.q", ("blocks.3.attn.q", {"heads": [2]})),
    ("L3KV1.k", "a3.kv1.k", ("blocks.3.attn.k", {"heads": [1]})),
    ("MLP3", "m3", ("blocks.3.mlp.out", {})),
    ("MLP3E5", "m3.e5", ("blocks.3.mlp.experts.5.out", {})),
    ("MLP3 shared", "m3.shared", ("blocks.3.mlp.shared_expert.out", {})),
    ("L3 N17", "m3.n17", ("blocks.3.mlp.post", {"neurons": [17]})),
    ("embed", "embed", ("embed", {})),
    ("logits", "logits", ("logits", {})),
])
def test_both_spellings_parse_to_one_component(label, node, site):
    a, b = names.parse(label), names.parse(node)
    assert a == b and a.label == label and a.node == node
    if site is None:
        with pytest.raises(names.ComponentNameError, match="no site"):
            a.site
    else:
        assert a.site == site


def test_a_misspelt_name_shows_the_spellings():
    for bad in ("L3.H2", "a3h2", "head 3", "MLP", 7):
        with pytest.raises(names.ComponentNameError, match=r"L3H2 or a3.h2") as err:
            names.parse(bad)
        assert repr(bad) in str(err.value)


def test_depth_order_and_the_graph_reads_either_spelling():
    order = ["embed", "a0.h1", "m0", "L1H0", "MLP1", "logits"]
    assert sorted(order, key=names.rank) == order
    g = Graph(2, 4, 2, True, False)
    assert g.sender_index("L1H2") == g.sender_index("a1.h2")
    assert g.receivers_of("L1H3") == g.receivers_of("a1.h3")  # its query, and its group's key and value
    assert g.receivers[g.receivers_of("a1.h3.k")[0]] == "a1.kv1.k"
    assert g.edge_index("L0H1", "MLP1") == g.edge_index("a0.h1", "m1")


def test_features_have_one_spelling():
    """A dictionary's features (``F17``) and an attribution graph's (``L3 F17 @5``, node ``3_17_5``) are
    written and read by names.py, like heads and neurons."""
    f = names.feature(17, 3, 5)
    assert (f.label, f.node) == ("L3 F17 @5", "3_17_5")
    assert names.parse("L3 F17 @5") == f and names.parse("F17") == names.feature(17)
    assert names.parse("L3 F17") == names.feature(17, 3) and names.feature(17).label == "F17"
    with pytest.raises(names.ComponentNameError, match="only with its layer and position"):
        names.feature(17).node
    for bad in ("F17 @5", "L3F17", "F-1"):
        with pytest.raises(names.ComponentNameError, match="features F17"):
            names.parse(bad)
