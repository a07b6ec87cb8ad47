"""Commands on the specimen archive: specimens, report, serve."""

from __future__ import annotations

from .common import ARCHIVE_HELP, command, group, open_archive, pages_dir


def _list(args) -> int:
    arch = open_archive(args)
    specs = arch.search(args.query, model=args.model, task=args.task, tag=args.tag)
    for s in specs:
        tags = f" [{', '.join(s.tags)}]" if s.tags else ""
        print(f"{s.uid[:8]}  v{s.version:<3} {s.name}  ({s.model_name or '-'}; {s.task or '-'}){tags}")
    print(f"{len(specs)} specimen(s) in {arch!r}")
    return 0


def _show(args) -> int:
    s = open_archive(args).get(args.key)
    print(f"{s.name}  uid {s.uid}  v{s.version}\n  model {s.model_name} ({s.model_fingerprint})"
          f"\n  task {s.task or '-'}  dataset {s.dataset or '-'}  tags {', '.join(s.tags) or '-'}")
    for f in s.findings():
        print(f"\n[{f.uid[:8]}] {f.title} ({f.kind})\n  " + f.summary.replace("\n", "\n  "))
        if f.notes:
            print(f"  notes: {f.notes}")
    print("\nhistory: " + "; ".join(f"v{e.version} {e.action}" for e in s.history()))
    return 0


def _export(args) -> int:
    arch = open_archive(args)
    s = arch.get(args.key)
    path = arch.export(s.uid, args.file or f"{s.uid[:8]}.mscope")
    print(f"exported {s.name!r} to {path}")
    return 0


def _import(args) -> int:
    s = open_archive(args).import_file(args.file, replace=args.replace)
    print(f"imported {s.name!r} ({s.uid[:8]}, {len(s.findings())} findings)")
    return 0


def _rm(args) -> int:
    arch = open_archive(args)
    s = arch.get(args.key)
    arch.remove(s.uid)
    print(f"removed {s.name!r} ({s.uid[:8]})")
    return 0


def _gc(args) -> int:
    arch = open_archive(args)
    removed = arch.collect_garbage(grace=args.grace)
    print(f"removed {len(removed)} unreferenced file(s) older than {args.grace:g} s from {arch.blobs.root}")
    return 0


def _report(args) -> int:
    from ..report import write_report

    spec = open_archive(args).get(args.key)
    path, seconds = write_report(spec, args.out or pages_dir() / f"{spec.uid[:8]}.html")
    print(f"wrote {path} ({seconds:.2f}s)")
    return 0


def _serve(args) -> int:
    from ..web import serve

    serve(open_archive(args), host=args.host, port=args.port, writable=args.writable, hosts=args.allow_host)
    return 0


def _archive(p) -> None:
    p.add_argument("--archive", metavar="WHERE", help=ARCHIVE_HELP)


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    actions = group(sub, "specimens", "the specimen archive: list, show, export, import, rm, gc",
                    ["mechscope specimens list --tag circuit", "mechscope specimens show 41b312b8",
                     "mechscope specimens export 41b312b8 demo.mscope", "mechscope specimens import demo.mscope"])
    p = command(actions, "list", "the specimens, newest first; text search and filters",
                ["mechscope specimens list", "mechscope specimens list induction --tag circuit"], parent="specimens")
    p.add_argument("query", nargs="?", help="text to search names, notes and summaries for")
    p.add_argument("--model", help="model name or fingerprint")
    p.add_argument("--task", help="task")
    p.add_argument("--tag", help="tag")
    _archive(p)
    p.set_defaults(fn=_list)

    p = command(actions, "show", "a specimen's findings, summaries, notes and history",
                "mechscope specimens show 41b312b8", parent="specimens")
    p.add_argument("key", help="specimen uid (or its first characters) or name")
    _archive(p)
    p.set_defaults(fn=_show)

    p = command(actions, "export", "a specimen as one .mscope file (findings, figures, tensors) to share",
                "mechscope specimens export 41b312b8 demo.mscope", parent="specimens")
    p.add_argument("key", help="specimen uid or name")
    p.add_argument("file", nargs="?", help="the file to write (default <uid>.mscope)")
    _archive(p)
    p.set_defaults(fn=_export)

    p = command(actions, "import", "a .mscope file into the archive (validated and size-limited; all or nothing)",
                "mechscope specimens import demo.mscope --replace", parent="specimens")
    p.add_argument("file", help="a .mscope file written by `specimens export`")
    p.add_argument("--replace", action="store_true", help="overwrite a specimen with the same uid")
    _archive(p)
    p.set_defaults(fn=_import)

    p = command(actions, "rm", "remove a specimen (its files go at the next gc)", "mechscope specimens rm 41b312b8",
                parent="specimens")
    p.add_argument("key", help="specimen uid or name")
    _archive(p)
    p.set_defaults(fn=_rm)

    p = command(actions, "gc", "remove files no finding references", "mechscope specimens gc --grace 0",
                parent="specimens")
    p.add_argument("--grace", type=float, default=3600.0,
                   help="keep unreferenced files younger than this many seconds (a running writer's; default 3600)")
    _archive(p)
    p.set_defaults(fn=_gc)

    p = command(sub, "report", "write a specimen's self-contained HTML report",
                "mechscope report 41b312b8 -o demo.html")
    p.add_argument("key", help="specimen uid or name")
    p.add_argument("-o", "--out", metavar="PAGE", help="the page to write (default: <uid>.html in the pages folder)")
    _archive(p)
    p.set_defaults(fn=_report)

    p = command(sub, "serve", "browse the archive in a web browser",
                ["mechscope serve", "mechscope serve --archive postgresql+psycopg://me@db/specimens --writable"])
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--writable", action="store_true", help="allow changes (tags, notes, deletion) through the API")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a name clients reach this server by, besides loopback and --host (repeatable); "
                        "requests naming any other Host are refused")
    _archive(p)
    p.set_defaults(fn=_serve)
