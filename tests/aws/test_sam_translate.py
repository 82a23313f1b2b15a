"""template.yaml as CloudFormation receives it: translated by AWS's own SAM translator
(`samtranslator`, which aws-sam-cli ships in .venv-tools; see tests/aws/sam_translate.py),
then its Conditions evaluated for the parameter values a deployment uses.

What only shows after translation: which permissions a Function URL gets (SAM writes the
public ones for a literal ``AuthType: NONE`` and none for ``AuthType: !Ref ...``), what
handler each function ends up with and whether it imports, and the environment each
function really gets once Globals are merged. Nothing is deployed: there is no AWS here.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from infra.check_template import _config_variables, deployed, load_template
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
ENV = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
FUNCTIONS = ("PredictFunction", "AdapterFunction", "LiteRTFunction")
EVERY_FUNCTION = {"ModelBucket": "models", "TfServingUrl": "http://10.0.0.5:8501",
                  "LiteRTFlavour": "int8"}
PUBLIC = {("lambda:InvokeFunctionUrl", "FunctionUrlAuthType", "NONE"),
          ("lambda:InvokeFunction", "InvokedViaFunctionUrl", True)}


def _has_translator() -> bool:
    return TOOLS_PYTHON.is_file() and subprocess.run(
        [str(TOOLS_PYTHON), "-c", "import samtranslator"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _has_translator(), reason=(
    "samtranslator is missing: `make tools` installs aws-sam-cli (requirements-tools.lock), "
    "which brings it, into .venv-tools"))


@functools.cache
def _translate(text: str, parameters: str) -> str:
    result = subprocess.run(
        [str(TOOLS_PYTHON), str(ROOT / "tests" / "aws" / "sam_translate.py"), "-",
         parameters], input=text, cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def translated(parameters: dict[str, str], text: str | None = None) -> dict[str, Any]:
    """The CloudFormation resources made for ``parameters``: translated, then the
    resources whose Condition does not hold for those values dropped."""
    template = json.loads(_translate(text or TEMPLATE.read_text(),
                                     json.dumps(parameters, sort_keys=True)))
    return deployed(template, parameters)


def url_permissions(resources: dict[str, Any]) -> dict[str, set[tuple[str, str, Any]]]:
    """Per function, the statements that let anyone ("*") call it: (action, scoping
    property, its value)."""
    found: dict[str, set[tuple[str, str, Any]]] = {}
    for resource in resources.values():
        props = resource["Properties"]
        if resource["Type"] != "AWS::Lambda::Permission" or props.get("Principal") != "*":
            continue
        key = next((k for k in ("FunctionUrlAuthType", "InvokedViaFunctionUrl") if k in props),
                   "")
        found.setdefault(props["FunctionName"]["Ref"], set()).add(
            (props["Action"], key, props.get(key)))
    return found


def urls(resources: dict[str, Any]) -> set[str]:
    """The functions with a Function URL, each checked to take its AuthType from the
    FunctionUrlAuthType parameter."""
    found = set()
    for resource in resources.values():
        if resource["Type"] == "AWS::Lambda::Url":
            assert resource["Properties"]["AuthType"] == {"Ref": "FunctionUrlAuthType"}
            found.add(resource["Properties"]["TargetFunctionArn"]["Ref"])
    return found


def test_public_function_urls_get_both_statements_lambda_asks_for():
    resources = translated(EVERY_FUNCTION)
    assert urls(resources) == set(FUNCTIONS)
    assert url_permissions(resources) == {name: PUBLIC for name in FUNCTIONS}


def test_aws_iam_function_urls_are_open_to_no_one():
    resources = translated({**EVERY_FUNCTION, "FunctionUrlAuthType": "AWS_IAM"})
    assert urls(resources) == set(FUNCTIONS)
    assert url_permissions(resources) == {}


def test_defaults_make_the_predict_function_public_and_nothing_else():
    resources = translated({"ModelBucket": "models"})
    assert urls(resources) == {"PredictFunction"}
    assert url_permissions(resources) == {"PredictFunction": PUBLIC}


def _without_explicit_permissions(text: str) -> str:
    """The template as it was: the Function URL permissions left to SAM."""
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("  ") and not line.startswith("   "):
            skipping = line.strip().startswith(tuple(f"{f}UrlPublic" for f in FUNCTIONS))
        if not skipping:
            kept.append(line)
    return "".join(kept)


def test_sam_writes_no_permission_for_auth_type_from_a_parameter():
    """Why the template holds the statements itself: with them left to SAM, a public URL
    answers every call 403. With a literal NONE, SAM writes both."""
    bare = _without_explicit_permissions(TEMPLATE.read_text())
    assert "UrlPublic" not in bare.split("Outputs:")[0]
    assert url_permissions(translated(EVERY_FUNCTION, bare)) == {}
    literal = bare.replace("AuthType: !Ref FunctionUrlAuthType", "AuthType: NONE")
    resources = json.loads(_translate(literal, json.dumps(EVERY_FUNCTION, sort_keys=True)))
    assert url_permissions(deployed(resources, EVERY_FUNCTION)) == \
        {name: PUBLIC for name in FUNCTIONS}


def _lambda_functions(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in resources.items()
            if r["Type"] == "AWS::Lambda::Function"}


def test_every_handler_imports_from_what_the_function_ships():
    """Zip functions: the Handler, imported with CodeUri as the task root. The image: its
    Dockerfile's CMD (the translated function has no Handler), imported from the repo."""
    functions = _lambda_functions(translated(EVERY_FUNCTION))
    raw = load_template(TEMPLATE)["Resources"]
    handlers = {}
    for name, props in functions.items():
        if props.get("PackageType") == "Image":
            assert "Handler" not in props and "ImageConfig" not in props
            cmd = next(line for line in (ROOT / "Dockerfile").read_text().splitlines()
                       if line.startswith("CMD "))
            handlers[name] = (json.loads(cmd[4:])[0], ROOT)
        else:
            assert props["Runtime"] == "python3.12"
            handlers[name] = (props["Handler"], ROOT / raw[name]["Properties"]["CodeUri"])
    assert set(handlers) == set(FUNCTIONS)
    for name, (handler, task_root) in handlers.items():
        module, _, attribute = handler.rpartition(".")
        result = subprocess.run(
            [sys.executable, "-c", "import importlib, sys; sys.path.insert(0, '.'); "
             f"print(callable(getattr(importlib.import_module({module!r}), {attribute!r})))"],
            cwd=task_root, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": ""})
        assert result.stdout.strip() == "True", (name, handler, result.stderr[-2000:])


def test_each_function_gets_the_environment_it_reads():
    functions = _lambda_functions(translated(EVERY_FUNCTION))
    known = _config_variables(ROOT)
    common = {"MODEL_URI", "MODEL_CACHE_DIR", "API_KEYS", "LOG_FORMAT",
              "RESPONSE_OFFLOAD_URI", "RESPONSE_URL_SECONDS"}
    expected = {"PredictFunction": common | {"BACKEND", "PRELOAD"},
                "AdapterFunction": common | {"BACKEND", "TFSERVING_URL", "REQUEST_TIMEOUT"},
                "LiteRTFunction": common | {"BACKEND", "LITERT_FLAVOUR", "PRELOAD"}}
    backends = {"PredictFunction": "inprocess", "AdapterFunction": "tfserving-rest",
                "LiteRTFunction": "litert"}
    for name, props in functions.items():
        variables = props["Environment"]["Variables"]
        assert set(variables) == expected[name], name
        assert set(variables) <= known, name
        assert variables["BACKEND"] == backends[name]
        assert variables["MODEL_URI"] == {"Fn::Sub": "s3://${ModelBucket}/${ModelPrefix}"}
    assert functions["AdapterFunction"]["Environment"]["Variables"]["TFSERVING_URL"] == \
        {"Ref": "TfServingUrl"}
