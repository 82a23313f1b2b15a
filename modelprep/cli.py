"""``modelprep``: a thin command line over the library functions.

Each subcommand parses flags into the library's option objects and calls one
function; errors from `modelprep.errors` end the process with their exit code
and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelmeta import NORMALIZATIONS, RESIZE_MODES, MetadataError
from modelprep import options as text_forms
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


_WRAP_EPILOG = """\
input layers (--input NAME=KIND[:OPTIONS], one per input):
  image_bytes              encoded JPEG/PNG/GIF/BMP bytes, decoded, resized and normalised
                           in the graph; the wrapped input is image_bytes (string [None])
  image_base64             base64 text of an image, decoded in the graph (standard or
                           URL-safe, padded or not, whitespace, data: prefix); image_b64
  quantized_pixels[:Q]     uint8/int8 pixels [None, H, W, C] under the input's own name;
                           the graph computes scale*(q-zero_point), the model's input
                           value. Q: uint8 (default) or int8 alone (the range the
                           normalisation gives 0..255 pixels), DTYPE:LOW:HIGH, or
                           DTYPE:scale=S:zero_point=Z
  tensor[:SHAPE]           passed through unchanged (image metadata, anchors, numbers);
                           SHAPE like -1,4 when the model leaves it open
  The client's image goes to the input given an image kind by --input or named by
  --image-input; failing both, to the only input not named. Every other input passes
  through as a tensor. A model may have no image input at all (all inputs tensor).

output layers (outputs not named are returned unchanged):
  --quantize-output mask=uint8:0:1     q = clip(round(x/scale)+zero_point); the scale
                                       and zero point go into the metadata
  --png-output image=-1:1              one PNG per batch item, output image_bytes
                                       (TF Serving base64-wraps *_bytes outputs)

