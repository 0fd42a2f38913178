"""The Kubernetes manifests and other YAML of the deployment recipes (envoy/istio, envoy/gateway,
envoy/placement, envoy/prometheus.yml, envoy/docker-compose.yml, envoy/docker-compose.fleet.yml).

There is no cluster here, so the manifests are checked against the APIs they use: the fields of
Istio's WasmPlugin (extensions.istio.io/v1alpha1), Envoy Gateway's EnvoyExtensionPolicy
(gateway.envoyproxy.io/v1alpha1) and the Gateway API objects they reference. Every filter
configuration embedded in them is put into envoy/envoy.yaml's filter `configuration` and run
through `envoy --mode validate`, which loads the .wasm and calls the filter's configuration check.
"""
import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from harness import ROOT, WASM, envoy_binary, render_config

ENVOY_DIR = ROOT / "envoy"
K8S_FILES = sorted((ENVOY_DIR / "istio").glob("*.yaml")) + sorted((ENVOY_DIR / "gateway").glob("*.yaml"))
YAML_FILES = K8S_FILES + sorted((ENVOY_DIR / "placement").glob("*.yaml")) + [
    ENVOY_DIR / "prometheus.yml",
    ENVOY_DIR / "docker-compose.yml",
    ENVOY_DIR / "docker-compose.fleet.yml",
]


def documents(path: Path) -> list:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def objects(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p in K8S_FILES for d in documents(p) if d.get("kind") == kind]


def label(path: Path, doc: dict) -> str:
    return f"{path.relative_to(ENVOY_DIR)}:{doc['kind']}/{doc['metadata']['name']}"


SHA256 = re.compile(r"^[a-f0-9]{64}$")
# The one placeholder allowed where a checksum is needed: the WasmPlugin CRD rejects it (not 64
# hex digits), so a manifest applied without the real checksum fails at once, not at fetch time.
SHA256_PLACEHOLDER = "REPLACE_WITH_SHA256_OF_THE_WASM"
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


# --- every YAML file ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ENVOY_DIR)))
def test_yaml_parses(path):
    docs = documents(path)
    assert docs and all(isinstance(d, dict) for d in docs)


KINDS = {
    "WasmPlugin": "extensions.istio.io/v1alpha1",
    "EnvoyExtensionPolicy": "gateway.envoyproxy.io/v1alpha1",
    "GatewayClass": "gateway.networking.k8s.io/v1",
    "Gateway": "gateway.networking.k8s.io/v1",
    "HTTPRoute": "gateway.networking.k8s.io/v1",
}
CLUSTER_SCOPED = {"GatewayClass"}


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: str(p.relative_to(ENVOY_DIR)))
def test_kubernetes_objects_have_api_version_kind_and_metadata(path):
    for doc in documents(path):
        assert doc.get("kind") in KINDS, doc.get("kind")
        assert doc["apiVersion"] == KINDS[doc["kind"]]
        metadata = doc["metadata"]
        assert DNS_SUBDOMAIN.match(metadata["name"]) and len(metadata["name"]) <= 253
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in metadata
        else:
            assert DNS_SUBDOMAIN.match(metadata["namespace"])
        assert isinstance(doc["spec"], dict)


# --- Istio WasmPlugin ---------------------------------------------------------------------------

# The fields of istio.extensions.v1alpha1.WasmPlugin (extensions/v1alpha1/wasm.proto).
WASMPLUGIN_FIELDS = {
    "selector", "targetRef", "targetRefs", "url", "sha256", "imagePullPolicy", "imagePullSecret",
    "verificationKey", "pluginConfig", "pluginName", "phase", "priority", "failStrategy",
    "vmConfig", "match", "type",
}
WASMPLUGINS = objects("WasmPlugin")


def test_there_are_wasmplugins_for_oci_http_and_file():
    schemes = {urlparse(doc["spec"]["url"]).scheme for _, doc in WASMPLUGINS}
    assert {"oci", "https", "file"} <= schemes


