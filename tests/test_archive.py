"""The specimen archive: round trips, history, search, integrity, migrations, crash safety."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from samples import same_result, sample_results
from sqlalchemy import inspect, text

import mechscope.archive
from mechscope.archive import ArchiveError, BlobError
from mechscope.archive.schema import metadata
from mechscope.archive.database import schema_revision
from mechscope.results import result_types


def test_samples_cover_every_result_type(llama):
    assert {type(r).__name__ for r in sample_results(llama)} == set(result_types())


def test_every_result_type_round_trips_through_archive_export_and_import(llama, new_archive, tmp_path):
    src, dst = new_archive(), new_archive()
    spec = src.create("tiny llama", model=llama, task="toy", dataset="two prompts", seed=3, tags=["t1", "t2"])
    results = sample_results(llama)
    for r in results:
        spec.add(r, notes=f"about {type(r).__name__}")
    back = [f.result() for f in src.get(spec.uid).findings()]
    assert all(same_result(a, b) for a, b in zip(results, back))

    path = src.export(spec.uid, tmp_path / "spec.mscope")
    imported = dst.import_file(path)
    assert (imported.uid, imported.name, imported.version, imported.tags) == (spec.uid, "tiny llama", 1 + len(results),
                                                                              ["t1", "t2"])
    assert imported.model_fingerprint == llama.fingerprint and imported.dataset_seed == 3
    again = [f.result() for f in imported.findings()]
    assert all(same_result(a, b) for a, b in zip(results, again))
    assert [f.notes for f in imported.findings()] == [f"about {type(r).__name__}" for r in results]
    assert [e.action for e in imported.history()] == [e.action for e in spec.history()]
    assert imported.findings()[0].file("figure.png")[:4] == b"\x89PNG"


def test_versions_and_history(llama, archive):
    spec = archive.create("history", model=llama)
    a, b = sample_results(llama)[:2]
    fa = spec.add(a)
    spec.add(b)
    spec.tag("x", "y")
    spec.remove_finding(fa.uid)
    spec.set_notes(spec.findings()[0].uid, "only the scan is left")
    spec.untag("y")
    assert spec.version == 7
    assert [e.action for e in spec.history()] == ["created", "added", "added", "tagged", "removed", "notes", "untagged"]
    assert [f.kind for f in spec.findings()] == ["AblationScan"]
    assert [f.kind for f in spec.findings(version=3)] == ["NextTokens", "AblationScan"]
    assert [f.kind for f in spec.findings(version=2)] == ["NextTokens"]
    assert spec.tags == ["x"] and archive.get(spec.uid).findings()[0].notes == "only the scan is left"


def test_search_and_get(llama, archive):
    one = archive.create("IOI in tiny llama", model=llama, task="ioi", tags=["circuit"], description="names")
    two = archive.create("induction", task="induction", tags=["heads"])
    two.add(sample_results(llama)[0], notes="previous-token head spotted")
    assert [s.uid for s in archive.search(task="ioi")] == [one.uid]
    assert [s.uid for s in archive.search(tag="heads")] == [two.uid]
    assert [s.uid for s in archive.search(model=llama.fingerprint[:10])] == [one.uid]
    assert [s.uid for s in archive.search("PREVIOUS-token")] == [two.uid]
    assert [s.uid for s in archive.search("names")] == [one.uid]
    assert archive.get("induction").uid == two.uid and archive.get(one.uid[:8]).uid == one.uid
    with pytest.raises(ArchiveError, match="no specimen 'nope'.*recent: induction"):
        archive.get("nope")
    archive.remove(two.uid)
    assert [s.uid for s in archive.specimens()] == [one.uid]
    assert archive.blobs.all() == set()  # the removed specimen's files went with it


def test_corrupted_files_are_detected_on_read(llama, archive):
    spec = archive.create("corrupt")
    finding = spec.add(sample_results(llama)[1])
    path = archive.blobs.path(finding.files["tensors"][0])
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(BlobError, match="corrupted"):
        finding.result()
    path.unlink()
    with pytest.raises(BlobError, match="missing"):
        finding.result()


def test_bad_input_is_refused(archive):
    with pytest.raises(ArchiveError, match="non-empty name"):
        archive.create("  ")
    spec = archive.create("s")
    with pytest.raises(ArchiveError, match="takes a mechscope result"):
        spec.add({"not": "a result"})
    with pytest.raises(ArchiveError, match="tag"):
        spec.tag("x" * 101)


def test_migrations_build_the_declared_schema_and_refuse_a_newer_one(archive):
    insp = inspect(archive.engine)
    for table in metadata.sorted_tables:
        assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}, table.name
    with archive.engine.begin() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == schema_revision()
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    with pytest.raises(ArchiveError, match="newer than this mechscope"):
        mechscope.archive.database.migrate(archive.engine)


WRITER = r"""
import sys, mechscope.archive
from mechscope.models.tiny import tiny
from mechscope.results import NextTokens
model = tiny("llama")
arch = mechscope.archive.open(sys.argv[1])
spec = arch.get("crash")
run = model.run(["The cat"])
print("ready", flush=True)
i = 0
while True:
    spec.add(NextTokens.of(run, ["The cat"], k=2), notes=f"write {i}", figure=(i % 2 == 0))
    if i == 0:
        print("committed", flush=True)  # the parent kills only after one write is in (a loaded machine is slow)
    i += 1