examples:
  modelprep wrap saved_model/ served/ --normalize symmetric --labels labels.txt
  modelprep wrap mrcnn/ served/ --input input_image=quantized_pixels:int8 \\
      --normalize meanstd --mean 123.7,116.8,103.9 --std 1,1,1 \\
      --quantize-output mrcnn_mask=uint8:0:1
  modelprep wrap frozen.pb served/ --graph-inputs images=input:0 \\
      --graph-outputs probs=softmax:0
  modelprep wrap half_plus_two/ served/ --input x=tensor --quantize-output y=int8:0:10 \\
      --keep-signatures
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelprep", description="Turn a trained TensorFlow model into one that serves "
        "encoded images, and check it still gives the original answers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="show a SavedModel's signatures, inputs and outputs")
    p.add_argument("path", help="a SavedModel directory, or a TF Serving model base")
    p.set_defaults(run=_inspect)

    p = sub.add_parser(
        "wrap", help="add input and output layers around a model (encoded images in, "
        "quantized or PNG outputs out) and write its metadata",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_WRAP_EPILOG)
    p.add_argument("src", help="the source model: a SavedModel directory (TF2, or TF1 from "
                   "SavedModelBuilder), a TF Serving model base, a Keras .keras/.h5 file, or "
                   "a frozen GraphDef .pb")
    p.add_argument("out", help="where to write the wrapped SavedModel")
    p.add_argument("--name", help="model name in the metadata, the name the function asks a "
                   "model server for (default: OUT's folder name; export --name replaces it)")
    p.add_argument("--signature", default="serving_default", help="signature to wrap; the "
                   "result is always serving_default (default: serving_default)")
    p.add_argument("--keep-signatures", nargs="?", const=True, default=False, metavar="KEYS",
                   help="keep the source's other signatures unchanged beside the wrapped one: "
                   "all of them, or the comma-separated KEYS (default: none)")
    p.add_argument("--graph-inputs", metavar="[ALIAS=]OP:N,...", help="a frozen GraphDef's "
                   "input tensors, e.g. images=input:0 (alias default: the op's name); "
                   "required for a .pb, unused otherwise (default: none)")
    p.add_argument("--graph-outputs", metavar="[ALIAS=]OP:N,...",
                   help="a frozen GraphDef's output tensors, e.g. probs=softmax:0; required "
                   "for a .pb, unused otherwise (default: none)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=KIND[:OPTIONS]",
                   help="the layer of one input (repeatable): image_bytes, image_base64, "
                   "quantized_pixels[:DTYPE[:LOW:HIGH|:scale=S:zero_point=Z]], "
                   "tensor[:SHAPE]; see below (default: the image input gets --input-kind, "
                   "the others tensor)")
    p.add_argument("--image-input", metavar="NAME", help="which input takes the image "
                   "(default: the one given an image kind by --input, else the only input "
                   "not named)")
    p.add_argument("--input-kind", choices=["image_bytes", "image_base64"],
                   default="image_bytes", help="encoded bytes (TF Serving {\"b64\"} clients "
                   "and this project's function) or base64 text decoded in the graph "
                   "(default: image_bytes)")
    p.add_argument("--size", type=_size, metavar="HxW",
                   help="image size, needed when the model's input does not fix it (default: "
                   "the input's own height and width)")
    p.add_argument("--channels", type=int, choices=[1, 3], help="1 (gray) or 3 (RGB), needed "
                   "when the model's input does not fix it (default: the input's own last "
                   "dimension; a flat input: 1 if it is a square, else 3)")
    p.add_argument("--normalize", choices=NORMALIZATIONS,
                   help="how the model was trained to see pixels p in 0..255: unit: p/255, "
                   "symmetric: p/127.5-1, meanstd: (p-mean)/std, raw: p (default: unit for a "
                   "float input, raw for an integer one; wrap warns when the source hints at "
                   "another, and verify --reference-preprocess proves it)")
    p.add_argument("--mean", type=_floats, help="per-channel mean in pixel units, e.g. "
                   "123.675,116.28,103.53; implies --normalize meanstd (default: none)")
    p.add_argument("--std", type=_floats, help="per-channel std in pixel units, e.g. "
                   "58.395,57.12,57.375, with --mean (default: none)")
    p.add_argument("--invert", action="store_true",
                   help="use 255-p (black ink on white for a white-on-black model; "
                   "default: off)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="stretch",
                   help="how an image of another size reaches the model's: stretch (ignore "
                   "the aspect ratio, as most classifiers were trained), pad (fit it whole, "
                   "fill the rest with black) or crop (fill the frame, cut the overflow, "
                   "centred); exact sizes are never resized (default: stretch)")
    p.add_argument("--labels", metavar="FILE|A,B,...", help="a text file with one label per "
                   "line, or a comma-separated list (default: none; answers give indices)")
    p.add_argument("--output", action="append", default=[], metavar="NAME=ROLE",
                   help="the role of an output: probabilities, logits, boxes, scores, "
                   "classes, detections, masks, image, tensor (repeatable; default: "
                   "probabilities/logits for a 2-D float output of several classes, "
                   "image for a PNG output, tensor otherwise)")
    p.add_argument("--quantize-output", action="append", default=[],
                   metavar="NAME=DTYPE:LOW:HIGH", help="quantize an output to uint8 or int8 "
                   "over [LOW, HIGH], clipping what lies outside (repeatable); or "
                   "NAME=DTYPE:scale=S:zero_point=Z (default: outputs stay float)")
    p.add_argument("--png-output", action="append", default=[], metavar="NAME[=LOW:HIGH]",
                   help="PNG-encode an image output, one PNG per batch item, as NAME_bytes "
                   "(repeatable); a non-uint8 output needs the range mapped onto 0..255 "
                   "(default: none)")
    p.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=None,
                   help="write the weights into the graph as constants: faster on CPU "
                   "(MobileNetV2 224: 10.2 against 14.4 ms a call), but 10-16x their size more "
                   "memory once loaded (default: only weights of up to 16 MiB, from a "
                   "source that holds nothing but variables, with no kept signatures)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists "
                   "(default: refuse)")
    p.set_defaults(run=_wrap)

    p = sub.add_parser("demo", help="build the demo digits model and its wrapped form (cached)")
    p.add_argument("--dir", default=None, help="where to build (default: build/models/digits)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--segmentation", action="store_true", help="build the instance-"
                   "segmentation demo instead (Mask R-CNN's contract on generated shapes; "
                   "default dir build/models/segmentation)")
    p.set_defaults(run=_demo)
    _add_verify_export_prepare(sub)
    _add_litert(sub)
    return parser


