"""template.yaml: `sam validate --lint` (offline) and the project's own checks of what lint
lets through (infra/check_template.py), each shown to catch its mistake."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess

import pytest

from infra.check_template import check, main
from tests.aws.rie import find_sam
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"
TODAY = dt.date(2026, 11, 22)
SAM_ENV = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
needs_sam = pytest.mark.skipif(find_sam() is None, reason=(
    "sam is missing: install aws-sam-cli (requirements-tools.lock) into .venv-tools or put "
    "sam on PATH"))


def test_template_passes_the_project_checks(capsys):
    assert check(TEMPLATE, today=TODAY) == []
    assert main([str(TEMPLATE)]) == 0
    assert capsys.readouterr().out == f"{TEMPLATE}: fine\n"


ZIP_FUNCTIONS = ("AdapterFunction", "LiteRTFunction")


def problems_after(tmp_path, old: str, new: str) -> list[str]:
    """The problems found once every ``old`` in the template is ``new``."""
    text = TEMPLATE.read_text()
    assert old in text, old
    changed = tmp_path / "template.yaml"
    changed.write_text(text.replace(old, new))
    return [str(p) for p in check(changed, today=TODAY, base=ROOT)]


@pytest.mark.parametrize("old, new, expected", [
    ("MemorySize: 3008", "MemorySize: 10241",
     ["PredictFunction: MemorySize must be 128..10240 MB, got 10241"]),
    ("MemorySize: 512", "MemorySize: 64",
     ["AdapterFunction: MemorySize must be 128..10240 MB, got 64"]),
    ("        Size: 1024", "        Size: 20000",
     ["PredictFunction: EphemeralStorage.Size must be 512..10240 MB, got {'Size': 20000}"]),
    ("Runtime: python3.12", "Runtime: python3.99",
     [f"{fn}: Runtime 'python3.99' is not a Lambda runtime (Python ones: "
      "python3.9, python3.10, python3.11, python3.12, python3.13, python3.14)"
      for fn in ZIP_FUNCTIONS]),
    ("Runtime: python3.12", "Runtime: python3.10",
     [problem for fn in ZIP_FUNCTIONS for problem in (
         f"{fn}: Runtime python3.10 is deprecated since 2026-10-31",
         f"{fn}: Runtime python3.10 is outside the project's requires-python >=3.11,<3.14")]),
    ("Runtime: python3.12", "Runtime: python3.14",
     [f"{fn}: Runtime python3.14 is outside the project's requires-python >=3.11,<3.14"
      for fn in ZIP_FUNCTIONS]),
    ("Runtime: python3.12", "Runtime: nodejs22.x",
     [f"{fn}: Runtime nodejs22.x is not Python; the handler is" for fn in ZIP_FUNCTIONS]),
    ("Handler: functions.platforms.aws.lambda_handler", "Handler: functions.platforms.aws.handler",
     [f"{fn}: handler 'functions.platforms.aws.handler': aws.py defines no handler()"
      for fn in ZIP_FUNCTIONS]),
    ("BACKEND: tfserving-rest", "BACKEND: tfserving",
     ["AdapterFunction: BACKEND 'tfserving' is not one of inprocess, tfserving-rest, "
      "tfserving-grpc, litert"]),
    ("REQUEST_TIMEOUT:", "REQUEST_TIMEOUT_S:",
     ["AdapterFunction: environment variable REQUEST_TIMEOUT_S is not read by the function "
      "(functions/config.py); a typo?"]),
])
def test_each_check_catches_its_mistake(tmp_path, old, new, expected):
    assert problems_after(tmp_path, old, new) == expected


URL_FUNCTIONS = ("PredictFunction",) + ZIP_FUNCTIONS


@pytest.mark.parametrize("old, new, expected", [
    ("Action: lambda:InvokeFunction\n", "Action: lambda:GetFunction\n",
     [f"{fn}: FunctionUrlConfig.AuthType is !Ref FunctionUrlAuthType, for which SAM writes no "
      "permission: with FunctionUrlAuthType=NONE every call to the URL is refused (403) unless "
      'an AWS::Lambda::Permission gives lambda:InvokeFunction to "*" with '
      "InvokedViaFunctionUrl: true" for fn in URL_FUNCTIONS]),
    ("FunctionUrlAuthType: NONE\n", "FunctionUrlAuthType: AWS_IAM\n",
     [f'{fn}UrlPublicAccess: a public Function URL needs Principal "*" and '
      'FunctionUrlAuthType: "NONE"' for fn in URL_FUNCTIONS]),
    ("Condition: PublicAdapterUrl", "Condition: HasAdapter",
     [f"AdapterFunctionUrlPublic{kind}: made when FunctionUrlAuthType='AWS_IAM', "
      "TfServingUrl='x'; it must be made exactly when FunctionUrlAuthType is NONE and "
      "AdapterFunction exists" for kind in ("Access", "Invoke")]),
    ("Condition: PublicLiteRTUrl", "Condition: PublicUrls",
     [f"LiteRTFunctionUrlPublic{kind}: made when FunctionUrlAuthType='NONE', "
      "LiteRTFlavour='none'; it must be made exactly when FunctionUrlAuthType is NONE and "
      "LiteRTFunction exists" for kind in ("Access", "Invoke")]),
])
def test_public_function_urls_need_both_statements_made_when_public(tmp_path, old, new,
                                                                    expected):
    """SAM writes no permission for ``AuthType: !Ref``: without both statements a public
    URL answers every call 403; made for AWS_IAM too, they would open it to anyone."""
    assert problems_after(tmp_path, old, new) == expected


def test_timeouts_beyond_lambda_and_the_api(tmp_path):
    assert problems_after(tmp_path, "Timeout: 30 #", "Timeout: 901 #") == [
        "PredictFunction: Timeout must be 1..900 s, got 901",
        "PredictFunction: Timeout is 901 s but its HttpApi event Predict stops waiting after "
        "30 s; clients would get a 503 instead of the answer",
        "PredictFunction: Timeout is 901 s but its HttpApi event Root stops waiting after 30 s; "
        "clients would get a 503 instead of the answer",
        "PredictFunction: Timeout is 901 s but its HttpApi event Health stops waiting after "
        "30 s; clients would get a 503 instead of the answer",
        "AdapterFunction: Timeout must be 1..900 s, got 901",
        "LiteRTFunction: Timeout must be 1..900 s, got 901",
    ]


def test_dockerfile_base_image_and_command(tmp_path):
    dockerfile = (ROOT / "Dockerfile").read_text()
    (tmp_path / "Dockerfile").write_text(
        dockerfile.replace("lambda/python:3.12", "lambda/python:3.9")
                  .replace('CMD ["functions.platforms.aws.lambda_handler"]',
                           'CMD ["functions.platforms.aws.main"]'))
    for name in ("functions", "deploy"):
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    (tmp_path / "template.yaml").write_text(TEMPLATE.read_text())
    assert [str(p) for p in check(tmp_path / "template.yaml", today=TODAY)] == [
        "PredictFunction: Dockerfile's base image python3.9 is deprecated since 2025-12-15",
        "PredictFunction: Dockerfile's base image python3.9 is outside the project's "
        "requires-python >=3.11,<3.14",
        "PredictFunction: handler 'functions.platforms.aws.main': aws.py defines no main()",
    ]


def test_pins_that_drift_from_the_lock(tmp_path, monkeypatch):
    lock = tmp_path / "requirements.lock"
    lock.write_text((ROOT / "requirements.lock").read_text().replace("numpy==", "numpy==0.0.1#"))
    for name in ("functions", "pyproject.toml"):
        (tmp_path / name).symlink_to(ROOT / name)
    problems = [str(p) for p in check(TEMPLATE, root=tmp_path, today=TODAY)]
    assert problems == [
        "PredictFunction: deploy/lambda-image/requirements.txt pins numpy==2.4.6, "
        "requirements.lock has 0.0.1",
        "AdapterFunction: deploy/lambda-adapter/requirements.txt pins numpy==2.4.6, "
        "requirements.lock has 0.0.1",
        "LiteRTFunction: deploy/lambda-litert/requirements.txt pins numpy==2.4.6, "
        "requirements.lock has 0.0.1",
    ]


@pytest.mark.slow
@needs_sam
def test_sam_validate_lint_passes():
    result = subprocess.run([find_sam(), "validate", "--lint", "--template", str(TEMPLATE)],
                            cwd=ROOT, env=SAM_ENV, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{TEMPLATE} is a valid SAM Template" in result.stdout + result.stderr


@pytest.mark.slow
@needs_sam
def test_sam_validate_lint_fails_on_a_broken_template(tmp_path):
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("MemorySize: 3008", "MemorySize: 99999"))
    result = subprocess.run([find_sam(), "validate", "--lint", "--template", str(broken)],
                            cwd=ROOT, env=SAM_ENV, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "99999 is greater than the maximum of 32768" in result.stdout + result.stderr


@pytest.mark.slow
@needs_sam
def test_what_lint_lets_through_the_project_checks_catch(tmp_path):
    """Lint's memory bound is 32768 MB; Lambda's is 10240."""
    changed = tmp_path / "template.yaml"
    changed.write_text(TEMPLATE.read_text().replace("MemorySize: 3008", "MemorySize: 10241"))
    result = subprocess.run([find_sam(), "validate", "--lint", "--template", str(changed)],
                            cwd=ROOT, env=SAM_ENV, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [str(p) for p in check(changed, today=TODAY, base=ROOT)] == [
        "PredictFunction: MemorySize must be 128..10240 MB, got 10241"]


@pytest.mark.slow
@needs_sam
def test_sample_events_have_the_envelopes_sam_generates():
    made = subprocess.run([find_sam(), "local", "generate-event", "apigateway", "aws-proxy",
                           "--path", "predict"], env=SAM_ENV, capture_output=True, text=True,
                          timeout=120, check=True)
    generated = json.loads(made.stdout)
    stored = json.loads((ROOT / "events" / "apigw-rest-png.json").read_text())
    assert set(stored) == set(generated)
    assert stored["requestContext"] == generated["requestContext"]
    assert (stored["path"], stored["httpMethod"]) == (generated["path"], "POST")
