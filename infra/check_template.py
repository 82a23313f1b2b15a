"""Check template.yaml for what `sam validate --lint` lets through.

    python -m infra.check_template [template.yaml]      # prints problems; exit 1 if any

cfn-lint checks the template against CloudFormation's schemas; it does not know this
project. Checked here, for every AWS::Serverless::Function (with Globals applied):

* MemorySize 128..10240 MB, Timeout 1..900 s, EphemeralStorage 512..10240 MB, and a
  Timeout an API Gateway in front can wait for (HTTP API 30 s, REST API 29 s);
* a Lambda runtime that exists and is not deprecated, whose Python the project supports
  (pyproject's requires-python), likewise for the Dockerfile's base image;
* a handler that resolves: the module file under CodeUri (or in the image) defines it;
* the function's pinned requirements agree with requirements.lock;
* every environment variable is one the function reads (functions/config.py) and
  BACKEND names a backend that exists;
* a Function URL that can be public is: SAM writes the two statements a public URL needs
  (lambda:InvokeFunctionUrl with FunctionUrlAuthType NONE, lambda:InvokeFunction with
  InvokedViaFunctionUrl) only for a literal ``AuthType: NONE``; for ``AuthType: !Ref P`` the
  template must hold both as AWS::Lambda::Permission resources, made exactly when P is NONE
  and the function exists (their Conditions are evaluated for every value of the
  parameters involved).
"""

from __future__ import annotations

import ast
import datetime as dt
import itertools
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MEMORY_MB = (128, 10_240)
TIMEOUT_S = (1, 900)
EPHEMERAL_MB = (512, 10_240)
API_TIMEOUT_S = {"HttpApi": 30, "Api": 29}
PYTHON_RUNTIMES = {
    "python3.9": dt.date(2025, 12, 15),
    "python3.10": dt.date(2026, 10, 31),
    "python3.11": dt.date(2027, 6, 30),
    "python3.12": dt.date(2028, 10, 31),
    "python3.13": dt.date(2029, 6, 30),
    "python3.14": dt.date(2029, 6, 30),
}
"""Lambda's Python runtimes and the day each is deprecated (AWS's runtime support policy)."""
OTHER_RUNTIMES = ("nodejs", "java", "dotnet", "ruby", "provided", "go1.x")
PLATFORM_VARIABLES = {"TF_CPP_MIN_LOG_LEVEL", "AWS_ENDPOINT_URL_S3", "PYTHONPATH"}
"""Read by a library the function uses, not by functions/config.py."""


