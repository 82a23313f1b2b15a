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
``[verify]``/``[export]`` are `VerifyOptions`/`ExportOptions`. Values are
converted from the option classes' type hints, so an option added to one of
them is a recipe key at once. Fields typed `Path` are taken relative to the
recipe file; other strings are left as they are. An unknown key, or a value
of the wrong type, is an error that names it.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelmeta import MetadataError, ModelMetadata, Normalization
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
    original: Path
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
    return _Converter(recipe.resolve().parent, str(recipe)).dataclass(cls, dict(table),
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

    convert = _Converter(base_dir, where)
    wrap = verify = export = None
    if "wrap" in data:
        table = dict(data["wrap"])
        src, out = (convert.path(table.pop(k, None), f"[wrap] {k}", required=True)
                    for k in POSITIONAL["wrap"])
        wrap = WrapStep(src, out, _wrap_options(table, convert))
    if "verify" in data:
        table = dict(data["verify"])
        original = convert.path(table.pop("original", None), "[verify] original",
                                default=wrap.src if wrap else None)
        prepared = convert.path(table.pop("prepared", None), "[verify] prepared",
                                default=wrap.out if wrap else None)
        for key in ("graph_inputs", "graph_outputs"):  # a frozen GraphDef's, as for wrap
            if isinstance(table.get(key), str):
                table[key] = _graph_tensors(table[key], f"[verify] {key}", where)
            elif key not in table and wrap and getattr(wrap.options, key, None):
                table[key] = dict(getattr(wrap.options, key))
        verify = VerifyStep(original, prepared, convert.dataclass(VerifyOptions, table,
                                                                  "[verify]"))
    if "export" in data:
        table = dict(data["export"])
        default = wrap.out if wrap else (verify.prepared if verify else None)
        prepared = convert.path(table.pop("prepared", None), "[export] prepared", default=default)
        base = convert.path(table.pop("base", None), "[export] base", required=True)
        export = ExportStep(prepared, base, convert.dataclass(ExportOptions, table, "[export]"))
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
    metadata = verify_report = exported = None
    for number, name in enumerate(steps, 1):
        progress(f"step {number}/{len(steps)}: {name}")
        if name == "wrap":
            step = recipe.wrap
            metadata = wrap(step.src, step.out, step.options, progress=progress, warn=warn)
            report(f"wrote {step.out}: {wrap_summary(metadata)}")
        elif name == "verify":
            step = recipe.verify
            verify_report = verify(step.original, step.prepared, step.options, progress=progress)
            report(verify_report.format())
            verify_report.raise_if_failed()
        else:
            step = recipe.export
            exported = export(step.prepared, step.base, step.options, progress=progress)
            report(format_export(exported))
    return PrepareResult(metadata, verify_report, exported)


# --- [wrap]: CLI flags and WrapOptions fields ----------------------------------------


def _wrap_options(table: dict[str, Any], convert: _Converter) -> WrapOptions:
    """`WrapOptions` from a [wrap] table: the flags in `WRAP_FLAGS` the way the command line
    reads them, text forms of fields (``labels = "labels.txt"``, ``keep_signatures =
    "a,b"``, ``graph_inputs = "images=input:0"``) likewise, everything else by type hint."""
    from modelprep.options import input_layers, keep_signatures, output_layers

    where = convert.where
    values: dict[str, Any] = {}
    if "size" in table:
        _exclusive(table, "size", ("height", "width"), where)
        values["height"], values["width"] = _size(table.pop("size"), where)
    norm_flags = {k: table.pop(k) for k in ("normalize", "mean", "std", "invert") if k in table}
    if norm_flags:
        _exclusive(table, "/".join(norm_flags), ("normalization",), where)
        mean = norm_flags.get("mean")
        norm: dict[str, Any] = {  # as the CLI: meanstd when a mean is given, else unit
            "mode": norm_flags.get("normalize", "meanstd" if mean is not None else "unit"),
            "invert": norm_flags.get("invert", False)}
        for key in ("mean", "std"):
            if key in norm_flags:
                norm[key] = _floats(norm_flags[key], f"[wrap] {key}", where)
        values["normalization"] = convert.dataclass(Normalization, norm, "[wrap] normalize")
    if "output" in table:
        _exclusive(table, "output", ("output_roles",), where)
        values["output_roles"] = dict(_assignments(table.pop("output"), "output", where))
    if "input" in table:
        _exclusive(table, "input", ("inputs",), where)
        items = _assignments(table.pop("input"), "input", where)
        values["inputs"] = _cli_form(lambda: input_layers(_items(items)), "[wrap] input", where)
    if "quantize_output" in table or "png_output" in table:
        _exclusive(table, "quantize_output/png_output", ("outputs",), where)
        quantize = _assignments(table.pop("quantize_output", []), "quantize_output", where)
        png = _assignments(table.pop("png_output", []), "png_output", where, optional=True)
        values["outputs"] = _cli_form(lambda: output_layers(_items(quantize), _items(png)),
                                      "[wrap] quantize_output/png_output", where)
    text_forms: dict[str, Callable[[str], Any]] = {
        "labels": lambda v: _labels(v, convert),
        "keep_signatures": keep_signatures,
        "graph_inputs": lambda v: _graph_tensors(v, "[wrap] graph_inputs", where),
        "graph_outputs": lambda v: _graph_tensors(v, "[wrap] graph_outputs", where),
    }
    fields = _field_types(WrapOptions)
    for key, value in table.items():
        if key in text_forms and isinstance(value, str):
            values[key] = _cli_form(lambda k=key, v=value: text_forms[k](v), f"[wrap] {key}",
                                    where)
        else:
            values[key] = convert.value(value, fields[key], f"[wrap] {key}")
    return convert.build(WrapOptions, values, "[wrap]")


def _assignments(value: Any, key: str, where: str,
                 optional: bool = False) -> list[tuple[str, str | None]]:
    """A repeatable ``NAME=VALUE`` flag: ``{ NAME = "VALUE" }`` or ``["NAME=VALUE"]``
    (with `optional`, also ``["NAME"]`` and ``{ NAME = true }``)."""
    if isinstance(value, dict):
        pairs = []
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


def _graph_tensors(value: str, key: str, where: str) -> dict[str, str]:
    """``"images=input:0,probs=softmax:0"`` as on the command line."""
    from modelprep.options import parse_graph_tensors

    return _cli_form(lambda: parse_graph_tensors(value, key), key, where)


def _items(pairs: list[tuple[str, str | None]]) -> list[str]:
    return [name if value is None else f"{name}={value}" for name, value in pairs]


def _cli_form(parse: Callable[[], Any], key: str, where: str) -> Any:
    try:
        return parse()
    except (ModelprepError, MetadataError, ValueError) as exc:
        raise RecipeError(f"{where}: {key}: {exc}") from exc


def _exclusive(table: dict[str, Any], flag: str, fields: tuple[str, ...], where: str) -> None:
    both = [f for f in fields if f in table]
    if both:
        raise RecipeError(f"{where}: [wrap] gives both {flag} and {', '.join(both)}; "
                          "use one or the other")


def _size(value: Any, where: str) -> tuple[int, int]:
    """``"224x224"`` as on the command line, or ``[224, 224]``."""
    parts = value.lower().split("x") if isinstance(value, str) else value
    try:
        height, width = (_positive_int(p) for p in parts)
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: [wrap] size must be \"HxW\" or [H, W] with positive "
                          f"integers, got {value!r}") from None
    return height, width


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(value)
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


