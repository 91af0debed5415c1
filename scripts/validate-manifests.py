#!/usr/bin/env python3
"""Validate Kubernetes manifests offline against the schemas bundled with kubernetes-validate.

usage: validate-manifests.py K8S_VERSION FILE...   (multi-document YAML; `---` separated)

Custom resources have no bundled schema. The kinds in CRD_KINDS are checked only for the
shape every object has (apiVersion, kind, metadata.name, spec); any other kind without a
schema is an error, so a typo in `kind:` cannot slip through as "unknown".
Quiet on success (one summary line); one line per problem and exit 1 on failure.
"""
import sys

import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

# Custom resources used by the chart and deploy/: Prometheus Operator, Istio, Traefik.
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("install.istio.io/v1alpha1", "IstioOperator"),
    ("traefik.io/v1alpha1", "Middleware"),
    ("traefik.io/v1alpha1", "IngressRoute"),
    ("traefik.io/v1alpha1", "TLSOption"),
}


def main() -> int:
    version, files = sys.argv[1], sys.argv[2:]
    failures, checked, crds = [], 0, 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            try:
                docs = [d for d in yaml.safe_load_all(f) if d]
            except yaml.YAMLError as e:
                failures.append(f"{path}: not YAML: {e}")
                continue
        for doc in docs:
            kind, api = doc.get("kind", "?"), doc.get("apiVersion", "?")
            name = (doc.get("metadata") or {}).get("name", "?")
            where = f"{path}: {kind}/{name}"
            if (api, kind) in CRD_KINDS:
                if not name or name == "?" or "spec" not in doc:
                    failures.append(f"{where}: a custom resource needs metadata.name and spec")
                crds += 1
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except ValidationError as e:
                at = ".".join(str(p) for p in e.path)
                failures.append(f"{where}: {at}: {e.message}")
            except SchemaNotFoundError:
                failures.append(f"{where}: no schema for {api} {kind} in Kubernetes {version}")
    for line in failures:
        print(f"FAIL {line}", file=sys.stderr)
    if failures:
        return 1
    print(f"  {checked} objects valid against Kubernetes {version}; "
          f"{crds} custom resources checked for shape only (no bundled CRD schemas)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
