"""Recipe files: a whole preparation written down, so that it can be repeated.

A recipe is TOML with up to three tables, run in this order by
``modelprep prepare RECIPE.toml``::

    [wrap]                       # modelprep wrap SRC OUT ...
    src = "original"             # paths are relative to the recipe file
    out = "served"
    labels = ["cat", "dog"]      # or a file name, or "cat,dog", as on the command line
    output = { scores = "probabilities" }
    overwrite = true             # so that the recipe can run again

    [verify]                     # modelprep verify ORIGINAL PREPARED ...
    count = 200                  # original and prepared default to wrap's src and out
    tolerance = 1e-4

    [export]                     # modelprep export PREPARED BASE ...
    base = "serving"             # prepared defaults to wrap's out (or verify's prepared)

Keys are the command-line flags' names in snake_case (``--image-input`` is
``image_input``); ``[wrap]`` also takes every `WrapOptions` field by its own
name (``height``, ``normalization = { mode = "meanstd", ... }``), and
``[verify]``/``[export]`` are `VerifyOptions`/`ExportOptions`. A string in a
flag's text form goes through the command line's own parser (`modelprep.options`);
other values are converted from the option classes' type hints by cattrs, so an
option added to one of them is a recipe key at once. Fields typed `Path` are
taken relative to the recipe file; other strings are left as they are. An
unknown key, or a value of the wrong type, is an error that names it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cattrs

from modelmeta import MetadataError, ModelMetadata
from modelprep import options
from modelprep.errors import ModelprepError
from modelprep.export import ExportOptions, ExportResult
from modelprep.verify import VerifyOptions, VerifyReport
from modelprep.wrap import WrapOptions

SECTIONS = ("wrap", "verify", "export")

POSITIONAL = {"wrap": ("src", "out"), "verify": ("original", "prepared"),
              "export": ("prepared", "base")}
"""The commands' positional arguments: paths, relative to the recipe file."""

WRAP_FLAGS = ("size", "normalize", "mean", "std", "invert", "output", "input",
              "quantize_output", "png_output")
"""``modelprep wrap`` flags that are not one `WrapOptions` field of the same name; each
takes the flag's text form, or a list/table of them."""


class RecipeError(ModelprepError):
    """The recipe file cannot be read, or says something the commands do not take."""


@dataclass(frozen=True)
class WrapStep:
    src: Path
    out: Path
    options: WrapOptions


@dataclass(frozen=True)
class VerifyStep:
    original: Path | None
    """None only with `VerifyOptions.reference_outputs`."""
    prepared: Path
    options: VerifyOptions


@dataclass(frozen=True)
class ExportStep:
    prepared: Path
    base: Path
    options: ExportOptions


@dataclass(frozen=True)
class Recipe:
    path: Path
    wrap: WrapStep | None = None
    verify: VerifyStep | None = None
    export: ExportStep | None = None


@dataclass(frozen=True)
class PrepareResult:
    metadata: ModelMetadata | None
    report: VerifyReport | None
    exported: ExportResult | None


def recipe_keys() -> dict[str, tuple[str, ...]]:
    """Every key each table takes."""
    return {
        "wrap": (*POSITIONAL["wrap"], *_field_names(WrapOptions), *WRAP_FLAGS),
        "verify": (*POSITIONAL["verify"], *_field_names(VerifyOptions)),
        "export": (*POSITIONAL["export"], *_field_names(ExportOptions)),
    }


def options_from_table(cls: type, table: Mapping[str, Any], recipe: str | Path) -> Any:
    """An option dataclass from a TOML table, each value converted from the field's type
    hint (nested dataclasses from tables, `Path`s relative to the `recipe` file)."""
    recipe = Path(recipe)
    return _Convert(recipe.resolve().parent, str(recipe)).options(cls, dict(table),
                                                                  f"[{cls.__name__}]")


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe; nothing runs yet."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {path} cannot be read: {exc}") from exc
    toml = _toml()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {path} is not valid TOML: {exc}") from exc
    return parse_recipe(data, path)