def _add_verify_export_prepare(sub) -> None:
    """Flags of verify and export are their option classes' fields, by the same names;
    unset flags are left out, so the classes' defaults apply (one place for defaults)."""
    from modelprep.export import DEFAULT_WARMUP, MAX_WARMUP
    from modelprep.samples import SAMPLE_KINDS
    from modelprep.verify import DEFAULT_BATCH_SIZE, DEFAULT_COUNT, DEFAULT_TOLERANCE

    def samples_flags(p, purpose: str) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--images", type=Path, metavar="DIR",
                           help=f"a folder of PNG/JPEG/GIF/BMP images for {purpose} "
                           "(default: generated ones)")
        group.add_argument("--samples", choices=SAMPLE_KINDS, help="generated images: the "
                           "demo's held-out digits, synthetic ones, or auto (digits for a "
                           "28x28 gray input, else synthetic; the default)")
        p.add_argument("--seed", type=int, help="seed of the generated samples (default 0)")

    p = sub.add_parser("verify", argument_default=argparse.SUPPRESS,
                       help="check that a prepared model gives the original's answers",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_VERIFY_EPILOG)
    p.add_argument("original", nargs="?", default=None, help="the source model that was "
                   "wrapped (may be left out with --reference-outputs alone)")
    p.add_argument("prepared", help="the prepared SavedModel (with its metadata)")
    p.add_argument("--reference-preprocess", type=_reference_preprocess,
                   metavar="FUNCTION|SCALE,OFFSET", help="feed the original the preprocessing "
                   "it was trained with instead of the prepared model's own, and compare the "
                   "two normalisations: a callable's dotted name (called on float32 [n, h, w, "
                   "c] pixels in 0..255), or SCALE,OFFSET for p*SCALE+OFFSET (default: the "
                   "prepared model's own, which cannot catch a wrong --normalize)")
    p.add_argument("--reference-outputs", type=Path, metavar="X.npz", help="compare the "
                   "prepared model's outputs with these arrays (one per output, one row per "
                   "sample image in file-name order; optional sample_names to check the order)")
    samples_flags(p, "the comparison")
    p.add_argument("--count", type=_positive_int, metavar="N",
                   help=f"at most N samples (default {DEFAULT_COUNT})")
    p.add_argument("--tolerance", type=_non_negative_float, help="max absolute error on "
                   f"every output, on top of a quantization bound (default {DEFAULT_TOLERANCE})")
    p.add_argument("--output-tolerance", type=_name_tolerance, action=_StoreItem,
                   metavar="NAME=TOL", help="the tolerance of one output (repeatable)")
    p.add_argument("--batch-size", type=_positive_int, metavar="N",
                   help=f"samples per model call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--graph-inputs", type=_graph_tensors, metavar="[ALIAS=]OP:N,...",
                   help="a frozen GraphDef original's input tensors, as given to wrap")
    p.add_argument("--graph-outputs", type=_graph_tensors, metavar="[ALIAS=]OP:N,...",
                   help="a frozen GraphDef original's output tensors, as given to wrap")
    p.set_defaults(run=_verify)

    p = sub.add_parser("export", argument_default=argparse.SUPPRESS,
                       help="copy a prepared model into TF Serving's BASE/NAME/VERSION layout "
                       "with warmup requests, and list it in BASE/models.config")
    p.add_argument("prepared", help="the prepared SavedModel (with its metadata)")
    p.add_argument("base", help="the model server's base folder (holds models.config)")
    p.add_argument("--name", help="model name under BASE, in models.config and written into "
                   "the exported metadata, which the function asks the server for (default: "
                   "the name in the metadata)")
    p.add_argument("--version", type=_non_negative_int,
                   help="version number (default: the highest under BASE/NAME plus one)")
    p.add_argument("--warmup", type=_non_negative_int, metavar="N", help="warmup requests to "
                   f"write, 0..{MAX_WARMUP} (default {DEFAULT_WARMUP})")
    samples_flags(p, "the warmup requests")
    p.add_argument("--serving-base", metavar="PATH", help="BASE as the server sees it, "
                   "e.g. /models in the tensorflow/serving container (default: BASE's "
                   "absolute path)")
    p.set_defaults(run=_export)

    p = sub.add_parser("prepare", help="run a recipe file: wrap, verify and export as it says")
    p.add_argument("recipe", help="a TOML recipe (see examples/recipes/)")
    p.set_defaults(run=_prepare)


