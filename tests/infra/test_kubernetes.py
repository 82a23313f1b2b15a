"""infra/tfserving/k8s/: every manifest as a Kubernetes API server would take it.

There is no cluster here, so nothing is applied. Each folder is what one
``kubectl apply -f FOLDER/`` sends, and each resource in it is checked the way the API
server checks it: built-in kinds with kubernetes-validate against Kubernetes' own OpenAPI
schemas, the KServe InferenceService with jsonschema against KServe's CRD schema
(tests/infra/kserve/, see its README). Both strictly: an unknown field is an error, as
kubectl's default server-side field validation (``--validate=strict``) makes it. Then what
the schemas cannot see: a claim or ConfigMap a pod uses is defined, the ConfigMap holds
the files in infra/tfserving/ word for word, the Service finds the pods.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

K8S = ROOT / "infra" / "tfserving" / "k8s"
TFSERVING = ROOT / "infra" / "tfserving"
KSERVE_SCHEMA = Path(__file__).parent / "kserve" / "inferenceservice-v1beta1-schema.json"
KUBERNETES_VERSIONS = ("1.31.0", "1.37.0")
"""An older release still common on managed clusters, and the newest kubernetes-validate
knows."""
CUSTOM_KINDS = {("serving.kserve.io/v1beta1", "InferenceService"): KSERVE_SCHEMA}
FOLDERS = {"tfserving": {"ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                         "PersistentVolumeClaim", "Service"},
           "models-loader": {"Pod"},
           "kserve": {"InferenceService"}}


def resources(folder: str) -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every document of every manifest in ``k8s/folder/``."""
    found = []
    for path in sorted((K8S / folder).glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def every_resource() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{folder}/{name}", doc) for folder in FOLDERS for name, doc in resources(folder)]


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the API server refuses them: every
    object that lists its properties, unless it preserves unknown fields."""
    schema = copy.deepcopy(schema)

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    return schema


def custom_errors(resource: dict[str, Any]) -> list[str]:
    """What KServe's CRD schema (strict) says about ``resource``, one line per error."""
    path = CUSTOM_KINDS[(resource["apiVersion"], resource["kind"])]
    validator = jsonschema.Draft4Validator(strict(json.loads(path.read_text())))
    return sorted(f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
                  for error in validator.iter_errors(resource))


def test_each_folder_is_one_apply_of_the_kinds_it_should_hold():
    """``kubectl apply -f k8s/tfserving/`` must not need KServe's CRD (an InferenceService
    there fails the whole apply on a cluster without KServe)."""
    assert {p.name for p in K8S.iterdir()} == set(FOLDERS)
    for folder, kinds in FOLDERS.items():
        assert {doc["kind"] for _, doc in resources(folder)} == kinds, folder


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("where, resource", [
    pytest.param(where, doc, id=f"{where}:{doc['kind']}") for where, doc in every_resource()
    if (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS])
def test_builtin_kinds_pass_kubernetes_schemas(where, resource, version):
    assert kubernetes_validate.validate(resource, version, strict=True) == version[:-2]


def test_the_inference_service_passes_kserves_schema_in_todays_form():
    ((_, service),) = resources("kserve")
    assert custom_errors(service) == []
    predictor = service["spec"]["predictor"]
    # The v1beta1 form: the runtime chosen by model format, not a per-framework key.
    assert predictor["model"]["modelFormat"] == {"name": "tensorflow"}
    assert not {"tensorflow", "pytorch", "sklearn", "onnx", "triton"} & set(predictor)


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["model"].update(modelFormats=p["model"].pop("modelFormat")),
     ["spec.predictor.model: Additional properties are not allowed ('modelFormats' was "
      "unexpected)"]),
    (lambda p: p["model"]["modelFormat"].pop("name"),
     ["spec.predictor.model.modelFormat: 'name' is a required property"]),
    (lambda p: p.update(minReplicas="one"),
     ["spec.predictor.minReplicas: 'one' is not of type 'integer'"]),
])
def test_kserve_schema_catches_mistakes(change, expected):
    ((_, service),) = resources("kserve")
    broken = copy.deepcopy(service)
    change(broken["spec"]["predictor"])
    assert custom_errors(broken) == expected


def test_kubernetes_schema_catches_an_unknown_field():
    deployment = next(doc for _, doc in resources("tfserving") if doc["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError) as info:
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    assert "'readinesProbe' was unexpected" in info.value.message


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for where, doc in every_resource():
        if doc["kind"] == "Pod":
            specs.append((where, doc["spec"]))
        elif doc["kind"] == "Deployment":
            specs.append((where, doc["spec"]["template"]["spec"]))
    return specs


def test_every_volume_a_pod_mounts_is_defined():
    """The claim in tfserving/ (the loader mounts the same one); the ConfigMap beside the
    Deployment that uses it."""
    defined = {(doc["kind"], doc["metadata"]["name"]): where for where, doc in every_resource()}
    used = set()
    for where, spec in _pod_specs():
        for volume in spec["volumes"]:
            if "persistentVolumeClaim" in volume:
                key = ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
                assert defined.get(key) == "tfserving/pvc.yaml", (where, key)
            elif "configMap" in volume:
                key = ("ConfigMap", volume["configMap"]["name"])
                assert defined.get(key, "").split("/")[0] == where.split("/")[0], (where, key)
            else:
                raise AssertionError(f"{where}: volume {volume['name']} is neither")
            used.add(key)
        mounts = {m["name"] for c in spec["containers"] for m in c.get("volumeMounts", [])}
        assert mounts == {v["name"] for v in spec["volumes"]}, where
    assert used == {("PersistentVolumeClaim", "tfserving-models"),
                    ("ConfigMap", "tfserving-config")}


def test_the_configmap_holds_the_config_files_word_for_word():
    config_map = next(doc for _, doc in resources("tfserving") if doc["kind"] == "ConfigMap")
    assert sorted(config_map["data"]) == ["batching_parameters.txt", "models.config",
                                          "monitoring.config"]
    for name, text in config_map["data"].items():
        assert text == (TFSERVING / name).read_text(), name


def test_the_service_reaches_the_deployments_pods_on_named_ports():
    by_kind = {doc["kind"]: doc for _, doc in resources("tfserving")}
    deployment, service = by_kind["Deployment"], by_kind["Service"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert {p["targetPort"]: p["port"] for p in service["spec"]["ports"]} == ports
    target = by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
