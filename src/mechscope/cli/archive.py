"""Commands on the specimen archive: specimens, report, serve."""

from __future__ import annotations

from .common import ARCHIVE_HELP, open_archive


def _specimens(args) -> int:
    arch = open_archive(args)
    if args.action == "list":
        specs = arch.search(args.query, model=args.model, task=args.task, tag=args.tag)
        for s in specs:
            tags = f" [{', '.join(s.tags)}]" if s.tags else ""
            print(f"{s.uid[:8]}  v{s.version:<3} {s.name}  ({s.model_name or '-'}; {s.task or '-'}){tags}")
        print(f"{len(specs)} specimen(s) in {arch!r}")
    elif args.action == "show":
        s = arch.get(args.key)
        print(f"{s.name}  uid {s.uid}  v{s.version}\n  model {s.model_name} ({s.model_fingerprint})"
              f"\n  task {s.task or '-'}  dataset {s.dataset or '-'}  tags {', '.join(s.tags) or '-'}")
        for f in s.findings():
            print(f"\n[{f.uid[:8]}] {f.title} ({f.kind})\n  " + f.summary.replace("\n", "\n  "))
            if f.notes:
                print(f"  notes: {f.notes}")
        print("\nhistory: " + "; ".join(f"v{e.version} {e.action}" for e in s.history()))
    elif args.action == "export":
        s = arch.get(args.key)
        path = arch.export(s.uid, args.path or f"{s.uid[:8]}.mscope")
        print(f"exported {s.name!r} to {path}")
    elif args.action == "import":
        s = arch.import_file(args.key, replace=args.replace)
        print(f"imported {s.name!r} ({s.uid[:8]}, {len(s.findings())} findings)")
    elif args.action == "rm":
        s = arch.get(args.key)
        arch.remove(s.uid)
        print(f"removed {s.name!r} ({s.uid[:8]})")
    elif args.action == "gc":
        removed = arch.collect_garbage(grace=args.grace)
        print(f"removed {len(removed)} unreferenced file(s) older than {args.grace:g} s from {arch.blobs.root}")
    return 0


def _report(args) -> int:
    from ..report import write_report

    spec = open_archive(args).get(args.key)
    path, seconds = write_report(spec, args.output or f"{spec.uid[:8]}.html")
    print(f"wrote {path} ({seconds:.2f}s)")
    return 0


def _serve(args) -> int:
    from ..web import serve

    serve(open_archive(args), host=args.host, port=args.port, writable=args.writable, hosts=args.allow_host)
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = sub.add_parser("specimens", help="the specimen archive: list, show, export, import, rm, gc")
    p.add_argument("action", choices=["list", "show", "export", "import", "rm", "gc"])
    p.add_argument("key", nargs="?", help="specimen uid/name (show, export, rm) or file (import)")
    p.add_argument("path", nargs="?", help="export: output file (default <uid>.mscope)")
    p.add_argument("--archive", help=ARCHIVE_HELP)
    p.add_argument("--query", "-q", help="list: text search")
    p.add_argument("--model", help="list: model name or fingerprint")
    p.add_argument("--task", help="list: task")
    p.add_argument("--tag", help="list: tag")
    p.add_argument("--replace", action="store_true", help="import: overwrite a specimen with the same uid")
    p.add_argument("--grace", type=float, default=3600.0,
                   help="gc: keep unreferenced files younger than this many seconds (a running writer's; default 3600)")
    p.set_defaults(fn=_specimens)

    p = sub.add_parser("report", help="write a specimen's self-contained HTML report")
    p.add_argument("key", help="specimen uid or name")
    p.add_argument("-o", "--output", help="output file (default <uid>.html)")
    p.add_argument("--archive", help=ARCHIVE_HELP)
    p.set_defaults(fn=_report)

    p = sub.add_parser("serve", help="browse the archive in a web browser")
    p.add_argument("--archive", help=ARCHIVE_HELP)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--writable", action="store_true", help="allow changes (tags, notes, deletion) through the API")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a name clients reach this server by, besides loopback and --host (repeatable); "
                        "requests naming any other Host are refused")
    p.set_defaults(fn=_serve)