@dataclass(frozen=True)
class Problem:
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def check(template_path: Path, root: Path = ROOT, today: dt.date | None = None,
          base: Path | None = None) -> list[Problem]:
    """Every problem found; `base` is where CodeUri and DockerContext are resolved (the
    template's folder), `root` the project whose settings and pins count."""
    today = today or dt.date.today()
    template = load_template(template_path)
    base = base or template_path.resolve().parent
    params = {name: spec.get("Default") for name, spec in
              (template.get("Parameters") or {}).items()}
    globals_ = (template.get("Globals") or {}).get("Function") or {}
    known_vars = _config_variables(root)
    backends = _backends(root)
    pins = _pins(root / "requirements.lock")
    python_range = _requires_python(root / "pyproject.toml")
    problems: list[Problem] = []
    for name, resource in (template.get("Resources") or {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = {**globals_, **(resource.get("Properties") or {})}
        props["Environment"] = _merged_environment(globals_, resource.get("Properties") or {})
        fn = _Function(name, props, resource.get("Metadata") or {}, params, base)
        problems += function_url(template, name, resource)
        problems += fn.limits()
        problems += fn.api_timeout()
        problems += fn.environment(known_vars, backends)
        if props.get("PackageType", "Zip") == "Image":
            problems += fn.image(python_range, pins, today)
        else:
            problems += fn.zip(python_range, pins, today)
    return problems


PUBLIC_URL_STATEMENTS = {
    "lambda:InvokeFunctionUrl": ("FunctionUrlAuthType", "NONE"),
    "lambda:InvokeFunction": ("InvokedViaFunctionUrl", True),
}
"""The two statements a Function URL with AuthType NONE needs, by action: the property
that scopes each one to the URL and its value."""


def function_url(template: dict[str, Any], name: str, resource: dict[str, Any]
                 ) -> list[Problem]:
    """Problems with the public access of ``name``'s Function URL (see the module doc)."""
    auth = ((resource.get("Properties") or {}).get("FunctionUrlConfig") or {}).get("AuthType")
    if not isinstance(auth, dict):
        return []  # none, or a literal: SAM writes what NONE needs itself
    parameter = auth.get("Ref")
    spec = (template.get("Parameters") or {}).get(parameter) \
        if isinstance(parameter, str) else None
    if spec is None or not isinstance(parameter, str):
        return [Problem(name, f"FunctionUrlConfig.AuthType {auth} is neither NONE, AWS_IAM "
                              "nor a !Ref to a parameter")]
    if "NONE" not in (spec.get("AllowedValues") or [spec.get("Default")]):
        return []
    problems = []
    for action, (key, value) in PUBLIC_URL_STATEMENTS.items():
        found = [(pname, presource) for pname, presource in
                 (template.get("Resources") or {}).items()
                 if presource.get("Type") == "AWS::Lambda::Permission"
                 and (presource.get("Properties") or {}).get("FunctionName") == {"Ref": name}
                 and (presource.get("Properties") or {}).get("Action") == action]
        if not found:
            problems.append(Problem(name, (
                f"FunctionUrlConfig.AuthType is !Ref {parameter}, for which SAM writes no "
                f"permission: with {parameter}=NONE every call to the URL is refused (403) "
                f"unless an AWS::Lambda::Permission gives {action} to \"*\" with "
                f"{key}: {json.dumps(value)}")))
            continue
        for pname, presource in found:
            props = presource.get("Properties") or {}
            if props.get("Principal") != "*" or props.get(key) != value:
                problems.append(Problem(pname, f"a public Function URL needs Principal \"*\" "
                                               f"and {key}: {json.dumps(value)}"))
            wrong = _condition_mismatch(template, presource.get("Condition"),
                                        resource.get("Condition"), parameter)
            if wrong is not None:
                problems.append(Problem(pname, f"made when {wrong}; it must be made exactly "
                                               f"when {parameter} is NONE and {name} exists"))
    return problems


def _condition_mismatch(template: dict[str, Any], permission: str | None,
                        function: str | None, parameter: str) -> str | None:
    """The first parameter values (as text) for which ``permission``'s condition differs
    from "``function``'s condition and ``parameter`` = NONE"; None if it never does."""
    conditions = template.get("Conditions") or {}
    specs = template.get("Parameters") or {}
    names = {parameter} | _parameters_of(conditions, permission) | \
        _parameters_of(conditions, function)
    domains = []
    for pname in sorted(names):
        spec = specs.get(pname) or {}
        default = spec.get("Default", "")
        other = "" if default != "" else "x"
        domains.append([(pname, v) for v in (spec.get("AllowedValues") or [default, other])])
    for values in itertools.product(*domains):
        params = dict(values)
        wanted = params[parameter] == "NONE" and (
            function is None or condition_value(conditions, function, params))
        made = permission is None or condition_value(conditions, permission, params)
        if made != wanted:
            return ", ".join(f"{k}={v!r}" for k, v in values)
    return None


def _parameters_of(conditions: dict[str, Any], name: str | None) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"Ref"}:
                found.add(node["Ref"])
            elif set(node) == {"Condition"}:
                walk(conditions.get(node["Condition"]))
            else:
                for value in node.values():
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    if name is not None:
        walk(conditions.get(name))
    return found


def condition_value(conditions: dict[str, Any], name: str, params: dict[str, Any]) -> bool:
    """A template Condition's value for these parameter values, as CloudFormation works it
    out (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition, Ref to a parameter)."""

    def value(node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            ((key, arg),) = node.items()
            if key == "Ref":
                return params[arg]
            if key == "Condition":
                return value(conditions[arg])
            if key == "Fn::Equals":
                return str(value(arg[0])) == str(value(arg[1]))
            if key == "Fn::Not":
                return not value(arg[0])
            if key == "Fn::And":
                return all(value(a) for a in arg)
            if key == "Fn::Or":
                return any(value(a) for a in arg)
        if isinstance(node, (str, int, bool)):
            return node
        raise ValueError(f"cannot evaluate {node!r} in Condition {name}")

    return bool(value(conditions[name]))


def deployed(template: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The resources CloudFormation makes for these parameter values (defaults for the
    rest): those without a Condition and those whose Condition holds."""
    values = {name: spec.get("Default") for name, spec in
              (template.get("Parameters") or {}).items()}
    values.update(params)
    conditions = template.get("Conditions") or {}
    return {name: resource for name, resource in (template.get("Resources") or {}).items()
            if "Condition" not in resource
            or condition_value(conditions, resource["Condition"], values)}


def load_template(path: Path) -> dict[str, Any]:
    """YAML with CloudFormation's short tags read as its JSON form: !Sub X as {"Fn::Sub": X},
    !Ref and !Condition as {"Ref": X} and {"Condition": X}."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}": value}

    Loader.add_multi_constructor("!", tagged)
    return yaml.load(path.read_text(), Loader=Loader) or {}


class _Function:
    def __init__(self, name: str, props: dict[str, Any], metadata: dict[str, Any],
                 params: dict[str, Any], base: Path) -> None:
        self.name, self.props, self.metadata, self.params, self.base = \
            name, props, metadata, params, base

    def value(self, key: str, default: Any = None) -> Any:
        """A property, with !Ref to a parameter replaced by its default."""
        value = self.props.get(key, default)
        if isinstance(value, dict) and set(value) == {"Ref"}:
            return self.params.get(value["Ref"], value)
        return value

    def problem(self, message: str) -> Problem:
        return Problem(self.name, message)

    def limits(self) -> list[Problem]:
        problems = []
        for key, (low, high), unit, default in (("MemorySize", MEMORY_MB, "MB", 128),
                                                ("Timeout", TIMEOUT_S, "s", 3)):
            value = _number(self.value(key, default))
            if value is None or not low <= value <= high:
                problems.append(self.problem(f"{key} must be {low}..{high} {unit}, "
                                             f"got {self.value(key)!r}"))
        storage = self.value("EphemeralStorage") or {}
        size = _number(storage.get("Size", 512)) if isinstance(storage, dict) else None
        if size is None or not EPHEMERAL_MB[0] <= size <= EPHEMERAL_MB[1]:
            problems.append(self.problem(f"EphemeralStorage.Size must be {EPHEMERAL_MB[0]}.."
                                         f"{EPHEMERAL_MB[1]} MB, got {storage!r}"))
        return problems

    def api_timeout(self) -> list[Problem]:
        timeout = _number(self.value("Timeout", 3)) or 0
        problems = []
        for event_name, event in (self.props.get("Events") or {}).items():
            limit = API_TIMEOUT_S.get(event.get("Type"))
            if limit is not None and timeout > limit:
                problems.append(self.problem(
                    f"Timeout is {timeout} s but its {event['Type']} event {event_name} "
                    f"stops waiting after {limit} s; clients would get a 503 instead of the "
                    "answer"))
        return problems

    def environment(self, known: set[str], backends: tuple[str, ...]) -> list[Problem]:
        variables = self.props["Environment"]
        problems = [self.problem(f"environment variable {name} is not read by the function "
                                 "(functions/config.py); a typo?")
                    for name in sorted(variables)
                    if name not in known and name not in PLATFORM_VARIABLES
                    and not name.startswith("AWS_")]
        backend = variables.get("BACKEND")
        if isinstance(backend, str) and backend not in backends:
            problems.append(self.problem(f"BACKEND {backend!r} is not one of "
                                         f"{', '.join(backends)}"))
        return problems

    def zip(self, python_range: tuple[tuple[int, int], tuple[int, int]],
            pins: dict[str, str], today: dt.date) -> list[Problem]:
        runtime = self.value("Runtime")
        problems = self.runtime(runtime, python_range, today)
        code = self.base / str(self.value("CodeUri", "."))
        if not code.is_dir():
            return problems + [self.problem(f"CodeUri {self.value('CodeUri')!r} is not a "
                                            "directory")]
        problems += self.handler(str(self.value("Handler", "")), code)
        problems += self.requirements(code / "requirements.txt", pins)
        return problems

    def image(self, python_range: tuple[tuple[int, int], tuple[int, int]],
              pins: dict[str, str], today: dt.date) -> list[Problem]:
        context = self.base / str(self.metadata.get("DockerContext", "."))
        dockerfile = context / str(self.metadata.get("Dockerfile", "Dockerfile"))
        if not dockerfile.is_file():
            return [self.problem(f"Metadata.Dockerfile {dockerfile} does not exist")]
        text = dockerfile.read_text()
        problems = []
        base = re.search(r"^FROM\s+public\.ecr\.aws/lambda/python:(3\.\d+)", text, re.M)
        if base is None:
            problems.append(self.problem(f"{dockerfile.name} is not FROM a Lambda Python base "
                                         "image (public.ecr.aws/lambda/python:3.X)"))
        else:
            problems += self.runtime(f"python{base.group(1)}", python_range, today,
                                     what=f"{dockerfile.name}'s base image")
        cmd = re.search(r'^CMD\s+\[\s*"([^"]+)"', text, re.M)
        if cmd is None:
            problems.append(self.problem(f"{dockerfile.name} has no CMD [\"module.function\"]"))
        else:
            problems += self.handler(cmd.group(1), context)
        for line in re.findall(r"^COPY\s+(\S+requirements[^\s]*\.txt)\s", text, re.M):
            problems += self.requirements(context / line, pins)
        return problems

    def runtime(self, runtime: Any, python_range: tuple[tuple[int, int], tuple[int, int]],
                today: dt.date, what: str = "Runtime") -> list[Problem]:
        if runtime not in PYTHON_RUNTIMES:
            if isinstance(runtime, str) and runtime.startswith(OTHER_RUNTIMES):
                return [self.problem(f"{what} {runtime} is not Python; the handler is")]
            return [self.problem(f"{what} {runtime!r} is not a Lambda runtime (Python ones: "
                                 f"{', '.join(PYTHON_RUNTIMES)})")]
        problems = []
        if PYTHON_RUNTIMES[runtime] <= today:
            problems.append(self.problem(f"{what} {runtime} is deprecated since "
                                         f"{PYTHON_RUNTIMES[runtime]:%Y-%m-%d}"))
        version = tuple(int(p) for p in runtime.removeprefix("python").split("."))
        low, high = python_range
        if not low <= version < high:
            problems.append(self.problem(
                f"{what} {runtime} is outside the project's requires-python "
                f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"))
        return problems

    def handler(self, handler: str, code: Path) -> list[Problem]:
        module, _, function = handler.rpartition(".")
        path = code / (module.replace(".", "/") + ".py")
        if not module or not path.is_file():
            return [self.problem(f"handler {handler!r}: no module file {path}")]
        tree = ast.parse(path.read_text())
        if not any(isinstance(node, ast.FunctionDef) and node.name == function
                   for node in tree.body):
            return [self.problem(f"handler {handler!r}: {path.name} defines no {function}()")]
        return []

    def requirements(self, path: Path, pins: dict[str, str]) -> list[Problem]:
        if not path.is_file():
            return [self.problem(f"no {path.name} at {path.parent}")]
        problems = []
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for name, version in _pins(path).items():
            locked = pins.get(name)
            if locked is not None and locked != version:
                problems.append(self.problem(f"{shown} pins {name}=={version}, "
                                             f"requirements.lock has {locked}"))
        return problems


def _merged_environment(globals_: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    merged = dict(((globals_.get("Environment") or {}).get("Variables")) or {})
    merged.update(((props.get("Environment") or {}).get("Variables")) or {})
    return merged


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _config_variables(root: Path) -> set[str]:
    """Every environment variable functions/config.py reads (quoted upper-case names)."""
    source = (root / "functions" / "config.py").read_text()
    return set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source))


def _backends(root: Path) -> tuple[str, ...]:
    source = (root / "functions" / "config.py").read_text()
    match = re.search(r"^BACKENDS\s*=\s*(\(.*?\))", source, re.M | re.S)
    return tuple(ast.literal_eval(match.group(1))) if match else ()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def _requires_python(pyproject: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(lowest, first unsupported) from requires-python = ">=3.X,<3.Y"."""
    text = pyproject.read_text()
    low = re.search(r'requires-python\s*=\s*"[^"]*>=\s*(\d+)\.(\d+)', text)
    high = re.search(r'requires-python\s*=\s*"[^"]*<\s*(\d+)\.(\d+)', text)
    return ((int(low.group(1)), int(low.group(2))) if low else (3, 0),
            (int(high.group(1)), int(high.group(2))) if high else (4, 0))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else ROOT / "template.yaml"
    problems = check(path)
    for problem in problems:
        print(problem)
    print(f"{path}: {len(problems)} problem(s)" if problems else f"{path}: fine")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
