"""`mechscope vision gradcam|visualize|specimen`: image models — Grad-CAM, feature visualization, the
EfficientNet specimen."""

from __future__ import annotations

from .common import ARCHIVE_HELP, command, emit, group, open_archive, outputs, pages_dir, quiet


def _gradcam(args) -> int:
    from ..vision import grad_cam, load_image_model, prepare, read_image

    model = load_image_model(args.model, progress=not args.quiet)
    image = prepare(read_image(args.image), model.size, crop=args.crop)
    for name, p in model.run(image).top(5)[0]:
        print(f"  {p:6.3f}  {name}")
    target = args.target if args.target is None or not args.target.isdigit() else int(args.target)
    cam = grad_cam(model, image, target, site=args.site)
    print(cam.summary())
    emit(args, [(cam, f"at {args.site}")], f"Grad-CAM: {cam.target.split(',')[0]} in {args.image}", model=model,
         task="image classification", tags=["vision"])
    return 0


def _visualize(args) -> int:
    from ..vision import load_image_model, visualize

    model = load_image_model(args.model, progress=not args.quiet)
    natural = None
    if args.model == "fashion-cnn":
        from ..vision.fashion import fashion_mnist

        natural = fashion_mnist("test", 1000)[0]
    fv = visualize(model, args.channel, steps=args.steps, seed=args.seed, natural=natural, progress=not args.quiet)
    print(fv.summary())
    emit(args, [(fv, f"{args.steps} steps")], f"feature visualization: {args.channel}", model=model,
         task="feature visualization", tags=["vision"])
    return 0


def _specimen(args) -> int:
    from ..report import write_report
    from ..specimens.vision import vision_specimen
    from ..vision import load_image_model

    model = load_image_model("efficientnet-lite0", progress=not args.quiet)
    spec = vision_specimen(model, open_archive(args), steps=args.steps, progress=not args.quiet)
    for f in spec.findings():
        print(f.result().summary())
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    print(f"wrote {write_report(spec, args.out or pages_dir() / 'vision-specimen.html')[0]}")
    return 0


def add(sub) -> None:
    """Declare `vision` and its subcommands on the subparsers ``sub``."""
    actions = group(sub, "vision", "image models: Grad-CAM, feature visualization, the EfficientNet specimen",
                    ["mechscope vision gradcam chelsea --class tabby", "mechscope vision visualize _blocks.10:17",
                     "mechscope vision specimen"])

    p = command(actions, "gradcam", "where in an image a class's evidence lies (Grad-CAM on EfficientNet-Lite0)",
                ["mechscope vision gradcam chelsea --class tabby", "mechscope vision gradcam photo.jpg --crop --site _blocks.15"],
                parent="vision")
    p.add_argument("image", help="an image file, or a photo bundled with scikit-image (chelsea, coffee, astronaut, ...)")
    p.add_argument("--class", dest="target", help="class name (e.g. tabby) or index; default: the top class")
    p.add_argument("--site", default="_bn1", help="feature maps for Grad-CAM (a module name)")
    p.add_argument("--crop", action="store_true", help="centre-crop a square instead of resizing the whole image")
    quiet(p)
    outputs(p, "gradcam")
    p.set_defaults(fn=_gradcam, model="efficientnet-lite0")

    p = command(actions, "visualize", "the input a channel or class responds to most (feature visualization)",
                ["mechscope vision visualize _blocks.10:17 --steps 256", "mechscope vision visualize class:tabby",
                 "mechscope vision visualize conv2:5 --model fashion-cnn"], parent="vision")
    p.add_argument("channel", help="MODULE:CHANNEL (e.g. _blocks.10:17) or class:NAME")
    p.add_argument("--model", default="efficientnet-lite0", choices=["efficientnet-lite0", "fashion-cnn"],
                   help="fashion-cnn: the embedded 28-px Fashion-MNIST network")
    p.add_argument("--steps", type=int, default=256, help="optimisation steps")
    p.add_argument("--seed", type=int, default=0)
    quiet(p)
    outputs(p, "visualize")
    p.set_defaults(fn=_visualize)

    p = command(actions, "specimen", "record the EfficientNet specimen (~1 min): predictions, Grad-CAM, "
                                     "feature visualizations, with its report",
                "mechscope vision specimen --archive ./my-archive", parent="vision")
    p.add_argument("--steps", type=int, default=256, help="feature-visualization optimisation steps")
    p.add_argument("--archive", metavar="WHERE", help=ARCHIVE_HELP + "; the specimen is always stored")
    p.add_argument("-o", "--out", metavar="PAGE",
                   help="the report page to write (default: vision-specimen.html in the pages folder)")
    quiet(p)
    p.set_defaults(fn=_specimen)
