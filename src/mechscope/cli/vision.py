"""The `vision` command: Grad-CAM, feature visualization, the EfficientNet specimen."""

from __future__ import annotations

from .common import ARCHIVE_HELP, open_archive, write_page


def _vision(args) -> int:
    from ..vision import grad_cam, load_image_model, prepare, read_image, visualize

    if args.model == "fashion-cnn" and args.action != "visualize":
        raise ValueError("fashion-cnn takes 28-px grey images: `vision visualize --model fashion-cnn --channel conv2:5`; "
                         "gradcam and specimen use EfficientNet on colour photos")
    if args.action == "visualize" and not args.channel:
        raise ValueError("vision visualize needs --channel MODULE:CHANNEL (e.g. _blocks.10:17) or class:NAME")
    model = load_image_model(args.model, progress=not args.quiet)
    if args.action == "visualize":
        natural = None
        if args.model == "fashion-cnn":
            from ..vision.fashion import fashion_mnist

            natural = fashion_mnist("test", 1000)[0]
        fv = visualize(model, args.channel, steps=args.steps, seed=args.seed, natural=natural,
                       progress=not args.quiet)
        print(fv.summary())
        write_page(fv, args.out)
        spec = open_archive(args).record(f"feature visualization: {args.channel}", [(fv, f"{args.steps} steps")],
                                     model=model, task="feature visualization", tags=["vision"])
    elif args.action == "specimen":
        from ..specimens.vision import vision_specimen
        from ..report import write_report

        spec = vision_specimen(model, open_archive(args), steps=args.steps, progress=not args.quiet)
        for f in spec.findings():
            print(f.result().summary())
        print(f"wrote {write_report(spec, args.out)[0]}")
    else:
        if not args.image:
            raise ValueError("vision gradcam needs an IMAGE (a file, or a bundled photo: chelsea, coffee, ...)")
        image = prepare(read_image(args.image), model.size, crop=args.crop)
        for name, p in model.run(image).top(5)[0]:
            print(f"  {p:6.3f}  {name}")
        cam = grad_cam(model, image, args.target if args.target is None or not args.target.isdigit()
                       else int(args.target), site=args.site)
        print(cam.summary())
        write_page(cam, args.out)
        spec = open_archive(args).record(f"Grad-CAM: {cam.target.split(',')[0]} in {args.image}",
                                     [(cam, f"at {args.site}")], model=model, task="image classification",
                                     tags=["vision"])
    print(f"stored specimen {spec.uid[:8]} {spec.name!r}")
    return 0


def add(sub) -> None:
    """Declare this module's commands and their arguments on the subparsers ``sub``."""
    p = sub.add_parser("vision", help="image models: Grad-CAM, feature visualization, the EfficientNet specimen")
    p.add_argument("action", choices=["gradcam", "visualize", "specimen"])
    p.add_argument("image", nargs="?", help="gradcam: an image file, or a photo bundled with scikit-image (chelsea, "
                                            "coffee, astronaut, ...)")
    p.add_argument("--channel", help="visualize: MODULE:CHANNEL (e.g. _blocks.10:17) or class:NAME")
    p.add_argument("--steps", type=int, default=256, help="visualize / specimen: optimisation steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--class", dest="target", help="class name (e.g. tabby) or index; default: the top class")
    p.add_argument("--model", default="efficientnet-lite0", choices=["efficientnet-lite0", "fashion-cnn"])
    p.add_argument("--site", default="_bn1", help="feature maps for Grad-CAM (a module name)")
    p.add_argument("--crop", action="store_true", help="centre-crop a square instead of resizing the whole image")
    p.add_argument("--archive", help=ARCHIVE_HELP)
    p.add_argument("--out", default="mechscope-vision.html", help="HTML page to write")
    p.set_defaults(fn=_vision)