def parse_recipe(data: Mapping[str, Any], path: Path) -> Recipe:
    """Build a `Recipe` from parsed TOML; `path` is the recipe file (for relative paths)."""
    where = str(path)
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise RecipeError(f"{where}: unknown table(s) {', '.join(map(repr, unknown))}; a recipe "
                          f"has [{'], ['.join(SECTIONS)}]")
    if not any(section in data for section in SECTIONS):
        raise RecipeError(f"{where}: nothing to do; give at least one of "
                          f"[{'], ['.join(SECTIONS)}]")
    for section in SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise RecipeError(f"{where}: {section} must be a table ([{section}])")
    base_dir = path.resolve().parent
    keys = recipe_keys()
    for section in SECTIONS:
        table = data.get(section, {})
        unknown = sorted(set(table) - set(keys[section]))
        if unknown:
            raise RecipeError(f"{where}: [{section}] has no key {unknown[0]!r}; valid keys: "
                              f"{', '.join(sorted(keys[section]))}")

    convert = _Convert(base_dir, where)
    wrap = verify = export = None
    if "wrap" in data:
        table = dict(data["wrap"])
        src, out = (convert.path(table.pop(k, None), f"[wrap] {k}", required=True)
                    for k in POSITIONAL["wrap"])
        wrap = WrapStep(src, out, _wrap_options(table, convert))
    if "verify" in data:
        table = dict(data["verify"])
        original: Path | None = None
        given = table.pop("original", None)
        if given is not None or wrap is not None or "reference_outputs" not in table:
            # reference outputs alone need no original (as on the command line)
            original = convert.path(given, "[verify] original",
                                    default=wrap.src if wrap else None)
        prepared = convert.path(table.pop("prepared", None), "[verify] prepared",
                                default=wrap.out if wrap else None)
        for key in ("graph_inputs", "graph_outputs"):  # a frozen GraphDef's, as for wrap
            if isinstance(table.get(key), str):
                text: str = table[key]
                table[key] = _cli_form(partial(options.parse_graph_tensors, text, key),
                                       f"[verify] {key}", where)
            elif key not in table and wrap and getattr(wrap.options, key, None):
                table[key] = dict(getattr(wrap.options, key))
        verify = VerifyStep(original, prepared, convert.options(VerifyOptions, table,
                                                                  "[verify]"))
    if "export" in data:
        table = dict(data["export"])
        default = wrap.out if wrap else (verify.prepared if verify else None)
        prepared = convert.path(table.pop("prepared", None), "[export] prepared", default=default)
        base = convert.path(table.pop("base", None), "[export] base", required=True)
        export = ExportStep(prepared, base, convert.options(ExportOptions, table, "[export]"))
    return Recipe(path=path, wrap=wrap, verify=verify, export=export)


def run_recipe(recipe: Recipe, progress: Callable[[str], None] = lambda _msg: None,
               report: Callable[[str], None] = lambda _text: None,
               warn: Callable[[str], None] | None = None) -> PrepareResult:
    """Run the recipe's steps in order: wrap, verify, export. `report` gets what each
    step's command would print. A failed verification stops before export."""
    from modelprep.export import export, format_export
    from modelprep.verify import verify
    from modelprep.wrap import wrap, wrap_summary

    steps = [s for s in SECTIONS if getattr(recipe, s) is not None]
    metadata: ModelMetadata | None = None
    verify_report: VerifyReport | None = None
    exported: ExportResult | None = None
    for number, name in enumerate(steps, 1):
        progress(f"step {number}/{len(steps)}: {name}")
        if name == "wrap" and recipe.wrap is not None:
            to_wrap = recipe.wrap
            metadata = wrap(to_wrap.src, to_wrap.out, to_wrap.options, progress=progress,
                            warn=warn)
            report(f"wrote {to_wrap.out}: {wrap_summary(metadata)}")
        elif name == "verify" and recipe.verify is not None:
            to_verify = recipe.verify
            verify_report = verify(to_verify.original, to_verify.prepared, to_verify.options,
                                   progress=progress)
            report(verify_report.format())
            verify_report.raise_if_failed()
        elif recipe.export is not None:
            to_export = recipe.export
            exported = export(to_export.prepared, to_export.base, to_export.options,
                              progress=progress)
            report(format_export(exported))
    return PrepareResult(metadata, verify_report, exported)