def _floats(value: Any, key: str, where: str) -> list[float]:
    """``[1.0, 2.0]``, or ``"1,2"`` as on the command line."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        if not isinstance(items, list) or any(isinstance(v, bool) for v in items):
            raise TypeError(value)
        return [float(v) for v in items]
    except (TypeError, ValueError):
        raise RecipeError(f"{where}: {key} must be a list of numbers (or \"1,2,3\"), "
                          f"got {value!r}") from None


def _labels(value: str, convert: _Converter) -> tuple[str, ...]:
    """A file beside the recipe with one label per line, or a comma-separated list."""
    path = convert.base_dir / value
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return tuple(line for line in lines if line)
    return tuple(part.strip() for part in value.split(","))


# --- values from type hints ----------------------------------------------------------


class _Converter:
    """Recipe values to the types the option classes declare, with messages that name the
    recipe file and key."""

    def __init__(self, base_dir: Path, where: str) -> None:
        self.base_dir = base_dir
        self.where = where

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

    def dataclass(self, cls: type, table: Any, key: str) -> Any:
        if not isinstance(table, dict):
            raise self.mismatch(key, cls, table)
        types_ = _field_types(cls)
        unknown = sorted(set(table) - set(types_))
        if unknown:
            raise self.fail(key, f"has no key {unknown[0]!r}; valid keys: "
                                 f"{', '.join(sorted(types_))}")
        values = {k: self.value(v, types_[k], f"{key} {k}" if key.endswith("]") else
                                f"{key}.{k}") for k, v in table.items()}
        return self.build(cls, values, key)

    def build(self, cls: type, values: dict[str, Any], key: str) -> Any:
        try:
            return cls(**values)
        except (MetadataError, ValueError, TypeError) as exc:
            raise self.fail(key, str(exc)) from exc

    def value(self, value: Any, hint: Any, key: str) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if hint is Any:
            return value
        if origin in (typing.Union, types.UnionType):
            deeper = []  # errors past the type check: the value had the right shape
            for option in (a for a in args if a is not type(None)):
                try:
                    return self.value(value, option, key)
                except _TypeMismatch:
                    continue
                except RecipeError as exc:
                    deeper.append(exc)
            if deeper:
                raise deeper[0]
            raise self.mismatch(key, hint, value)
        if hint is bool:
            if isinstance(value, bool):
                return value
        elif hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif hint is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        elif hint is str:
            if isinstance(value, str):
                return value
        elif hint is Path:
            return self.path(value, key)
        elif origin is typing.Literal:
            if value in args:
                return value
        elif origin is tuple and isinstance(value, list):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
            if len(args) == len(value):
                return tuple(self.value(v, a, f"{key}[{i}]")
                             for i, (v, a) in enumerate(zip(value, args, strict=True)))
        elif origin in (list, Sequence) and isinstance(value, list):
            return [self.value(v, args[0] if args else Any, f"{key}[{i}]")
                    for i, v in enumerate(value)]
        elif origin in (dict, Mapping) and isinstance(value, dict):
            value_type = args[1] if len(args) == 2 else Any
            return {k: self.value(v, value_type, f"{key}.{k}") for k, v in value.items()}
        elif dataclasses.is_dataclass(hint) and isinstance(hint, type):
            if isinstance(value, str) and callable(getattr(hint, "parse", None)):
                try:  # the option's text form, as on the command line
                    return hint.parse(value)
                except (ModelprepError, MetadataError, ValueError) as exc:
                    raise self.fail(key, str(exc)) from exc
            return self.dataclass(hint, value, key)
        raise self.mismatch(key, hint, value)

    def mismatch(self, key: str, hint: Any, value: Any) -> RecipeError:
        return _TypeMismatch(f"{self.where}: {key}: must be {_describe(hint)}, got {value!r}")


class _TypeMismatch(RecipeError):
    """A value of the wrong type (as opposed to a right-typed value that fails a check)."""


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
    if dataclasses.is_dataclass(hint):
        return f"a table ({hint.__name__})"
    return str(hint)


def _plural(hint: Any) -> str:
    text = _describe(hint)
    for article in ("an ", "a "):
        if text.startswith(article):
            return text[len(article):] + "s"
    return text


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(_field_types(cls))


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