_VERIFY_EPILOG = """\
what the original is fed:
  by default the pixels the prepared model's own metadata says it computes: that proves
  the wrapping, but a model wrapped with the wrong --normalize passes too. Name the
  preprocessing the model was trained with to catch that:
    modelprep verify m.keras served/ --images photos/ \\
        --reference-preprocess keras.applications.mobilenet_v2.preprocess_input
    modelprep verify saved/ served/ --reference-preprocess 0.0078431373,-1
  or compare with answers computed elsewhere (one row per image in photos/, sorted):
    modelprep verify served/ --images photos/ --reference-outputs answers.npz
"""


def _add_litert(sub) -> None:
    from modelmeta import LITERT_FLAVOURS
    from modelprep.litert import DEFAULT_CALIBRATION_COUNT, DEFAULT_VERIFY_COUNT
    from modelprep.samples import SAMPLE_KINDS

    p = sub.add_parser("litert", help="export a prepared model's LiteRT flavours (float, int8) "
                       "for the litert backend, a function without TensorFlow")
    p.add_argument("prepared", type=Path, help="the prepared SavedModel (with its metadata)")
    p.add_argument("--original", type=Path, help="the source SavedModel (default: the one the "
                   "metadata records)")
    p.add_argument("--flavour", action="append", choices=LITERT_FLAVOURS, dest="flavours",
                   help="float or int8 (repeatable; default: both)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where to write (default: PREPARED/litert)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--images", type=Path, metavar="DIR", help="a folder of representative "
                       "PNG/JPEG/GIF/BMP images for int8 calibration, 100 or more photos like "
                       "the ones the model will see (default: generated, with a warning)")
    group.add_argument("--samples", choices=SAMPLE_KINDS, default="auto", help="generated "
                       "calibration images: digits (training split), synthetic, or auto "
                       "(digits for a 28x28 gray input, else synthetic; the default)")
    p.add_argument("--count", type=_positive_int, default=DEFAULT_CALIBRATION_COUNT,
                   metavar="N", help="calibration images (default "
                   f"{DEFAULT_CALIBRATION_COUNT})")
    p.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                   help="compare each flavour with the original model on held-out images and "
                   "record the verdict in its metadata; a flavour that misses its tolerance "
                   "is marked verified: false (the litert backend then refuses it unless "
                   "LITERT_ALLOW_UNVERIFIED=true) and the command exits 4 (default: on; "
                   "--no-verify marks every flavour unverified)")
    p.add_argument("--verify-images", type=Path, metavar="DIR",
                   help="images for the check (default: generated, held-out digits for a "
                   "28x28 gray input)")
    p.add_argument("--verify-count", type=_positive_int, default=DEFAULT_VERIFY_COUNT,
                   metavar="N", help=f"images for the check (default {DEFAULT_VERIFY_COUNT})")
    p.set_defaults(run=_litert)


def _litert(args) -> int:
    from modelmeta import LITERT_FLAVOURS
    from modelprep.litert import LiteRTOptions, export_litert

    options = LiteRTOptions(flavours=tuple(args.flavours or LITERT_FLAVOURS),
                            original=args.original, out=args.out, images=args.images,
                            samples=args.samples, count=args.count, verify=args.verify,
                            verify_images=args.verify_images, verify_count=args.verify_count)
    result = export_litert(args.prepared, options, progress=_progress, warn=_warn)
    print(result.format())
    result.raise_if_failed()
    return 0


def _inspect(args) -> int:
    from modelprep.inspect import describe, format_info

    print(format_info(describe(args.path)))
    return 0


