"""Recipe files: every flag has a key, values convert by type, errors name the key, and
`modelprep prepare` runs wrap, verify and export for real."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from modelmeta import Normalization, Quantization
from modelprep.errors import VerificationFailed
from modelprep.export import ExportOptions
from modelprep.options import InputLayer, OutputLayer, QuantizeSpec
from modelprep.recipe import (
    RecipeError,
    load_recipe,
    options_from_table,
    recipe_keys,
    run_recipe,
)
from modelprep.verify import VerifyOptions
from modelprep.wrap import WrapOptions
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "recipes" / "digits.toml"


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def subcommand_flags(name: str) -> set[str]:
    from modelprep.cli import _parser

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest for a in sub.choices[name]._actions if a.dest != "help"}


@pytest.mark.parametrize("command", ["wrap", "verify", "export"])
def test_every_flag_of_the_command_is_a_recipe_key(command):
    assert subcommand_flags(command) <= set(recipe_keys()[command])


def test_every_option_field_is_a_recipe_key():
    keys = recipe_keys()
    for section, cls in (("wrap", WrapOptions), ("verify", VerifyOptions),
                         ("export", ExportOptions)):
        assert {f.name for f in dataclasses.fields(cls)} <= set(keys[section])


def test_a_full_recipe_converts_like_the_command_line(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n\nbird\n")
    path = write(tmp_path, """
        [wrap]
        src = "models/original"
        out = "models/served"
        size = "224x200"
        normalize = "meanstd"
        mean = [123.675, 116.28, 103.53]
        std = "58.4,57.1,57.4"
        labels = "labels.txt"
        output = { probs = "probabilities" }
        input = { image = "quantized_pixels:int8", meta = "tensor:-1,4" }
        quantize_output = ["mask=uint8:0:1"]
        png_output = { picture = "-1:1", depth = true }
        keep_signatures = "classify,regress"
        graph_inputs = "image=input:0,meta=meta_in:0"
        freeze = false
        overwrite = true

        [verify]
        images = "photos"
        count = 20
        tolerance = 0.001
        output_tolerance = { probs = 0.01 }

        [export]
        base = "/srv/serving"
        version = 4
        serving_base = "models"
        """.replace("\n        ", "\n"))
    recipe = load_recipe(path)
    wrap = recipe.wrap
    assert wrap.src == tmp_path / "models" / "original"
    assert wrap.out == tmp_path / "models" / "served"
    o = wrap.options
    assert (o.height, o.width) == (224, 200)
    assert o.normalization == Normalization("meanstd", mean=(123.675, 116.28, 103.53),
                                            std=(58.4, 57.1, 57.4))
    assert o.labels == ("cat", "dog", "bird")
    assert o.output_roles == {"probs": "probabilities"}
    assert o.inputs == {"image": InputLayer("quantized_pixels", quantize=QuantizeSpec("int8")),
                        "meta": InputLayer("tensor", shape=(-1, 4))}
    assert o.outputs == {"mask": OutputLayer("quantize", quantize=QuantizeSpec("uint8", 0, 1)),
                         "picture": OutputLayer("png", low=-1.0, high=1.0),
                         "depth": OutputLayer("png")}
    assert o.keep_signatures == ("classify", "regress")
    assert o.graph_inputs == {"image": "input:0", "meta": "meta_in:0"}
    assert o.overwrite is True and o.resize == "stretch" and o.freeze is False

    verify = recipe.verify
    assert (verify.original, verify.prepared) == (wrap.src, wrap.out)
    assert verify.options == VerifyOptions(images=tmp_path / "photos", count=20,
                                           tolerance=0.001, output_tolerance={"probs": 0.01},
                                           graph_inputs={"image": "input:0",
                                                         "meta": "meta_in:0"})
    export = recipe.export
    assert (export.prepared, export.base) == (wrap.out, Path("/srv/serving"))
    assert export.options == ExportOptions(version=4, serving_base="models")  # not a local path


def test_option_fields_by_their_own_names(tmp_path):
    path = write(tmp_path, """
        [wrap]
        src = "a"
        out = "b"
        height = 32
        width = 32
        normalization = { mode = "symmetric", invert = true }
        output_roles = { logits = "logits" }
        inputs = { x = { kind = "tensor", shape = [-1, 3] } }
        outputs = { y = "int8:-1:1", z = { kind = "png" } }
        labels = ["a", "b"]
        keep_signatures = true
        """.replace("\n        ", "\n"))
    o = load_recipe(path).wrap.options
    assert (o.height, o.width) == (32, 32)
    assert o.normalization == Normalization("symmetric", invert=True)
    assert o.inputs == {"x": InputLayer("tensor", shape=(-1, 3))}
    assert o.outputs == {"y": OutputLayer("quantize", quantize=QuantizeSpec("int8", -1, 1)),
                         "z": OutputLayer("png")}
    assert o.labels == ("a", "b") and o.keep_signatures is True


@dataclass(frozen=True)
class FutureOptions:
    """Stands for fields not yet in WrapOptions: conversion goes by type hint alone."""

    count: int = 0
    ratio: float = 1.0
    tags: tuple[str, ...] = ()
    pair: tuple[int, str] | None = None
    layers: Mapping[str, OutputLayer] = field(default_factory=dict)
    quant: Quantization | None = None
    folder: Path | None = None
    mode: Literal["fast", "exact"] = "fast"


def test_new_option_fields_convert_from_their_type_hints(tmp_path):
    recipe = tmp_path / "r.toml"
    options = options_from_table(FutureOptions, {
        "count": 3, "ratio": 2, "tags": ["a", "b"], "pair": [1, "x"],
        "layers": {"mask": "uint8:0:1", "img": {"kind": "png", "low": 0, "high": 2}},
        "quant": {"dtype": "int8", "scale": 0.5, "zero_point": -3},
        "folder": "data", "mode": "exact"}, recipe)
    assert options == FutureOptions(
        count=3, ratio=2.0, tags=("a", "b"), pair=(1, "x"),
        layers={"mask": OutputLayer("quantize", quantize=QuantizeSpec("uint8", 0, 1)),
                "img": OutputLayer("png", low=0, high=2)},
        quant=Quantization("int8", 0.5, -3), folder=tmp_path / "data", mode="exact")

    for table, message in (
            ({"count": "3"}, r"\[FutureOptions\] count: must be an integer, got '3'"),
            ({"count": True}, "count: must be an integer, got True"),
            ({"tags": "a"}, "tags: must be a list of strings, got 'a'"),
            ({"tags": ["a", 1]}, r"tags\[1\]: must be a string, got 1"),
            ({"pair": [1]}, r"pair: must be a list of 2 values \(an integer, a string\), "
                            r"got \[1\]"),
            ({"layers": {"m": "uint9"}}, r"layers.m: 'uint9': an output layer is float"),
            ({"quant": {"dtype": "int8", "scale": -1}}, "quant: quantization scale must be a "
                                                        "positive number"),
            ({"quant": {"dtype": "int8", "size": 1}}, r"quant: has no key 'size'; valid keys: "
                                                      "dtype, scale, zero_point"),
            ({"mode": "slow"}, "mode: must be one of 'fast', 'exact', got 'slow'"),
            ({"colour": 1}, "has no key 'colour'; valid keys: count, folder, layers, mode, "
                            "pair, quant, ratio, tags")):
        with pytest.raises(RecipeError, match=message):
            options_from_table(FutureOptions, table, recipe)


@pytest.mark.parametrize("text, message", [
    ("[wrap]\nsrc='a'\nout='b'\ncolour='red'\n",
     r"recipe.toml: \[wrap\] has no key 'colour'; valid keys: channels, .*image_input, input, "),
    ("[wrapp]\nsrc='a'\n", r"unknown table\(s\) 'wrapp'; a recipe has \[wrap\], \[verify\], "
                           r"\[export\]"),
    ("title='x'\n", "unknown table"),
    ("", "nothing to do"),
    ("wrap = 3\n", r"wrap must be a table \(\[wrap\]\)"),
    ("[wrap]\nout='b'\n", r"\[wrap\] src: is required"),
    ("[wrap]\nsrc='a'\nout='b'\nsize='big'\n", r"\[wrap\] size must be \"HxW\" or \[H, W\]"),
    ("[wrap]\nsrc='a'\nout='b'\nsize=[2,2]\nheight=3\n", "gives both size and height"),
    ("[wrap]\nsrc='a'\nout='b'\nnormalize='meanstd'\n", "needs mean and std"),
    ("[wrap]\nsrc='a'\nout='b'\nmean=[1,'x']\n", r"\[wrap\] mean must be a list of numbers"),
    ("[wrap]\nsrc='a'\nout='b'\nnormalize='unit'\nnormalization={mode='raw'}\n",
     "gives both normalize and normalization"),
    ("[wrap]\nsrc='a'\nout='b'\nquantize_output={mask='uint8'}\n",
     r"\[wrap\] quantize_output/png_output: a quantized output needs its range"),
    ("[wrap]\nsrc='a'\nout='b'\npng_output=[3]\n", r"\[wrap\] png_output must be a table"),
    ("[wrap]\nsrc='a'\nout='b'\ninput={x='pixels'}\n", r"\[wrap\] input: 'pixels': input kind "
                                                       "must be one of"),
    ("[wrap]\nsrc='a'\nout='b'\ngraph_inputs='in put'\n", r"\[wrap\] graph_inputs: "),
    ("[wrap]\nsrc='a'\nout='b'\nresize=3\n", r"\[wrap\] resize: must be a string, got 3"),
    ("[verify]\nprepared='p'\n", r"\[verify\] original: is required"),
    ("[verify]\noriginal='o'\nprepared='p'\ncount='many'\n",
     r"\[verify\] count: must be an integer, got 'many'"),
    ("[export]\nprepared='p'\n", r"\[export\] base: is required"),
    ("[export]\nbase='b'\n", r"\[export\] prepared: is required"),
    ("[export]\nprepared='p'\nbase='b'\nwarmup=2.5\n", r"\[export\] warmup: must be an integer"),
    ("[wrap\n", "is not valid TOML"),
])
def test_recipe_errors_name_the_key(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text))


def test_missing_recipe(tmp_path):
    with pytest.raises(RecipeError, match=r"recipe .*nope.toml does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_the_example_recipe_prepares_the_demo_under_build():
    recipe = load_recipe(EXAMPLE)
    assert recipe.wrap.src == ROOT / "build" / "models" / "digits" / "original"
    assert recipe.wrap.out == ROOT / "build" / "recipes" / "digits" / "served"
    assert recipe.wrap.options.labels == tuple("0123456789")
    assert recipe.wrap.options.output_roles == {"scores": "probabilities"}
    assert (recipe.verify.original, recipe.verify.prepared) == (recipe.wrap.src,
                                                                recipe.wrap.out)
    assert recipe.verify.options.samples == "digits"
    assert recipe.verify.options.reference_preprocess.scale == pytest.approx(1 / 255)
    assert recipe.export.base == ROOT / "build" / "serving"
    assert recipe.export.options.warmup == 5


@pytest.mark.slow
def test_the_example_recipe_runs(demo_model, tmp_path):
    """The example itself, with its output redirected from build/ to a temporary folder."""
    recipe = load_recipe(EXAMPLE)
    out, base = tmp_path / "served", tmp_path / "serving"
    recipe = dataclasses.replace(
        recipe, wrap=dataclasses.replace(recipe.wrap, src=demo_model.original, out=out),
        verify=dataclasses.replace(recipe.verify, original=demo_model.original, prepared=out),
        export=dataclasses.replace(recipe.export, prepared=out, base=base))
    printed: list[str] = []
    result = run_recipe(recipe, report=printed.append)
    assert result.metadata.name == "digits"
    assert result.report.passed and result.report.samples == 360
    assert result.report.output("scores").argmax_agree == 360
    assert (result.exported.version, result.exported.warmup_records) == (1, 5)
    assert (base / "digits" / "1" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert printed[0].startswith(f"wrote {out}: input 'image_bytes' (28x28x1, unit)")
    assert printed[1].splitlines()[1] == "samples: 360 held-out digits"
    assert printed[1].splitlines()[3].startswith("normalisation: wrapped unit: p/255, "
                                                 "reference p * 0.00392157 + 0")
    assert printed[2].startswith(f"exported digits version 1 to {base / 'digits' / '1'}")


@pytest.mark.slow
def test_cli_prepare_is_repeatable(demo_model, tmp_path, capsys):
    (tmp_path / "original").symlink_to(demo_model.original, target_is_directory=True)
    path = write(tmp_path, """
        [wrap]
        src = "original"
        out = "out/served"
        resize = "pad"
        labels = "zero,one,two,three,four,five,six,seven,eight,nine"
        overwrite = true

        [verify]
        count = 16

        [export]
        base = "out/serving"
        name = "words"
        warmup = 1
        """.replace("\n        ", "\n"))

    first = subprocess.run([sys.executable, "-m", "modelprep.cli", "prepare", str(path)],
                           cwd="/", capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "step 1/3: wrap" in first.stderr and "step 3/3: export" in first.stderr
    assert "passed: 1 of 1 outputs" in first.stdout
    assert f"exported words version 1 to {tmp_path / 'out' / 'serving' / 'words' / '1'}" \
        in first.stdout
    # again, through the same entry point in this process (one TensorFlow start is enough)
    from modelprep.cli import main

    assert main(["prepare", str(path)]) == 0
    assert "exported words version 2" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out" / "serving" / "words").iterdir()) == [
        "1", "2"]


@pytest.mark.slow
def test_a_failed_verification_stops_before_export(tmp_path, capsys):
    from tests.modelprep import handmade

    original = handmade.save_original(tmp_path / "original")
    handmade.save_prepared_mask_model(original, tmp_path / "naive", mask="naive")
    path = write(tmp_path, """
        [verify]
        original = "original"
        prepared = "naive"
        count = 8

        [export]
        base = "serving"
        """.replace("\n        ", "\n"))
    recipe = load_recipe(path)
    assert recipe.export.prepared == tmp_path / "naive"
    with pytest.raises(VerificationFailed, match="output 'mask': max abs error"):
        run_recipe(recipe)
    assert not (tmp_path / "serving").exists()

    from modelprep.cli import main

    assert main(["prepare", str(path)]) == 4
    out, err = capsys.readouterr()
    assert "FAIL" in out and "modelprep: error: output 'mask'" in err
    assert not (tmp_path / "serving").exists()


def test_verify_references_in_a_recipe(tmp_path):
    from modelprep.reference import ReferencePreprocess

    path = write(tmp_path, """
        [verify]
        original = "m.keras"
        prepared = "served"
        reference_preprocess = "keras.applications.mobilenet_v2.preprocess_input"
        reference_outputs = "answers.npz"
        """.replace("\n        ", "\n"))
    options = load_recipe(path).verify.options
    only_outputs = write(tmp_path, "[verify]\nprepared = 'served'\n"
                                   "reference_outputs = 'answers.npz'\n", "outputs.toml")
    assert load_recipe(only_outputs).verify.original is None
    assert options.reference_preprocess == ReferencePreprocess(
        function="keras.applications.mobilenet_v2.preprocess_input")
    assert options.reference_outputs == tmp_path / "answers.npz"
    table = {"reference_preprocess": {"scale": 0.5, "offset": -1}}
    assert options_from_table(VerifyOptions, table, path).reference_preprocess == \
        ReferencePreprocess(scale=0.5, offset=-1.0)
    with pytest.raises(RecipeError, match=r"reference_preprocess: reference preprocessing "
                                          r"'1,2,3': expected a callable's dotted name"):
        options_from_table(VerifyOptions, {"reference_preprocess": "1,2,3"}, path)


def test_a_missing_key_of_a_nested_table_is_named(tmp_path):
    with pytest.raises(RecipeError, match=r"\[FutureOptions\] quant.scale: is required"):
        options_from_table(FutureOptions, {"quant": {"dtype": "int8"}}, tmp_path / "r.toml")
