#!/usr/bin/env bash
# Offline checks of deploy/dynamodb/ (the DynamoDB tables and IAM policies of certgate):
#   - cfn-lint on cloudformation.yaml (and a deliberately broken copy must fail);
#   - every iam/*.json parses (python3 -m json.tool);
#   - terraform/*.tf parsed with python-hcl2 and compared with the CloudFormation template:
#     tables, keys, attribute definitions (exactly the fixed layout), GSIs, TTL, PITR, SSE,
#     deletion protection, billing default, default names, outputs; the four IAM policies
#     (actions x resources) equal in CloudFormation, Terraform and iam/*.json, and equal to the
#     least-privilege sets;
#   - against a local moto server: the three tables created with boto3 from the template's own
#     Properties (on-demand and provisioned), TTL + PITR enabled, items put, by_expiry queried
#     with `expires_at <= :t`, by_principal queried, certgate's audited TransactWriteItems
#     (change + record + head) applied and the chain queried back, and every `# runbook:`
#     block of deploy/dynamodb/README.md run as written with the aws CLI.
# The checks themselves are Python, in scripts/deploy_dynamodb/.
# Tools go into .venv from PyPI (cfn-lint, python-hcl2, moto[server], boto3, awscli); no AWS
# account and no terraform binary are needed. Quiet on success, loud on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

D=deploy/dynamodb
REQS=("cfn-lint==1.*" "python-hcl2==8.*" "moto[server]==5.2.5" "boto3==1.*" "awscli==1.*")

[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python
# pip contacts the index only for requirements that are not already satisfied.
"$PY" -m pip install --quiet --disable-pip-version-check "${REQS[@]}" >/dev/null

out=$(mktemp -d)
moto_pid=""
cleanup() {
  if [ -n "$moto_pid" ] && kill -0 "$moto_pid" 2>/dev/null; then
    kill "$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  rm -rf "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }

for f in "$D/cloudformation.yaml" "$D/README.md" "$D"/terraform/{main,variables,outputs,iam}.tf \
  "$D"/iam/certgate-{server,server-admin-api,operator,admin}.json; do
  [ -f "$f" ] || fail "$f is missing"
done

# 1. cfn-lint (errors, warnings and informational findings all fail).
.venv/bin/cfn-lint --include-checks I -- "$D/cloudformation.yaml" >"$out/cfn-lint" 2>&1 \
  || { cat "$out/cfn-lint" >&2; fail "cfn-lint $D/cloudformation.yaml"; }
sed 's/PointInTimeRecoveryEnabled: true/PointInTimeRecoveryEnabld: true/' "$D/cloudformation.yaml" >"$out/bad.yaml"
if .venv/bin/cfn-lint -- "$out/bad.yaml" >/dev/null 2>&1; then
  fail "cfn-lint accepted a template with a misspelt property"
fi

# 2. The IAM documents are JSON.
for f in "$D"/iam/*.json; do
  "$PY" -m json.tool "$f" >/dev/null 2>"$out/json" || { cat "$out/json" >&2; fail "$f is not JSON"; }
done

# 3. Terraform ↔ CloudFormation ↔ IAM JSON, and the fixed layout.
"$PY" scripts/deploy_dynamodb/check.py static || fail "templates disagree (above)"

# 4. The tables, created from the CloudFormation definitions, on a local moto server.
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$out/moto.log" 2>&1 &
moto_pid=$!
"$PY" scripts/deploy_dynamodb/check.py moto "http://127.0.0.1:$port" \
  || { grep -v -e "HTTP/1.1\" 200 -$" -e "development server" -e "Running on" -e "CTRL+C" "$out/moto.log" | tail -20 >&2; fail "moto checks (above)"; }

echo "deploy/dynamodb: cfn-lint, IAM JSON, Terraform/CloudFormation/IAM agreement and moto table + runbook checks passed"
