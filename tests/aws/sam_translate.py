"""template.yaml through AWS's own SAM translator, the step `sam deploy` has CloudFormation run.

    .venv-tools/bin/python tests/aws/sam_translate.py template.yaml '{"ModelBucket": "b"}'

(``-`` for the template on standard input) prints the CloudFormation the translator
emits for those parameter values (the rest at their defaults), as JSON. It runs in
.venv-tools, where aws-sam-cli brings `samtranslator`; the project's own environment does
not have it. Local code and image locations are replaced by placeholders first, as `sam
package` replaces them by S3 and ECR addresses: the translator accepts nothing else.
Offline: no AWS call is made (the managed-policy lookup gets an empty table: the template
names no managed policy).
"""

from __future__ import annotations

import json
import sys

PLACEHOLDER_CODE = "s3://sam-translate-placeholder/code.zip"
PLACEHOLDER_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sam-translate:placeholder"


def translate(text: str, parameters: dict[str, str]) -> dict:
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse(text)
    for resource in (template.get("Resources") or {}).values():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        properties = resource.setdefault("Properties", {})
        if properties.get("PackageType") == "Image":
            properties["ImageUri"] = PLACEHOLDER_IMAGE
        else:
            properties["CodeUri"] = PLACEHOLDER_CODE

    class NoManagedPolicies:
        """The template names no managed policy by name; a lookup would need AWS."""

        def load(self) -> dict[str, str]:
            return {}

    return transform(template, parameters, NoManagedPolicies())


def main(argv: list[str]) -> int:
    path, parameters = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    print(json.dumps(translate(text, parameters), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