# --- [wrap]: CLI flags and WrapOptions fields ----------------------------------------


def _wrap_options(table: dict[str, Any], convert: _Convert) -> WrapOptions:
    """`WrapOptions` from a [wrap] table: the flags in `WRAP_FLAGS` and the text forms of
    fields (``labels = "labels.txt"``, ``keep_signatures = "a,b"``, ``graph_inputs =
    "images=input:0"``) through the command line's own parsers (`modelprep.options`),
    everything else by type hint."""
    where = convert.where
    values: dict[str, Any] = {}
    if "size" in table:
        _exclusive(table, "size", ("height", "width"), where)
        values["height"], values["width"] = _size(table.pop("size"), where)
    norm_flags = {k: table.pop(k) for k in ("normalize", "mean", "std", "invert") if k in table}
    if norm_flags:
        _exclusive(table, "/".join(norm_flags), ("normalization",), where)
        mean, std = (_floats(norm_flags[k], f"[wrap] {k}", where) if k in norm_flags else None
                     for k in ("mean", "std"))
        values["normalization"] = _cli_form(lambda: options.normalization_from_flags(
            convert.structure(norm_flags.get("normalize"), str | None, "[wrap] normalize"),
            mean, std, convert.structure(norm_flags.get("invert", False), bool,
                                         "[wrap] invert")), "[wrap] normalize", where)
    if "output" in table:
        _exclusive(table, "output", ("output_roles",), where)
        items = _items(_assignments(table.pop("output"), "output", where))
        values["output_roles"] = _cli_form(lambda: options.output_roles(items), "[wrap] output",
                                           where)
    if "input" in table:
        _exclusive(table, "input", ("inputs",), where)
        items = _items(_assignments(table.pop("input"), "input", where))
        values["inputs"] = _cli_form(lambda: options.input_layers(items), "[wrap] input", where)
    if "quantize_output" in table or "png_output" in table:
        _exclusive(table, "quantize_output/png_output", ("outputs",), where)
        quantize = _items(_assignments(table.pop("quantize_output", []), "quantize_output",
                                       where))
        png = _items(_assignments(table.pop("png_output", []), "png_output", where,
                                  optional=True))
        values["outputs"] = _cli_form(lambda: options.output_layers(quantize, png),
                                      "[wrap] quantize_output/png_output", where)
    text_forms: dict[str, Callable[[str], Any]] = {
        "labels": lambda v: options.parse_labels(v, convert.base_dir),
        "keep_signatures": options.keep_signatures,
        "graph_inputs": lambda v: options.parse_graph_tensors(v, "graph_inputs"),
        "graph_outputs": lambda v: options.parse_graph_tensors(v, "graph_outputs"),
    }
    for key, value in table.items():
        if key in text_forms and isinstance(value, str):
            values[key] = _cli_form(partial(text_forms[key], value), f"[wrap] {key}", where)
        else:
            values[key] = value
    return convert.options(WrapOptions, values, "[wrap]")


def _assignments(value: Any, key: str, where: str,
                 optional: bool = False) -> list[tuple[str, str | None]]:
    """A repeatable ``NAME=VALUE`` flag: ``{ NAME = "VALUE" }`` or ``["NAME=VALUE"]``
    (with `optional`, also ``["NAME"]`` and ``{ NAME = true }``)."""
    if isinstance(value, dict):
        pairs: list[tuple[str, str | None]] = []
        for name, item in value.items():
            if optional and item is True:
                pairs.append((name, None))
            elif isinstance(item, str) and item:
                pairs.append((name, item))
            else:
                break
        else:
            return pairs
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        pairs = [(n, v if sep else None) for n, sep, v in (item.partition("=") for item in value)]
        if all(n and (v or optional) for n, v in pairs):
            return pairs
    form = "NAME = \"VALUE\"" + (" (or true)" if optional else "")
    raise RecipeError(f"{where}: [wrap] {key} must be a table of {form}, or a list of "
                      f"\"NAME=VALUE\" as on the command line; got {value!r}")


def _items(pairs: list[tuple[str, str | None]]) -> list[str]:
    return [name if value is None else f"{name}={value}" for name, value in pairs]