def _wrap(args) -> int:
    from modelprep.options import (
        input_layers,
        keep_signatures,
        normalization_from_flags,
        output_layers,
        output_roles,
        parse_graph_tensors,
        parse_labels,
    )
    from modelprep.wrap import WrapOptions, wrap, wrap_summary

    options = WrapOptions(
        name=args.name,
        signature=args.signature,
        keep_signatures=keep_signatures(args.keep_signatures),
        graph_inputs=parse_graph_tensors(args.graph_inputs, "--graph-inputs")
        if args.graph_inputs else None,
        graph_outputs=parse_graph_tensors(args.graph_outputs, "--graph-outputs")
        if args.graph_outputs else None,
        image_input=args.image_input,
        input_kind=args.input_kind,
        inputs=input_layers(args.input),
        height=args.size[0] if args.size else None,
        width=args.size[1] if args.size else None,
        channels=args.channels,
        normalization=normalization_from_flags(args.normalize, args.mean, args.std, args.invert),
        resize=args.resize,
        labels=parse_labels(args.labels) if args.labels else None,
        output_roles=output_roles(args.output),
        outputs=output_layers(args.quantize_output, args.png_output),
        freeze=args.freeze,
        overwrite=args.overwrite,
    )
    metadata = wrap(args.src, args.out, options, progress=_progress, warn=_warn)
    print(f"wrote {args.out}: {wrap_summary(metadata)}")
    return 0


def _demo(args) -> int:
    if args.segmentation:
        from modelprep.segmentation import build_segmentation_demo

        seg = build_segmentation_demo(Path(args.dir) if args.dir else None, force=args.force,
                                      progress=_progress)
        print(f"segmentation demo ready: {seg.served}  "
              f"({'cached' if seg.cached else f'built in {seg.seconds:.0f} s'})")
        return 0
    from modelprep.demo import build_demo

    result = build_demo(Path(args.dir) if args.dir else None, force=args.force,
                        progress=_progress)
    print(f"demo model ready: {result.served}  (held-out accuracy {result.accuracy:.4f}, "
          f"{'cached' if result.cached else f'built in {result.seconds:.0f} s'})")
    return 0


def _verify(args) -> int:
    from modelprep.verify import VerifyOptions, verify

    report = verify(args.original, args.prepared, _options(VerifyOptions, args),
                    progress=_progress)
    print(report.format())
    report.raise_if_failed()
    return 0


def _export(args) -> int:
    from modelprep.export import ExportOptions, export, format_export

    result = export(args.prepared, args.base, _options(ExportOptions, args), progress=_progress)
    print(format_export(result))
    return 0


def _prepare(args) -> int:
    from modelprep.recipe import load_recipe, run_recipe

    run_recipe(load_recipe(args.recipe), progress=_progress, report=print, warn=_warn)
    return 0


def _options(cls, args):
    """An option object from the flags given; the class's defaults for the rest."""
    from dataclasses import fields

    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


class _StoreItem(argparse.Action):
    """``--flag NAME=VALUE``, repeatable, into a dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        key, value = values
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest, None) or {}), key: value})


def _text_form(parse: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """An argparse ``type`` from a `modelprep.options` parser (the one text form a recipe
    string shares), its errors as argparse's usage errors."""
    def convert(value: str) -> Any:
        try:
            return parse(value)
        except ModelprepError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


_name_tolerance = _text_form(text_forms.parse_name_number, "NAME=TOL")
_graph_tensors = _text_form(text_forms.parse_graph_tensors, "tensors")
_non_negative_float = _text_form(text_forms.parse_non_negative_float, "number")
_non_negative_int = _text_form(text_forms.parse_non_negative_int, "integer")
_positive_int = _text_form(text_forms.parse_positive_int, "integer")
_size = _text_form(text_forms.parse_size, "size")
_floats = _text_form(text_forms.parse_floats, "numbers")


def _reference_preprocess(value: str) -> Any:
    from modelprep.reference import ReferencePreprocess

    return _text_form(ReferencePreprocess.parse, "reference")(value)


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"modelprep: warning: {message}", file=sys.stderr, flush=True)


def _quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter hides our own messages."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


if __name__ == "__main__":
    sys.exit(main())