@pytest.mark.parametrize("path, doc", WASMPLUGINS, ids=[label(p, d) for p, d in WASMPLUGINS])
def test_wasmplugin_follows_the_istio_api(path, doc):
    spec = doc["spec"]
    assert set(spec) <= WASMPLUGIN_FIELDS, set(spec) - WASMPLUGIN_FIELDS
    # Where: exactly one of selector and targetRefs.
    assert ("selector" in spec) != ("targetRefs" in spec)
    if "selector" in spec:
        labels = spec["selector"]["matchLabels"]
        assert labels and all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items())

    url = urlparse(spec["url"])
    assert url.scheme in {"oci", "http", "https", "file"}
    sha256 = spec.get("sha256")
    if url.scheme == "file":
        assert sha256 is None, "Istio does not check a sha256 for file:// URLs: do not suggest it does"
        assert url.path.endswith(".wasm")
    elif url.scheme in {"http", "https"}:
        assert sha256 is not None, "pin a downloaded module by its sha256"
        assert SHA256.match(sha256) or sha256 == SHA256_PLACEHOLDER
    else:
        assert sha256 is None or SHA256.match(sha256)
        assert url.netloc and (":" in url.path or "@sha256:" in url.path), "an image tag or digest"

    assert spec.get("imagePullPolicy", "IfNotPresent") in {"UNSPECIFIED_POLICY", "IfNotPresent", "Always"}
    assert spec["phase"] in {"UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"}
    assert isinstance(spec["priority"], int) and -(2**31) <= spec["priority"] < 2**31
    # FAIL_RELOAD (Istio 1.27+): a crashed VM is replaced, a fetch failure fails closed
    # (docs/src/operating/failures.md); never FAIL_OPEN.
    assert spec["failStrategy"] == "FAIL_RELOAD", "a limiter reloads a crashed VM, never fails open"
    assert spec["pluginName"] == "ratelimit"
    assert isinstance(spec["pluginConfig"], dict)


def numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from numbers(v)


def test_wasmplugin_configs_survive_istios_struct():
    """pluginConfig becomes a protobuf Struct, whose numbers are doubles: integers stay exact
    only up to 2^53."""
    for _, doc in WASMPLUGINS:
        assert all(abs(n) < 2**53 for n in numbers(doc["spec"]["pluginConfig"]))


def test_wasmplugins_on_a_proxy_use_distinct_key_prefixes():
    """Istio sets no vm_id, so every WasmPlugin on a proxy shares one shared-data namespace.
    Manifests with the same namespace/name are alternatives for one plugin (applying one replaces
    the other); distinct plugins need distinct store.key_prefix values. Every prefix starts with
    "ratelimit" so that one stats inclusion prefix (wasmcustom.ratelimit) covers them all."""
    prefix_by_plugin: dict[tuple, set] = {}
    for _, doc in WASMPLUGINS:
        key = (doc["metadata"]["namespace"], doc["metadata"]["name"])
        prefix = doc["spec"]["pluginConfig"].get("store", {}).get("key_prefix", "ratelimit")
        assert prefix.startswith("ratelimit")
        prefix_by_plugin.setdefault(key, set()).add(prefix)
    for prefixes in prefix_by_plugin.values():
        assert len(prefixes) == 1, "alternatives of one plugin keep its counters' prefix"
    all_prefixes = [p for prefixes in prefix_by_plugin.values() for p in prefixes]
    assert len(all_prefixes) == len(set(all_prefixes))
    assert "ratelimit" not in all_prefixes, "leave the default prefix to plain Envoy"


# --- Envoy Gateway ------------------------------------------------------------------------------

POLICIES = objects("EnvoyExtensionPolicy")
WASM_FIELDS = {"name", "rootID", "code", "config", "failOpen", "env"}
CODE_FIELDS = {"type", "http", "image", "pullPolicy"}
IMAGE_FIELDS = {"url", "sha256", "pullSecretRef", "tls"}
HTTP_FIELDS = {"url", "sha256", "tls"}


def test_there_is_an_envoy_extension_policy():
    assert POLICIES


