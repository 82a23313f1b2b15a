"""``modelprep``: a thin command line over the library functions.

Each subcommand parses flags into the library's option objects and calls one
function; errors from `modelprep.errors` end the process with their exit code
and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from modelmeta import NORMALIZATIONS, RESIZE_MODES, MetadataError, Normalization
from modelprep.errors import ModelprepError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _quiet_tensorflow()
    try:
        return args.run(args) or 0
    except (ModelprepError, MetadataError) as exc:
        print(f"modelprep: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelprep", description="Turn a trained TensorFlow model into one that serves "
        "encoded images, and check it still gives the original answers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="show a SavedModel's signatures, inputs and outputs")
    p.add_argument("path", help="a SavedModel directory, or a TF Serving model base")
    p.set_defaults(run=_inspect)

    p = sub.add_parser("wrap", help="add an encoded-image input layer in front of a model")
    p.add_argument("src", help="the source SavedModel directory")
    p.add_argument("out", help="where to write the wrapped SavedModel")
    p.add_argument("--name", help="model name in the metadata (default: OUT's name)")
    p.add_argument("--signature", default="serving_default", help="signature to wrap")
    p.add_argument("--image-input", help="which input takes the image (default: the only one)")
    p.add_argument("--input-kind", choices=["image_bytes", "image_base64"],
                   default="image_bytes", help="encoded bytes (TF Serving {\"b64\"} clients "
                   "and this project's function) or base64 text decoded in the graph")
    p.add_argument("--size", type=_size, metavar="HxW",
                   help="image size, needed when the model's input does not fix it")
    p.add_argument("--channels", type=int, choices=[1, 3])
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="unit",
                   help="unit: p/255, symmetric: p/127.5-1, meanstd: (p-mean)/std, raw: p")
    p.add_argument("--mean", type=_floats, help="per-channel mean in pixel units, e.g. "
                   "123.675,116.28,103.53 (with --normalize meanstd)")
    p.add_argument("--std", type=_floats, help="per-channel std in pixel units")
    p.add_argument("--invert", action="store_true",
                   help="use 255-p (black ink on white for a white-on-black model)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="stretch")
    p.add_argument("--labels", help="a text file with one label per line, or a "
                   "comma-separated list")
    p.add_argument("--output", action="append", default=[], metavar="NAME=ROLE",
                   help="the role of an output (probabilities, logits, masks, ...)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.set_defaults(run=_wrap)

    p = sub.add_parser("demo", help="build the demo digits model and its wrapped form (cached)")
    p.add_argument("--dir", default=None, help="where to build (default: build/models/digits)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(run=_demo)
    return parser


def _inspect(args) -> int:
    from modelprep.inspect import describe, format_info

    print(format_info(describe(args.path)))
    return 0


def _wrap(args) -> int:
    from modelprep.wrap import WrapOptions, wrap

    roles = {}
    for item in args.output:
        name, sep, role = item.partition("=")
        if not sep:
            raise ModelprepError(f"--output takes NAME=ROLE, got {item!r}")
        roles[name] = role
    options = WrapOptions(
        name=args.name,
        signature=args.signature,
        image_input=args.image_input,
        input_kind=args.input_kind,
        height=args.size[0] if args.size else None,
        width=args.size[1] if args.size else None,
        channels=args.channels,
        normalization=Normalization(mode=args.normalize, mean=args.mean, std=args.std,
                                    invert=args.invert),
        resize=args.resize,
        labels=_labels(args.labels),
        output_roles=roles,
        overwrite=args.overwrite,
    )
    metadata = wrap(args.src, args.out, options, progress=_progress)
    image = metadata.image_input.image
    print(f"wrote {args.out}: input {metadata.image_input.name!r} "
          f"({image.height}x{image.width}x{image.channels}, {image.normalization.mode}), "
          f"outputs {', '.join(f'{o.name} ({o.role})' for o in metadata.outputs)}")
    return 0


def _demo(args) -> int:
    from modelprep.demo import build_demo

    result = build_demo(Path(args.dir) if args.dir else None, force=args.force,
                        progress=_progress)
    print(f"demo model ready: {result.served}  (held-out accuracy {result.accuracy:.4f}, "
          f"{'cached' if result.cached else f'built in {result.seconds:.0f} s'})")
    return 0


def _labels(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    path = Path(value)
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return tuple(line for line in lines if line)
    return tuple(part.strip() for part in value.split(","))


def _size(value: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 224x224, got {value!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {value!r}")
    return h, w


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {value!r}") from None


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter hides our own messages."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


if __name__ == "__main__":
    sys.exit(main())
