"""Bad export files are refused with a clear error and leave the archive exactly as it was."""

import json
import random
import zipfile

import pytest
from samples import sample_results

from mechscope.archive.transfer import ArchiveImportError
from mechscope.report.page import specimen_report


@pytest.fixture
def exported(llama, archive, tmp_path):
    spec = archive.create("to export", model=llama, tags=["a"])
    for r in sample_results(llama)[:3]:
        spec.add(r)
    return archive.export(spec.uid, tmp_path / "good.mscope")


def snapshot(arch):
    """Everything an import could change: specimens with versions and findings, and the files."""
    return ([(s.uid, s.version, s.tags, [f.uid for f in s.findings()]) for s in arch.specimens()], arch.blobs.all())


def rewrite(src, dst, *, manifest=None, entries=None):
    """Copy an export, optionally replacing the manifest and/or entries {name: bytes}."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        names = entries.keys() if entries is not None else [i.filename for i in zin.infolist()]
        for name in names:
            if name == "manifest.json" and manifest is not None:
                zout.writestr(name, json.dumps(manifest))
            else:
                zout.writestr(name, entries[name] if entries is not None else zin.read(name))
    return dst


def load_manifest(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("manifest.json"))


def assert_refused(target, path, match):
    before = snapshot(target)
    with pytest.raises(ArchiveImportError, match=match):
        target.import_file(path)
    assert snapshot(target) == before


def test_a_good_file_imports(exported, new_archive):
    target = new_archive()
    spec = target.import_file(exported)
    assert len(spec.findings()) == 3


def test_truncated_file(exported, new_archive, tmp_path):
    data = exported.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.mscope"
        bad.write_bytes(data[:cut])
        assert_refused(new_archive(), bad, "nothing was imported")


def test_wrong_hash(exported, new_archive, tmp_path):
    with zipfile.ZipFile(exported) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    blob = next(n for n in entries if n.startswith("blobs/"))
    entries[blob] = bytes([entries[blob][0] ^ 1]) + entries[blob][1:]
    assert_refused(new_archive(), rewrite(exported, tmp_path / "hash.mscope", entries=entries), "does not match its sha256")


@pytest.mark.parametrize("name", ["../evil", "/etc/passwd", "blobs/../../x", "blobs/" + "a" * 64 + "/x", "..\\win",
                                  "blobs/ABC"])
def test_path_traversal_names(exported, new_archive, tmp_path, name):
    with zipfile.ZipFile(exported) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    entries[name] = b"payload"
    assert_refused(new_archive(), rewrite(exported, tmp_path / "trav.mscope", entries=entries), "unexpected entry")


def test_huge_declared_sizes(exported, new_archive, tmp_path):
    m = load_manifest(exported)
    digest = next(iter(m["blobs"]))
    m["blobs"][digest] = 10**15
    for f in m["findings"]:
        for meta in f["files"].values():
            if meta["hash"] == digest:
                meta["size"] = 10**15
    assert_refused(new_archive(), rewrite(exported, tmp_path / "huge.mscope", manifest=m), r"size: input should be less than or equal to 4294967296, got 1000000000000000")


def test_sizes_that_lie(exported, new_archive, tmp_path):
    m = load_manifest(exported)
    digest = next(iter(m["blobs"]))
    m["blobs"][digest] += 1
    for f in m["findings"]:
        for meta in f["files"].values():
            if meta["hash"] == digest:
                meta["size"] += 1
    assert_refused(new_archive(), rewrite(exported, tmp_path / "lie.mscope", manifest=m), "manifest says")


@pytest.mark.parametrize("field,value,match", [
    ("schema", "0000_old", "archive schema"),
    ("format_version", 99, "format version 99"),
    ("format", "zip", "not a mechscope specimen manifest"),
])
def test_wrong_versions(exported, new_archive, tmp_path, field, value, match):
    m = load_manifest(exported)
    m[field] = value
    assert_refused(new_archive(), rewrite(exported, tmp_path / "ver.mscope", manifest=m), match)


def test_unknown_result_type_and_broken_result(exported, new_archive, tmp_path):
    m = load_manifest(exported)
    m["findings"][0]["kind"] = m["findings"][0]["data"]["type"] = "FromTheFuture"
    assert_refused(new_archive(), rewrite(exported, tmp_path / "kind.mscope", manifest=m), "unknown type 'FromTheFuture'")
    m = load_manifest(exported)
    del m["findings"][0]["data"]["prompts"]
    assert_refused(new_archive(), rewrite(exported, tmp_path / "broken.mscope", manifest=m), "does not rebuild")


def test_not_a_zip(new_archive, tmp_path):
    bad = tmp_path / "x.mscope"
    bad.write_text("hello")
    assert_refused(new_archive(), bad, "not a mechscope export")
    assert_refused(new_archive(), tmp_path / "missing.mscope", "not a mechscope export")


def _mutations(rng, data: bytes, manifest: dict):
    """Yield (kind, bytes-or-manifest) mutations of a valid export."""
    kind = rng.choice(["flip", "truncate", "insert", "field"])
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return kind, bytes(out)
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "insert":
        at = rng.randrange(len(data))
        return kind, data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[at:]
    m = json.loads(json.dumps(manifest))
    target = rng.choice([m, m["specimen"], rng.choice(m["findings"]), rng.choice(m["findings"])["data"],
                         rng.choice(m["findings"])["data"].get("provenance", m), rng.choice(m["events"])])
    key = rng.choice(sorted(target))
    while isinstance(target[key], (list, dict)) and target[key] and rng.random() < 0.6:  # into nested values
        target = target[key]
        key = rng.randrange(len(target)) if isinstance(target, list) else rng.choice(sorted(target))
    target[key] = rng.choice([None, -1, 2**70, "", "../../x", [], {}, "x" * 5000, True, 3.5, {"__tensor__": "nope"},
                              "<script>alert(1)</script>", float("nan"), [[1, 2], [3]], {"a": {"b": [None]}},
                              float("inf"), 0, 1, 2, 99])  # the last: versions out of the history
    return kind, m


def _zip_tricks(rng, src, dst):
    """Entries that a careful reader must refuse: duplicates, zip-slip and absolute names, a link,
    a small deflated entry that declares a huge size, a figure that is not a PNG."""
    trick = rng.choice(["duplicate", "slip", "absolute", "symlink", "bomb", "fake-png"])
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        infos = zin.infolist()
        for info in infos:
            zout.writestr(info, zin.read(info.filename))
        blob = next(i for i in infos if i.filename.startswith("blobs/"))
        if trick == "duplicate":
            zout.writestr(blob.filename, b"other bytes")
        elif trick in ("slip", "absolute"):
            zout.writestr("../../evil" if trick == "slip" else "/tmp/evil", b"x")
        elif trick == "symlink":
            link = zipfile.ZipInfo("blobs/" + "0" * 64)
            link.external_attr = 0o120777 << 16
            zout.writestr(link, "/etc/passwd")
        elif trick == "bomb":
            zout.writestr(zipfile.ZipInfo("blobs/" + "f" * 64), b"\0" * (8 << 20), compress_type=zipfile.ZIP_DEFLATED)
    if trick == "fake-png":  # a declared figure.png whose bytes (and hash) are not an image
        m = load_manifest(src)
        f = next(f for f in m["findings"] if "figure.png" in f["files"])
        fake = b"<svg onload='alert(1)'/>"
        import hashlib

        digest = hashlib.sha256(fake).hexdigest()
        old = f["files"]["figure.png"]["hash"]
        f["files"]["figure.png"] = {"hash": digest, "size": len(fake)}
        still = any(g["files"].get(r, {}).get("hash") == old for g in m["findings"] for r in g["files"])
        m["blobs"] = {**({k: v for k, v in m["blobs"].items() if k != old or still}), digest: len(fake)}
        with zipfile.ZipFile(src) as zin:
            entries = {i.filename: zin.read(i.filename) for i in zin.infolist()
                       if i.filename != f"blobs/{old}" or still}
        entries[f"blobs/{digest}"] = fake
        rewrite(src, dst, manifest=m, entries=entries)
    return trick


def test_fuzzed_exports_are_refused_cleanly_or_imported_whole(exported, new_archive, tmp_path):
    rng = random.Random(1234)
    target = new_archive()
    data = exported.read_bytes()
    manifest = load_manifest(exported)
    outcomes = {"refused": 0, "imported": 0}
    for i in range(300):
        path = tmp_path / f"fuzz{i}.mscope"
        if i % 5 == 4:
            kind = _zip_tricks(rng, exported, path)
        else:
            kind, mutated = _mutations(rng, data, manifest)
            if kind == "field":
                rewrite(exported, path, manifest=mutated)
            else:
                path.write_bytes(mutated)
        before = snapshot(target)
        try:
            spec = target.import_file(path)
        except ArchiveImportError:
            outcomes["refused"] += 1
            assert snapshot(target) == before, f"mutation {i} ({kind}) changed the archive"
            continue
        # a mutation that kept the file valid (e.g. in zip padding): the import must be whole
        outcomes["imported"] += 1
        assert kind not in ("duplicate", "slip", "absolute", "symlink", "bomb", "fake-png"), kind
        page = specimen_report(spec)  # accepted means shown: every page of it renders
        assert "<script>alert" not in page, f"mutation {i} ({kind}) put markup into the page"
        target.remove(spec.uid)
    assert outcomes["refused"] > 200, outcomes


@pytest.mark.parametrize("damage,match", [
    (lambda m: m["findings"][0].update(added_in=m["specimen"]["version"] + 1), "is added in version"),
    (lambda m: m.update(events=[]), "every version 1..2 needs exactly one event"),
    (lambda m: m["specimen"].update(version=1), "for a specimen at version 1"),
    (lambda m: m["findings"][0].update(removed_in=m["findings"][0]["added_in"]), "and removed in"),
    (lambda m: m["events"][0].update(action="tagged"), "does not begin with the specimen's creation"),
])
def test_inconsistent_histories_are_refused(exported, new_archive, tmp_path, damage, match):
    m = load_manifest(exported)
    m["specimen"]["version"] = 2  # two events: created, then one finding added (a one-finding export)
    m["events"] = m["events"][:2]
    m["findings"] = m["findings"][:1]
    m["findings"][0]["added_in"] = 2
    m["blobs"] = {meta["hash"]: meta["size"] for meta in m["findings"][0]["files"].values()}
    good = rewrite(exported, tmp_path / "good.mscope", manifest=m,
                   entries={"manifest.json": b"", **{f"blobs/{h}": _blob(exported, h) for h in m["blobs"]}})
    new_archive().import_file(good)  # the consistent one imports
    damage(m)
    bad = rewrite(exported, tmp_path / "bad.mscope", manifest=m,
                  entries={"manifest.json": b"", **{f"blobs/{h}": _blob(exported, h) for h in m["blobs"]}})
    assert_refused(new_archive(), bad, match)


def _blob(path, digest):
    with zipfile.ZipFile(path) as zf:
        return zf.read(f"blobs/{digest}")


def test_raw_errors_of_the_zip_and_json_layers_are_import_errors(exported, new_archive, tmp_path):
    """A 5,000-digit integer in the manifest (Python's integer-conversion ValueError) and an entry using a
    compression method zipfile cannot read (NotImplementedError) are refused like any bad file."""
    m = load_manifest(exported)
    raw = json.dumps(m).replace('"version": ', '"version": ' + "9" * 5000 + ", \"v0\": ", 1).encode()
    huge = tmp_path / "huge.mscope"
    with zipfile.ZipFile(exported) as zin, zipfile.ZipFile(huge, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, raw if info.filename == "manifest.json" else zin.read(info))
    assert_refused(new_archive(), huge, "manifest.json is not valid JSON")
    odd = tmp_path / "odd.mscope"
    with zipfile.ZipFile(exported) as zin, zipfile.ZipFile(odd, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
    data = bytearray(odd.read_bytes())
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # local and central headers: compression method 99 (AES)
        at = data.find(sig)
        while at != -1:
            offset = at + (8 if sig == b"PK\x03\x04" else 10)
            data[offset:offset + 2] = (99).to_bytes(2, "little")
            at = data.find(sig, at + 4)
    odd.write_bytes(bytes(data))
    assert_refused(new_archive(), odd, "nothing was imported")


def _with_figure(exported, dst, data: bytes):
    """The export with its first figure.png replaced by ``data`` (hashes and sizes kept consistent)."""
    import hashlib

    m = load_manifest(exported)
    finding = next(f for f in m["findings"] if "figure.png" in f["files"])
    old = finding["files"]["figure.png"]["hash"]
    new = hashlib.sha256(data).hexdigest()
    finding["files"]["figure.png"] = {"hash": new, "size": len(data)}
    still = any(meta["hash"] == old for f in m["findings"] for meta in f["files"].values())
    blobs = {h: n for h, n in m["blobs"].items() if h != old or still}
    m["blobs"] = {**blobs, new: len(data)}
    entries = {"manifest.json": b"", **{f"blobs/{h}": _blob(exported, h) for h in blobs}, f"blobs/{new}": data}
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name, content in entries.items():
            zout.writestr(name, json.dumps(m) if name == "manifest.json" else content)
    return dst


def test_figures_that_would_blow_up_a_page_are_refused(exported, new_archive, tmp_path):
    """A 282 KB export held a 256 MiB "PNG" (only its signature was checked) and every page inlined it:
    a 358 MB page. Figures are bounded by their header's pixels and by bytes, at import and at record."""
    import struct
    import zlib

    from mechscope.archive import ArchiveError

    def png(width, height, padding=0):
        ihdr = struct.pack(">II", width, height) + b"\x08\x02\x00\x00\x00"
        chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
        return b"\x89PNG\r\n\x1a\n" + chunk + bytes(padding)

    assert_refused(new_archive(), _with_figure(exported, tmp_path / "wide.mscope", png(100_000, 100_000)),
                   r"figure.png is 100000 × 100000 pixels")
    assert_refused(new_archive(), _with_figure(exported, tmp_path / "big.mscope", png(100, 100, 20 << 20)),
                   r"figure.png is 20,971,553 bytes \(a figure is at most 16,777,216\)")
    assert_refused(new_archive(), _with_figure(exported, tmp_path / "headless.mscope", b"\x89PNG\r\n\x1a\nxx"),
                   "figure.png is a PNG without its header")
    new_archive().import_file(_with_figure(exported, tmp_path / "fine.mscope", png(640, 480, 1000)))

    import torch

    from mechscope.results import NextTokens, Provenance

    target = new_archive()
    result = NextTokens(provenance=Provenance(model="m", fingerprint="f" * 32), prompts=["a"], tokens=[["b"]],
                        probs=torch.tensor([[0.5]]))
    real = NextTokens.png_bytes
    try:
        NextTokens.png_bytes = lambda self: png(50_000, 50_000)
        with pytest.raises(ArchiveError, match=r"figure.png is 50000 × 50000 pixels .*; nothing was stored"):
            target.record("huge", [(result, "")])
    finally:
        NextTokens.png_bytes = real
    assert target.specimens() == []