@pytest.mark.parametrize("path, doc", POLICIES, ids=[label(p, d) for p, d in POLICIES])
def test_envoy_extension_policy_follows_the_envoy_gateway_api(path, doc):
    spec = doc["spec"]
    namespace = doc["metadata"]["namespace"]
    assert set(spec) <= {"targetRef", "targetRefs", "targetSelectors", "priority", "wasm", "extProc", "lua"}
    # targetRefs: Gateway API objects of the policy's namespace, defined in envoy/gateway.
    defined = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
               for p in K8S_FILES for d in documents(p)}
    assert spec["targetRefs"]
    for ref in spec["targetRefs"]:
        assert set(ref) <= {"group", "kind", "name", "sectionName"}
        assert ref["group"] == "gateway.networking.k8s.io"
        assert ref["kind"] in {"Gateway", "HTTPRoute", "GRPCRoute", "TCPRoute", "UDPRoute", "TLSRoute"}
        assert (ref["kind"], ref["name"], namespace) in defined

    assert spec["wasm"]
    for wasm in spec["wasm"]:
        assert set(wasm) <= WASM_FIELDS, set(wasm) - WASM_FIELDS
        assert wasm["rootID"] == "ratelimit"
        assert wasm["failOpen"] is False, "a limiter fails closed"
        assert isinstance(wasm["config"], dict)
        code = wasm["code"]
        assert set(code) <= CODE_FIELDS
        assert code["type"] in {"HTTP", "Image"}
        # The CRD's rules: type HTTP <=> http is set, type Image <=> image is set.
        assert ("http" in code) == (code["type"] == "HTTP")
        assert ("image" in code) == (code["type"] == "Image")
        assert code.get("pullPolicy", "IfNotPresent") in {"IfNotPresent", "Always"}
        if code["type"] == "Image":
            image = code["image"]
            assert set(image) <= IMAGE_FIELDS
            assert not image["url"].startswith(("oci://", "http://", "https://")), "registry/repository:tag"
            assert "sha256" not in image or SHA256.match(image["sha256"])
        else:
            http = code["http"]
            assert set(http) <= HTTP_FIELDS
            assert urlparse(http["url"]).scheme in {"http", "https"}
            assert SHA256.match(http["sha256"])


def test_gateway_objects_reference_each_other():
    by_kind = {}
    for p in K8S_FILES:
        for d in documents(p):
            by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    for gateway in by_kind["Gateway"].values():
        assert gateway["spec"]["gatewayClassName"] in by_kind["GatewayClass"]
        assert all({"name", "protocol", "port"} <= set(l) for l in gateway["spec"]["listeners"])
    for route in by_kind["HTTPRoute"].values():
        for parent in route["spec"]["parentRefs"]:
            assert parent["name"] in by_kind["Gateway"]
        for rule in route["spec"]["rules"]:
            assert all({"name", "port"} <= set(b) for b in rule["backendRefs"])


# --- every embedded filter configuration, checked by Envoy --------------------------------------

def embedded_configs() -> list[tuple[str, dict]]:
    configs = [(label(p, d), d["spec"]["pluginConfig"]) for p, d in WASMPLUGINS]
    for p, d in POLICIES:
        configs += [(f"{label(p, d)}:{w['name']}", w["config"]) for w in d["spec"]["wasm"]]
    return configs


EMBEDDED = embedded_configs()
# A negative control: the check must reject a broken configuration, or it proves nothing.
BROKEN = ("broken (negative control)", {"rules": [{"name": "x", "limits": [{"requests": 1, "window": "5 parsecs"}]}]})


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Runs `envoy --mode validate` on envoy.yaml with each configuration, in parallel (~1 s each).
    The JSON is written with sorted keys: Istio (protobuf Struct) and Kubernetes do not keep key
    order, so a configuration must not depend on it."""
    assert WASM.exists(), f"{WASM} is missing: make build"
    workdir = tmp_path_factory.mktemp("envoy-manifests")

    def validate(index_and_config):
        index, (_, config) = index_and_config
        envoy_config = render_config(json.dumps(config, sort_keys=True), upstream_port=8080, listen_port=10000, admin_port=9901)
        path = workdir / f"envoy-{index}.yaml"
        path.write_text(yaml.safe_dump(envoy_config))
        return subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )

    todo = EMBEDDED + [BROKEN]
    with ThreadPoolExecutor(max_workers=len(todo)) as pool:
        results = list(pool.map(validate, enumerate(todo)))
    return {name: result for (name, _), result in zip(todo, results)}


@pytest.mark.parametrize("name", [name for name, _ in EMBEDDED])
def test_embedded_filter_configuration_is_valid(validated, name):
    result = validated[name]
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "ratelimit: configuration loaded" in output


def test_validate_mode_rejects_an_invalid_filter_configuration(validated):
    result = validated[BROKEN[0]]
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ratelimit: invalid configuration" in output and '"5 parsecs"' in output