"""


def test_a_killed_writer_leaves_a_consistent_archive(tmp_path):
    location = str(tmp_path / "crash")
    mechscope.archive.open(location).create("crash")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.05, 0.3, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, location], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        assert proc.stdout.readline().strip() == b"committed"
        time.sleep(delay)  # then killed somewhere inside a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        arch = mechscope.archive.open(location)
        spec = arch.get("crash")
        found = spec.findings()
        history = spec.history()
        assert spec.version == history[-1].version == len(history)
        assert len(found) == sum(e.action == "added" for e in history)
        for f in found:  # every committed finding has all its files, intact
            f.result()
            if "figure.png" in f.files:
                assert f.file("figure.png")[:4] == b"\x89PNG"
        with arch.engine.connect() as conn:
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        arch.close()
    assert len(found) > 0


def _forked(fault, fn, *args) -> int:
    """Run ``fn(*args)`` in a forked child with ``MECHSCOPE_FAULT=fault``; its exit code (0 when
    it returned). Forking keeps the imports: a crash point costs milliseconds, not a new interpreter."""
    import multiprocessing

    def child():
        if fault:
            os.environ["MECHSCOPE_FAULT"] = fault
        fn(*args)

    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(120)
    return proc.exitcode


def _record(location, notes):
    from mechscope.results import NextTokens, Provenance

    arch = mechscope.archive.open(location)
    made = [NextTokens(provenance=Provenance(model="m", fingerprint="f" * 32), prompts=["a"], tokens=[[str(k)]],
                       probs=torch.tensor([[0.5]])) for k in (1, 2, 3)]
    arch.record("rec", [(r, f"{notes} {k}") for k, r in enumerate(made, 1)], task="t")
    arch.close()


def test_record_is_all_or_nothing_at_every_step(tmp_path):
    """A writer ended (os._exit, as by SIGKILL) at each named step of ``record`` leaves the
    specimen with exactly its old findings or exactly its new ones, the archive opens, and the files
    of the lost write are swept (no orphans). Steps: 3 files written, specimen found, 3 old
    findings removed, 3 new added, committed — 11 points; the 12th call never comes."""
    from mechscope.archive.faults import EXIT_CODE

    location = str(tmp_path / "arch")
    _record(location, "old")
    outcomes = []
    for n in range(1, 13):
        assert _forked(f"record:{n}", _record, location, f"new{n}") == (0 if n == 12 else EXIT_CODE), n
        arch = mechscope.archive.open(location)
        arch.collect_garbage(grace=0)
        spec = arch.get("rec")
        notes = [f.notes for f in spec.findings()]
        assert notes in (["old 1", "old 2", "old 3"], [f"new{n} 1", f"new{n} 2", f"new{n} 3"]), (n, notes)
        outcomes.append(notes[0].split()[0])
        history = spec.history()
        assert spec.version == history[-1].version == len(history)
        with arch.engine.connect() as conn:
            used = set(conn.execute(text("SELECT hash FROM finding_files")).scalars())
        assert arch.blobs.all() == used, n  # no orphans once swept
        for f in spec.findings():
            f.result()
        arch.close()
        if notes[0].startswith("new"):  # back to the old state for the next step
            _record(location, "old")
    assert outcomes[:10] == ["old"] * 10 and outcomes[10:] == ["new11", "new12"]
    from mechscope.cli import main

    orphan, _ = mechscope.archive.open(location).blobs.put(b"written, never committed")
    assert main(["specimens", "gc", "--archive", location]) == 0  # young: a running writer's, kept
    assert mechscope.archive.open(location).blobs.exists(orphan)
    assert main(["specimens", "gc", "--grace", "0", "--archive", location]) == 0
    assert not mechscope.archive.open(location).blobs.exists(orphan)


def test_a_first_open_killed_while_building_the_schema_can_be_opened_again(tmp_path):
    from mechscope.archive.faults import EXIT_CODE

    for n in (1, 2):
        location = str(tmp_path / f"fresh{n}")
        assert _forked(f"migrate:{n}", mechscope.archive.open, location) == EXIT_CODE
        arch = mechscope.archive.open(location)  # used to fail: "table specimens already exists"
        arch.create("after")
        assert [s.name for s in arch.specimens()] == ["after"]
        arch.close()


def test_import_is_all_or_nothing_at_every_step(tmp_path):
    """An importer ended at each named step (files written one by one, specimen and history
    inserted, each finding inserted, committed) leaves the archive without the specimen or with
    all of it, always openable, with no orphans once swept."""
    from mechscope.archive.faults import EXIT_CODE

    source = str(tmp_path / "source")
    _record(source, "exported")
    export = mechscope.archive.open(source).export("rec", tmp_path / "rec.mscope")
    target = str(tmp_path / "target")
    mechscope.archive.open(target).close()
    outcomes = []
    for n in range(1, 20):
        code = _forked(f"import:{n}", lambda: mechscope.archive.open(target).import_file(export))
        arch = mechscope.archive.open(target)
        arch.collect_garbage(grace=0)
        specs = arch.specimens()
        if specs:
            assert [f.notes for f in specs[0].findings()] == ["exported 1", "exported 2", "exported 3"]
            for f in specs[0].findings():
                f.result()
            arch.remove(specs[0].uid)
        with arch.engine.connect() as conn:
            used = set(conn.execute(text("SELECT hash FROM finding_files")).scalars())
        assert arch.blobs.all() == used, n
        arch.close()
        outcomes.append((code, bool(specs)))
        if code == 0:
            break
    assert outcomes[-1] == (0, True) and outcomes[-2] == (EXIT_CODE, True)  # killed after the commit: all there
    assert len(outcomes) > 6 and all(o == (EXIT_CODE, False) for o in outcomes[:-2]), outcomes


def test_export_is_atomic_and_import_refuses_duplicates(llama, archive, tmp_path):
    spec = archive.create("dup")
    spec.add(sample_results(llama)[0])
    path = archive.export(spec.uid, tmp_path / "dup.mscope")
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ArchiveError, match="already in the archive.*replace"):
        archive.import_file(path)
    spec.tag("changed")
    again = archive.import_file(path, replace=True)
    assert again.tags == [] and len(archive.specimens()) == 1
    manifest = json.loads(__import__("zipfile").ZipFile(path).read("manifest.json"))
    assert manifest["format"] == "mechscope-specimen" and manifest["schema"] == schema_revision()


def test_a_fresh_process_rebuilds_every_result_type(llama, tmp_path):
    """The web server and importers run in processes that never imported the analysis modules."""
    arch = mechscope.archive.open(tmp_path / "fresh")
    spec = arch.create("fresh")
    for r in sample_results(llama):
        spec.add(r, figure=False)
    code = ("import sys, mechscope.archive; s = mechscope.archive.open(sys.argv[1]).get('fresh'); "
            "print(','.join(type(f.result()).__name__ for f in s.findings()))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "fresh")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().split(",") == [type(r).__name__ for r in sample_results(llama)]


def _shared(k: int = 0):
    """A result whose files (tensors, figure) are the same bytes every time it is made."""
    from mechscope.results import NextTokens, Provenance

    return NextTokens(provenance=Provenance(model="m", fingerprint="f" * 32, created="2026-01-01T00:00:00+00:00"),
                      prompts=["shared"], tokens=[[str(k)]], probs=torch.tensor([[0.25 + k]]))


@pytest.mark.parametrize("interference", ["remove", "gc-old-file", "gc-grace-0"])
def test_files_a_writer_holds_survive_a_concurrent_delete(archive, monkeypatch, interference):
    """Between a writer's prepared files and its commit, (a) ``remove`` of another specimen whose
    finding has the same bytes, or (b) the garbage collection of an old unreferenced file the writer
    reuses, deleted that file: the writer then committed a finding whose file was gone. Interleaved
    here step by step in one process; the writer's finding must read back."""
    import mechscope.archive.store as store
    from mechscope.archive.blobs import BlobStore
    from mechscope.archive.specimens import prepare_finding

    if interference == "remove":
        archive.record("first", [(_shared(), "")])
        interfere = lambda: archive.remove("first")  # noqa: E731
    else:  # the same bytes already in the store, unreferenced and older than the grace period
        for content in prepare_finding(BlobStore(archive.blobs.root.parent / "scratch"), _shared()).contents.values():
            digest, _ = archive.blobs.put(content)
            os.utime(archive.blobs.path(digest), (time.time() - 7200, time.time() - 7200))
        interfere = lambda: archive.collect_garbage(grace=0 if interference == "gc-grace-0" else 3600)  # noqa: E731
    real = store.prepare_finding

    def prepared_then_interfered(*args, **kwargs):
        prepared = real(*args, **kwargs)
        interfere()
        return prepared

    monkeypatch.setattr(store, "prepare_finding", prepared_then_interfered)
    spec = archive.record("second", [(_shared(), "written while another deleted")])
    for finding in spec.findings():
        assert finding.result().tokens == [["0"]] and finding.file("figure.png")[:4] == b"\x89PNG"