def _cli_form(parse: Callable[[], Any], key: str, where: str) -> Any:
    try:
        return parse()
    except RecipeError:
        raise
    except (ModelprepError, MetadataError, ValueError) as exc:
        raise RecipeError(f"{where}: {key}: {exc}") from exc


def _exclusive(table: dict[str, Any], flag: str, fields: tuple[str, ...], where: str) -> None:
    both = [f for f in fields if f in table]
    if both:
        raise RecipeError(f"{where}: [wrap] gives both {flag} and {', '.join(both)}; "
                          "use one or the other")


def _size(value: Any, where: str) -> tuple[int, int]:
    """``"224x224"`` as on the command line, or ``[224, 224]``."""
    try:
        if isinstance(value, str):
            return options.parse_size(value)
        height, width = value
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            return height, width
    except (TypeError, ValueError, ModelprepError):
        pass
    raise RecipeError(f"{where}: [wrap] size must be \"HxW\" or [H, W] with positive "
                      f"integers, got {value!r}")


def _floats(value: Any, key: str, where: str) -> tuple[float, ...]:
    """``[1.0, 2.0]``, or ``"1,2"`` as on the command line."""
    try:
        if isinstance(value, str):
            return options.parse_floats(value)
        if isinstance(value, list) and all(isinstance(v, (int, float))
                                           and not isinstance(v, bool) for v in value):
            return tuple(float(v) for v in value)
    except ModelprepError:
        pass
    raise RecipeError(f"{where}: {key} must be a list of numbers (or \"1,2,3\"), "
                      f"got {value!r}")


# --- values from type hints: cattrs, strict about types ---------------------------------


class _Mismatch(TypeError):
    """A value of the wrong type for its field (as opposed to a right-typed value that fails
    a check); the message says what was expected."""

    def __init__(self, value: Any, hint: Any) -> None:
        super().__init__(f"must be {_describe(hint)}, got {value!r}")


class _Convert:
    """Recipe values to the option classes' types by their type hints (cattrs), strictly:
    no string becomes a number, no number a string, no string a list of its letters.
    `Path` fields are taken relative to the recipe; dataclasses with a ``parse`` text
    form (layers, quantizations, the reference preprocessing) take it from a string.
    Errors name the recipe file and the key, down to ``layers.mask`` or ``tags[1]``."""

    def __init__(self, base_dir: Path, where: str) -> None:
        self.base_dir = base_dir
        self.where = where
        self.converter = _converter(base_dir)

    def fail(self, key: str, message: str) -> RecipeError:
        return RecipeError(f"{self.where}: {key}: {message}")

    def path(self, value: Any, key: str, *, required: bool = False,
             default: Path | None = None) -> Path:
        if value is None:
            if default is not None:
                return default
            raise self.fail(key, "is required")
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a path (a string), got {value!r}")
        return (self.base_dir / Path(value).expanduser()).resolve()

    def options(self, cls: type, table: Any, key: str) -> Any:
        if not isinstance(table, dict):
            raise self.fail(key, f"must be a table ({cls.__name__}), got {table!r}")
        return self.structure(table, cls, key)

    def structure(self, value: Any, hint: Any, key: str) -> Any:
        try:
            return self.converter.structure(value, hint)
        except cattrs.BaseValidationError as exc:
            path, leaf = _first_error(exc, key)
            raise self.fail(path, _message(leaf)) from exc
        except cattrs.ForbiddenExtraKeysError as exc:
            raise self.fail(key, _message(exc)) from exc
        except (ModelprepError, MetadataError, ValueError, TypeError) as exc:
            raise self.fail(key, str(exc)) from exc