def _writer(location, files, name, n):
    arch = mechscope.archive.open(location, files=files)
    for k in range(n):
        arch.record(f"{name} {k % 3}", [(_shared(k % 2), f"{name} {k}")], tags=[name])
    arch.close()


def _reader(location, files, n):
    arch = mechscope.archive.open(location, files=files)
    for _ in range(n):
        for spec in arch.search():
            spec.findings()
    arch.close()


def test_two_writers_and_a_reader_in_separate_processes(new_archive, tmp_path):
    """Writers that read before they write (``record``, the first migration) failed with "database is
    locked" once another had committed; now each write takes the lock up front and waits its turn."""
    import multiprocessing

    fresh = new_archive()
    location, files = fresh.url, fresh.blobs.root
    fresh.close()
    if location.startswith("sqlite"):  # a first open by several processes at once, on a new location
        location, files = f"sqlite:///{tmp_path / 'new' / 'archive.db'}", tmp_path / "new" / "files"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(location, files, name, 12)) for name in ("alpha", "beta", "gamma")]
    procs.append(ctx.Process(target=_reader, args=(location, files, 12)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    arch = mechscope.archive.open(location, files=files)
    specs = arch.search()
    assert len(specs) == 9 and all(len(s.findings()) == 1 for s in specs)
    for s in specs:
        s.findings()[0].result()


def test_a_page_after_import_replace_shows_the_new_finding(archive, tmp_path):
    """A replacement keeps the finding's uid, created time and files and (SQLite) reuses its row id;
    rendered fragments were cached by those, so a running server kept showing the old finding."""
    import zipfile

    from mechscope.report.page import finding_view

    spec = archive.record("replaced", [(_shared(), "")])
    first = tmp_path / "first.mscope"
    archive.export(spec.uid, first)
    second = tmp_path / "second.mscope"
    with zipfile.ZipFile(first) as src, zipfile.ZipFile(second, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "manifest.json":
                manifest = json.loads(data)
                manifest["findings"][0]["data"]["prompts"] = ["a replaced prompt"]
                data = json.dumps(manifest).encode()
            dst.writestr(item, data)
    archive.remove(spec.uid)
    archive.import_file(first)
    assert "a replaced prompt" not in str(finding_view(archive.get(spec.uid).findings()[0])["body"])
    archive.import_file(second, replace=True)
    assert "a replaced prompt" in str(finding_view(archive.get(spec.uid).findings()[0])["body"])