def _converter(base_dir: Path) -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)

    def strict(hint: type, accepts: Callable[[Any], bool]) -> None:
        def hook(value: Any, _: Any) -> Any:
            if not accepts(value):
                raise _Mismatch(value, hint)
            return hint(value)

        converter.register_structure_hook(hint, hook)

    strict(bool, lambda v: isinstance(v, bool))
    strict(int, lambda v: isinstance(v, int) and not isinstance(v, bool))
    strict(float, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    strict(str, lambda v: isinstance(v, str))

    def path(value: Any, _: Any) -> Path:
        if not isinstance(value, str) or not value:
            raise _Mismatch(value, Path)
        return (base_dir / Path(value).expanduser()).resolve()

    def literal(value: Any, hint: Any) -> Any:
        if value not in typing.get_args(hint):
            raise _Mismatch(value, hint)
        return value

    def keep(value: Any, _: Any) -> Any:  # WrapOptions.keep_signatures
        return value if isinstance(value, bool) else converter.structure(value, tuple[str, ...])

    converter.register_structure_hook(Path, path)
    converter.register_structure_hook(bool | tuple[str, ...], keep)
    converter.register_structure_hook_func(lambda t: typing.get_origin(t) is typing.Literal,
                                           literal)
    converter.register_structure_hook_factory(
        lambda t: typing.get_origin(t) in (tuple, list, Sequence, dict, Mapping),
        lambda t: _shaped(t, _container_hook(t, converter)))
    converter.register_structure_hook_factory(
        lambda t: dataclasses.is_dataclass(t) and isinstance(t, type),
        lambda t: _dataclass_hook(t, converter))
    return converter


def _container_hook(hint: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    from cattrs.cols import (
        homogenous_tuple_structure_factory,
        list_structure_factory,
        mapping_structure_factory,
    )

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (dict, Mapping):
        return mapping_structure_factory(hint, converter)
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return converter.gen_structure_hetero_tuple(hint)
    if origin is tuple:
        return homogenous_tuple_structure_factory(hint, converter)
    return list_structure_factory(hint, converter)


def _shaped(hint: Any, hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Refuse what is not a list (or table) before cattrs iterates it: a string is not a
    list of its letters; a fixed-size tuple needs exactly its number of items."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    mapping = origin in (dict, Mapping)

    def structure(value: Any, _: Any) -> Any:
        if not isinstance(value, dict if mapping else (list, tuple)):
            raise _Mismatch(value, hint)
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        if fixed and len(value) != len(args):
            raise _Mismatch(value, hint)
        return hook(value, hint)

    return structure


def _dataclass_hook(cls: type, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """A table of the fields; a string for classes with a ``parse`` text form; an instance
    as it is (the [wrap] flags give ready-made ones)."""
    from cattrs.gen import make_dict_structure_fn

    from_table: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls, converter, _cattrs_forbid_extra_keys=True)
    names = sorted(_field_names(cls))
    parse = getattr(cls, "parse", None)

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, cls):
            return value
        if isinstance(value, str) and parse is not None:
            return parse(value)
        if not isinstance(value, dict):
            raise _Mismatch(value, cls)
        unknown = sorted(set(value) - set(names))
        if unknown:  # before cattrs, which would first complain of a missing key
            raise ValueError(f"has no key {unknown[0]!r}; valid keys: {', '.join(names)}")
        return from_table(value, cls)

    return structure


def _first_error(exc: BaseException, key: str) -> tuple[str, BaseException]:
    """The first leaf of cattrs' exception tree, with the key path that leads to it."""
    if isinstance(exc, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for inner, note in with_notes:
            step = getattr(note, "name", None)
            if step is None:
                index = note.index
                step = f"[{index}]" if isinstance(index, int) else f".{index}"
            elif key.endswith("]"):
                step = f" {step}"
            else:
                step = f".{step}"
            return _first_error(inner, key + step)
        if without:
            return _first_error(without[0], key)
    return key, exc


def _message(exc: BaseException) -> str:
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        valid = sorted(_field_names(exc.cl))
        return (f"has no key {sorted(exc.extra_fields)[0]!r}; valid keys: "
                f"{', '.join(valid)}")
    if isinstance(exc, KeyError):
        return "is required"
    return str(exc)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
              Path: "a path"}
    if hint in simple:
        return simple[hint]
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple and args and args[-1] is not Ellipsis:
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if origin in (tuple, list, Sequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return f"a table of {_plural(args[1])}" if len(args) == 2 else "a table"
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return f"a table ({hint.__name__})"
    return str(hint)


def _plural(hint: Any) -> str:
    text = _describe(hint)
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article):] + "s"
    return text


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init)


def _toml() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ModuleNotFoundError:
        raise RecipeError("reading recipes on Python 3.10 needs the tomli package "
                          "(pip install tomli)") from None
    return tomli
