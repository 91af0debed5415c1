#!/usr/bin/env bash
# Offline checks of deploy/dynamodb/ (the DynamoDB tables and IAM policies of certgate):
#   - cfn-lint on cloudformation.yaml (and a deliberately broken copy must fail);
#   - every iam/*.json parses (python3 -m json.tool);
#   - terraform/*.tf parsed with python-hcl2 and compared with the CloudFormation template:
#     tables, keys, attribute definitions (exactly the fixed layout), GSIs, TTL, PITR, SSE,
#     deletion protection, billing default, default names, outputs; the three IAM policies
#     (actions x resources) equal in CloudFormation, Terraform and iam/*.json, and equal to the
#     least-privilege sets;
#   - against a local moto server: both tables created with boto3 from the template's own
#     Properties (on-demand and provisioned), TTL + PITR enabled, items put, by_expiry queried
#     with `expires_at <= :t`, by_principal queried, and every `# runbook:` block of
#     deploy/dynamodb/README.md run as written with the aws CLI.
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
  "$D"/iam/certgate-{server,operator,admin}.json; do
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

# Shared Python: the fixed layout, a small CloudFormation intrinsic resolver, the extractors.
read -r -d '' CHECK <<'PY' || true
import json, os, re, socket, subprocess, sys, time
from pathlib import Path

D = Path("deploy/dynamodb")
problems = []
def problem(msg): problems.append(msg)

# The fixed layout (the Rust backend uses exactly this).
LAYOUT = {
    "principals": {
        "hash": "principal_id", "range": None,
        "attributes": {"principal_id": "S"},
        "gsis": {}, "ttl": None,
    },
    "certificates": {
        "hash": "serial_number", "range": None,
        "attributes": {"serial_number": "S", "principal_id": "S", "expiry_bucket": "S", "expires_at": "N"},
        "gsis": {"by_principal": ("principal_id", "expires_at", "ALL"),
                 "by_expiry": ("expiry_bucket", "expires_at", "ALL")},
        "ttl": ("purge_at", True),
    },
}
ROLE_BY_HASH = {v["hash"]: k for k, v in LAYOUT.items()}
DEFAULT_NAMES = {"principals": "certgate_principals", "certificates": "certgate_certificates"}

T = ["principals", "certificates"]
IDX = [t + "/index/*" for t in T]
def grant(actions, resources): return {("dynamodb:" + a, r) for a in actions for r in resources}
OPERATOR = grant(["GetItem", "PutItem", "UpdateItem", "Scan"], T) | grant(["Query"], IDX)
POLICIES = {
    "server": grant(["GetItem"], T),
    "operator": OPERATOR,
    "admin": OPERATOR | grant(["CreateTable", "DescribeTable", "UpdateTable", "UpdateTimeToLive",
                               "DescribeTimeToLive", "BatchWriteItem"], T),
}

# ---- CloudFormation -------------------------------------------------------------------
def load_cfn():
    from cfnlint.decode import decode_str
    tpl, matches = decode_str((D / "cloudformation.yaml").read_text())
    if matches or tpl is None:
        sys.exit(f"FAIL: cloudformation.yaml does not parse: {matches}")
    return json.loads(json.dumps(tpl))  # plain dicts and lists

NOVALUE = object()

def resolver(tpl, overrides=None, stack="cgcheck", region="us-east-1"):
    params = {k: v.get("Default") for k, v in tpl.get("Parameters", {}).items()}
    params.update(overrides or {})
    pseudo = {"AWS::Region": region, "AWS::StackName": stack, "AWS::AccountId": "123456789012",
              "AWS::Partition": "aws"}
    conds = {}

    def cond(c):
        if isinstance(c, dict):
            (fn, arg), = c.items()
            if fn == "Fn::Equals": return res(arg[0]) == res(arg[1])
            if fn == "Fn::Not": return not cond(arg[0])
            if fn == "Fn::And": return all(cond(x) for x in arg)
            if fn == "Fn::Or": return any(cond(x) for x in arg)
            if fn == "Condition": return cond_named(arg)
        raise ValueError(f"unsupported condition {c!r}")

    def cond_named(name):
        if name not in conds:
            conds[name] = cond(tpl["Conditions"][name])
        return conds[name]

    def sub(text):
        def one(m):
            key = m.group(1)
            if key in params: return str(params[key])
            if key in pseudo: return pseudo[key]
            raise ValueError(f"unsupported Fn::Sub variable {key}")
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def res(node):
        if isinstance(node, dict):
            if len(node) == 1:
                (fn, arg), = node.items()
                if fn == "Ref":
                    if arg == "AWS::NoValue": return NOVALUE
                    if arg in params: return params[arg]
                    if arg in pseudo: return pseudo[arg]
                    raise ValueError(f"unsupported Ref {arg}")
                if fn == "Fn::If":
                    return res(arg[1] if cond_named(arg[0]) else arg[2])
                if fn == "Fn::Sub" and isinstance(arg, str):
                    return sub(arg)
                if fn.startswith("Fn::"):
                    raise ValueError(f"unsupported {fn}")
            out = {k: res(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not NOVALUE}
        if isinstance(node, list):
            return [x for x in (res(v) for v in node) if x is not NOVALUE]
        return node
    return res

def cfn_tables(tpl, res):
    """role → (logical id, resolved Properties)."""
    found = {}
    for lid, r in tpl["Resources"].items():
        if r["Type"] != "AWS::DynamoDB::Table": continue
        props = res(r["Properties"])
        hashes = [k["AttributeName"] for k in props["KeySchema"] if k["KeyType"] == "HASH"]
        role = ROLE_BY_HASH.get(hashes[0] if hashes else None)
        if role is None or role in found:
            problem(f"cloudformation: unexpected table {lid}"); continue
        found[role] = (lid, props)
    return found

def cfn_layout(lid, p, r):
    ks = {k["KeyType"]: k["AttributeName"] for k in p["KeySchema"]}
    ttl = p.get("TimeToLiveSpecification")
    return {
        "hash": ks.get("HASH"), "range": ks.get("RANGE"),
        "attributes": {a["AttributeName"]: a["AttributeType"] for a in p["AttributeDefinitions"]},
        "attribute_count": len(p["AttributeDefinitions"]),
        "gsis": {g["IndexName"]: ({k["KeyType"]: k["AttributeName"] for k in g["KeySchema"]}.get("HASH"),
                                  {k["KeyType"]: k["AttributeName"] for k in g["KeySchema"]}.get("RANGE"),
                                  g["Projection"]["ProjectionType"])
                 for g in p.get("GlobalSecondaryIndexes", [])},
        "ttl": (ttl["AttributeName"], ttl["Enabled"] is True) if ttl else None,
        "pitr": p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True,
        "sse": p.get("SSESpecification", {}).get("SSEEnabled") is True,
        "deletion_protection": p.get("DeletionProtectionEnabled") is True,
        "billing": p.get("BillingMode"),
        "name": p.get("TableName"),
        "retain": r.get("DeletionPolicy") == "Retain" and r.get("UpdateReplacePolicy") == "Retain",
    }

def cfn_resource_token(node, lid_role):
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        ga = node["Fn::GetAtt"]
        lid, attr = ga if isinstance(ga, list) else ga.split(".", 1)
        if attr == "Arn" and lid in lid_role: return lid_role[lid]
    if isinstance(node, dict) and isinstance(node.get("Fn::Sub"), str):
        m = re.fullmatch(r"\$\{(\w+)\.Arn\}(/index/\*)?", node["Fn::Sub"])
        if m and m.group(1) in lid_role: return lid_role[m.group(1)] + (m.group(2) or "")
    return f"?{json.dumps(node)}"

def statements_grants(statements, token, where):
    grants = set()
    for st in statements:
        if st.get("Effect") != "Allow" or set(st) - {"Sid", "Effect", "Action", "Resource"}:
            problem(f"{where}: statement {st.get('Sid')}: only Allow with Action and Resource expected")
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for a in actions:
            for r in resources:
                grants.add((a, token(r)))
    return grants

# ---- Terraform -------------------------------------------------------------------------
def unq(v):
    """python-hcl2 8 keeps the quotes of string literals."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"': return v[1:-1]
    return v

def blocks(doc, kind):
    """resource/data blocks → {(type, name): body}."""
    out = {}
    for entry in doc.get(kind, []):
        for typ, named in entry.items():
            for name, body in named.items():
                out[(unq(typ), unq(name))] = body
    return out

def load_tf():
    import hcl2
    docs = {}
    for f in ["main", "variables", "outputs", "iam"]:
        with open(D / "terraform" / f"{f}.tf") as fh:
            docs[f] = hcl2.load(fh)
    variables = {}
    for doc in docs.values():
        for entry in doc.get("variable", []):
            for name, body in entry.items():
                variables[unq(name)] = unq(body.get("default"))
    locals_ = {}
    for doc in docs.values():
        for entry in doc.get("locals", []):
            locals_.update({k: v for k, v in entry.items() if not k.startswith("__")})
    resources, data, outputs, providers = {}, {}, set(), None
    for doc in docs.values():
        resources.update(blocks(doc, "resource"))
        data.update(blocks(doc, "data"))
        for entry in doc.get("output", []):
            outputs.update(unq(k) for k in entry)
        for tb in doc.get("terraform", []):
            for rp in tb.get("required_providers", []):
                providers = rp.get("aws")
    return variables, locals_, resources, data, outputs, providers

def tf_value(v, variables):
    v = unq(v)
    m = re.fullmatch(r"\$\{var\.(\w+)\}", v) if isinstance(v, str) else None
    return variables.get(m.group(1)) if m else v

def tf_layout(body, variables):
    one = lambda key: (body.get(key) or [{}])[0]
    ttl = body.get("ttl")
    return {
        "hash": unq(body.get("hash_key")), "range": unq(body.get("range_key")),
        "attributes": {unq(a["name"]): unq(a["type"]) for a in body.get("attribute", [])},
        "attribute_count": len(body.get("attribute", [])),
        "gsis": {unq(g["name"]): (unq(g.get("hash_key")), unq(g.get("range_key")), unq(g.get("projection_type")))
                 for g in body.get("global_secondary_index", [])},
        "ttl": (unq(ttl[0]["attribute_name"]), ttl[0].get("enabled") is True) if ttl else None,
        "pitr": one("point_in_time_recovery").get("enabled") is True,
        "sse": one("server_side_encryption").get("enabled") is True,
        "deletion_protection": body.get("deletion_protection_enabled") is True,
        "billing": tf_value(body.get("billing_mode"), variables),
    }

def tf_resource_token(r):
    m = re.fullmatch(r"\$\{aws_dynamodb_table\.(\w+)\.arn\}(/index/\*)?", unq(r))
    return (m.group(1) + (m.group(2) or "")) if m else f"?{r}"

def tf_policy_grants(data, name, where, seen=()):
    body = data.get(("aws_iam_policy_document", name))
    if body is None:
        problem(f"{where}: no data.aws_iam_policy_document.{name}"); return set()
    grants = set()
    for src in body.get("source_policy_documents", []):
        m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", src)
        if not m or m.group(1) in seen:
            problem(f"{where}: unsupported source_policy_documents {src}"); continue
        grants |= tf_policy_grants(data, m.group(1), where, seen + (name,))
    stmts = [{"Sid": unq(s.get("sid")), "Effect": unq(s.get("effect", '"Allow"')),
              "Action": [unq(a) for a in s.get("actions", [])],
              "Resource": [r for r in s.get("resources", [])],
              **({"Condition": 1} if s.get("condition") else {}),
              **({"NotAction": 1} if s.get("not_actions") else {})}
             for s in body.get("statement", [])]
    return grants | statements_grants(stmts, tf_resource_token, where)

# ---- IAM JSON ----------------------------------------------------------------------------
ARN = (r"arn:aws:dynamodb:\$\{AWS_REGION\}:\$\{AWS_ACCOUNT_ID\}:table/"
       r"\$\{CERTGATE_(PRINCIPALS|CERTIFICATES)_TABLE\}(/index/\*)?")
def json_resource_token(r):
    m = re.fullmatch(ARN, r)
    return (m.group(1).lower() + (m.group(2) or "")) if m else f"?{r}"

def static_checks():
    tpl = load_cfn()
    res = resolver(tpl)
    tables = cfn_tables(tpl, res)
    variables, locals_, resources, data, outputs, aws_provider = load_tf()
    tf_tables = {}
    for (typ, name), body in resources.items():
        if typ == "aws_dynamodb_table":
            role = ROLE_BY_HASH.get(unq(body.get("hash_key")))
            if role is None or role in tf_tables:
                problem(f"terraform: unexpected table {name}"); continue
            tf_tables[role] = (name, body)
    for role, want in LAYOUT.items():
        if role not in tables: problem(f"cloudformation: no {role} table"); continue
        if role not in tf_tables: problem(f"terraform: no {role} table"); continue
        lid, props = tables[role]
        c = cfn_layout(lid, props, tpl["Resources"][lid])
        t = tf_layout(tf_tables[role][1], variables)
        for key, value in want.items():
            if c[key] != value: problem(f"cloudformation {lid}: {key} is {c[key]!r}, want {value!r}")
            if t[key] != value: problem(f"terraform {tf_tables[role][0]}: {key} is {t[key]!r}, want {value!r}")
        for src, got in (("cloudformation " + lid, c), ("terraform " + tf_tables[role][0], t)):
            if got["attribute_count"] != len(want["attributes"]):
                problem(f"{src}: attribute definitions repeated")
            for flag in ("pitr", "sse", "deletion_protection"):
                if not got[flag]: problem(f"{src}: {flag} is not on")
            if got["billing"] != "PAY_PER_REQUEST":
                problem(f"{src}: billing mode default is {got['billing']!r}, want PAY_PER_REQUEST")
        if c["name"] != DEFAULT_NAMES[role]:
            problem(f"cloudformation {lid}: default name {c['name']!r}, want {DEFAULT_NAMES[role]!r}")
        if not c["retain"]:
            problem(f"cloudformation {lid}: DeletionPolicy/UpdateReplacePolicy should be Retain")
        # Terraform: name = local.X_table_name = var.X_table_name or "${var.table_name_prefix}_X"
        tname = tf_tables[role][1].get("name")
        local = re.fullmatch(r"\$\{local\.(\w+)\}", tname or "")
        expr = locals_.get(local.group(1), "") if local else ""
        if not (local and f'"${{var.table_name_prefix}}_{role}"' in expr
                and f"{role}_table_name" in expr and variables.get("table_name_prefix") == "certgate"
                and variables.get(f"{role}_table_name") == ""):
            problem(f"terraform {tf_tables[role][0]}: default name is not {DEFAULT_NAMES[role]} ({tname}: {expr})")
    # PROVISIONED must resolve to capacity on every table and index, and nothing else.
    prov = cfn_tables(tpl, resolver(tpl, {"BillingMode": "PROVISIONED"}))
    for role, (lid, p) in prov.items():
        for where in [p] + p.get("GlobalSecondaryIndexes", []):
            if "ProvisionedThroughput" not in where:
                problem(f"cloudformation {lid}: no ProvisionedThroughput in PROVISIONED mode")
    for role, (lid, p) in tables.items():
        for where in [p] + p.get("GlobalSecondaryIndexes", []):
            if "ProvisionedThroughput" in where:
                problem(f"cloudformation {lid}: ProvisionedThroughput in PAY_PER_REQUEST mode")

    # Provider constraint.
    if not aws_provider or unq(aws_provider.get("source")) != "hashicorp/aws" \
            or not re.fullmatch(r">=\s*5(\.\d+)*", unq(aws_provider.get("version", ""))):
        problem(f"terraform: required_providers.aws should be hashicorp/aws >= 5, is {aws_provider}")

    # Outputs.
    want_cfn = {"PrincipalsTableName", "PrincipalsTableArn", "CertificatesTableName", "CertificatesTableArn",
                "ServerPolicyArn", "OperatorPolicyArn", "AdminPolicyArn"}
    want_tf = {"principals_table_name", "principals_table_arn", "certificates_table_name",
               "certificates_table_arn", "server_policy_arn", "operator_policy_arn", "admin_policy_arn"}
    if missing := want_cfn - set(tpl.get("Outputs", {})): problem(f"cloudformation: missing outputs {sorted(missing)}")
    if missing := want_tf - outputs: problem(f"terraform: missing outputs {sorted(missing)}")

    # Policies: CloudFormation, Terraform and iam/*.json all grant exactly the expected sets.
    lid_role = {lid: role for role, (lid, _) in tables.items()}
    for name, want in POLICIES.items():
        lid = name.capitalize() + "Policy"
        r = tpl["Resources"].get(lid)
        if not r or r["Type"] != "AWS::IAM::ManagedPolicy":
            problem(f"cloudformation: no AWS::IAM::ManagedPolicy {lid}"); continue
        doc = r["Properties"]["PolicyDocument"]
        got = {
            f"cloudformation {lid}": statements_grants(doc["Statement"], lambda n: cfn_resource_token(n, lid_role), lid),
        }
        pol = resources.get(("aws_iam_policy", name))
        m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", (pol or {}).get("policy", ""))
        if not m:
            problem(f"terraform: aws_iam_policy.{name} does not use an aws_iam_policy_document")
        else:
            got[f"terraform aws_iam_policy.{name}"] = tf_policy_grants(data, m.group(1), f"terraform {name}")
        jdoc = json.loads((D / "iam" / f"certgate-{name}.json").read_text())
        if jdoc.get("Version") != "2012-10-17": problem(f"iam/certgate-{name}.json: Version 2012-10-17 expected")
        got[f"iam/certgate-{name}.json"] = statements_grants(jdoc["Statement"], json_resource_token, f"certgate-{name}.json")
        for where, g in got.items():
            if g != want:
                extra = sorted(g - want); lacking = sorted(want - g)
                problem(f"{where}: grants differ from the {name} policy; extra {extra}, missing {lacking}")

    # README documents the runbook expressions exactly.
    readme = (D / "README.md").read_text()
    for needle in ["SET #s = :s, suspended_reason = :r, suspended_at = :t",
                   "attribute_exists(principal_id)",
                   "SET #s=:a REMOVE suspended_at, suspended_reason",
                   "SET revoked = :t, revoked_at = :now, revocation_reason = :r",
                   'serviceAccount.annotations."eks.amazonaws.com/role-arn"']:
        if needle not in readme: problem(f"README.md does not contain {needle!r}")
    for a in LAYOUT["principals"]["attributes"] | LAYOUT["certificates"]["attributes"] | {
            "principal_type": 1, "status": 1, "suspended_at": 1, "suspended_reason": 1, "roles": 1,
            "created_at": 1, "issuer": 1, "fingerprint_sha256": 1, "not_before": 1, "revoked": 1,
            "revoked_at": 1, "revocation_reason": 1, "purge_at": 1}:
        if f"| `{a}` |" not in readme: problem(f"README.md: attribute {a} is not in a layout table")

# ---- moto ----------------------------------------------------------------------------------
def normalize_serial(text):  # mirrors src/cli.rs normalize_serial
    h = text.replace(":", "").lower().lstrip("0") or "0"
    return "0" + h if len(h) % 2 else h

def runbook_blocks():
    readme = (D / "README.md").read_text()
    found = {}
    for block in re.findall(r"^```sh\n(.*?)^```", readme, re.S | re.M):
        m = re.match(r"# runbook: ([\w-]+)\n", block)
        if m: found[m.group(1)] = block
    return found

def moto_checks(url):
    import boto3
    from botocore.exceptions import ClientError
    deadline = time.time() + 30
    host, port = url.rsplit("//", 1)[1].split(":")
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close(); break
        except OSError:
            if time.time() > deadline: sys.exit(f"FAIL: moto server did not start on {url}")
            time.sleep(0.2)
    ddb = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    tpl = load_cfn()

    def create(overrides):
        names = {}
        for role, (lid, p) in cfn_tables(tpl, resolver(tpl, overrides)).items():
            args = {k: p[k] for k in ("TableName", "KeySchema", "AttributeDefinitions",
                                      "GlobalSecondaryIndexes", "BillingMode", "ProvisionedThroughput",
                                      "DeletionProtectionEnabled", "Tags") if k in p}
            if "SSESpecification" in p:
                args["SSESpecification"] = {"Enabled": p["SSESpecification"]["SSEEnabled"]}
            def ints(pt): return {k: int(v) for k, v in pt.items()}
            if "ProvisionedThroughput" in args: args["ProvisionedThroughput"] = ints(args["ProvisionedThroughput"])
            for g in args.get("GlobalSecondaryIndexes", []):
                if "ProvisionedThroughput" in g: g["ProvisionedThroughput"] = ints(g["ProvisionedThroughput"])
            ddb.create_table(**args)
            ddb.get_waiter("table_exists").wait(TableName=args["TableName"], WaiterConfig={"Delay": 1, "MaxAttempts": 20})
            if "TimeToLiveSpecification" in p:
                ddb.update_time_to_live(TableName=args["TableName"], TimeToLiveSpecification=p["TimeToLiveSpecification"])
            if "PointInTimeRecoverySpecification" in p:
                ddb.update_continuous_backups(TableName=args["TableName"],
                                              PointInTimeRecoverySpecification=p["PointInTimeRecoverySpecification"])
            names[role] = args["TableName"]
        return names

    names = create({"TableNamePrefix": "cgcheck"})
    prov = create({"TableNamePrefix": "cgprov", "BillingMode": "PROVISIONED"})
    for role, name in names.items():
        t = ddb.describe_table(TableName=name)["Table"]
        if t.get("BillingModeSummary", {}).get("BillingMode", "PAY_PER_REQUEST") != "PAY_PER_REQUEST":
            problem(f"moto {name}: billing mode {t.get('BillingModeSummary')}")
        gsis = {g["IndexName"]: g for g in t.get("GlobalSecondaryIndexes", [])}
        if set(gsis) != set(LAYOUT[role]["gsis"]): problem(f"moto {name}: indexes {sorted(gsis)}")
        if not t.get("DeletionProtectionEnabled"): problem(f"moto {name}: deletion protection off")
        pitr = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        if pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] != "ENABLED":
            problem(f"moto {name}: PITR not enabled")
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        want_ttl = LAYOUT[role]["ttl"]
        if want_ttl and (ttl.get("TimeToLiveStatus") != "ENABLED" or ttl.get("AttributeName") != want_ttl[0]):
            problem(f"moto {name}: TTL {ttl}")
        if t.get("SSEDescription", {}).get("Status") != "ENABLED": problem(f"moto {name}: SSE {t.get('SSEDescription')}")
        try:
            ddb.delete_table(TableName=name)
            problem(f"moto {name}: deleted despite deletion protection")
        except ClientError as e:
            if "DeletionProtection" not in str(e): problem(f"moto {name}: delete_table: {e}")
    for role, name in prov.items():
        t = ddb.describe_table(TableName=name)["Table"]
        caps = [t["ProvisionedThroughput"]] + [g["ProvisionedThroughput"] for g in t.get("GlobalSecondaryIndexes", [])]
        if any(c["ReadCapacityUnits"] != 5 or c["WriteCapacityUnits"] != 1 for c in caps):
            problem(f"moto {name}: provisioned capacity {caps}")

    now_ms = int(time.time() * 1000)
    day = 86_400_000
    retention_s = 90 * 86_400
    principal = "worker-17@example.com"
    ddb.put_item(TableName=names["principals"], Item={
        "principal_id": {"S": principal}, "principal_type": {"S": "worker"}, "status": {"S": "active"},
        "roles": {"L": [{"S": "worker"}]}, "created_at": {"N": str(now_ms)}})
    def cert(serial, expires):
        return {"serial_number": {"S": serial}, "principal_id": {"S": principal},
                "issuer": {"S": "CN=Example Client CA,O=Example"}, "fingerprint_sha256": {"S": "ab" * 32},
                "not_before": {"N": str(now_ms - day)}, "expires_at": {"N": str(expires)},
                "revoked": {"BOOL": False}, "expiry_bucket": {"S": "all"},
                "purge_at": {"N": str(expires // 1000 + retention_s)}}
    soon, later = normalize_serial("00:4D:AE:86"), normalize_serial("0A:1B")
    ddb.put_item(TableName=names["certificates"], Item=cert(soon, now_ms + 10 * day))
    ddb.put_item(TableName=names["certificates"], Item=cert(later, now_ms + 100 * day))
    ddb.put_item(TableName=names["certificates"], Item={**cert("beef", now_ms + 5 * day),
                                                         "principal_id": {"S": "other@example.com"}})
    q = ddb.query(TableName=names["certificates"], IndexName="by_expiry",
                  KeyConditionExpression="expiry_bucket = :b AND expires_at <= :t",
                  ExpressionAttributeValues={":b": {"S": "all"}, ":t": {"N": str(now_ms + 30 * day)}})
    got = [i["serial_number"]["S"] for i in q["Items"]]
    if got != ["beef", soon]: problem(f"moto by_expiry expires_at <= 30d: {got}, want ['beef', '{soon}']")
    q = ddb.query(TableName=names["certificates"], IndexName="by_principal",
                  KeyConditionExpression="principal_id = :p", ExpressionAttributeValues={":p": {"S": principal}})
    got = [i["serial_number"]["S"] for i in q["Items"]]
    if got != [soon, later]: problem(f"moto by_principal: {got}, want ['{soon}', '{later}']")

    # The README's runbook, run as written with the aws CLI.
    blocks = runbook_blocks()
    want_blocks = {"suspend", "reactivate", "revoke", "certificates-of-principal", "expiring"}
    if set(blocks) != want_blocks: problem(f"README runbook blocks {sorted(blocks)}, want {sorted(want_blocks)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ENDPOINT_URL": url, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_PAGER": "",
                "PATH": os.path.abspath(".venv/bin") + os.pathsep + os.environ["PATH"],
                "CERTGATE_PRINCIPALS_TABLE": names["principals"],
                "CERTGATE_CERTIFICATES_TABLE": names["certificates"]})
    def run(name, subst=None, expect_ok=True):
        block = blocks.get(name, "")
        for var, value in (subst or {}).items():
            block = re.sub(rf"^{var}=.*$", f"{var}='{value}'", block, count=1, flags=re.M)
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True, timeout=60)
        if expect_ok and p.returncode != 0:
            problem(f"runbook {name} failed ({p.returncode}): {p.stderr.strip()}")
        if not expect_ok and (p.returncode == 0 or "ConditionalCheckFailed" not in p.stderr):
            problem(f"runbook {name} {subst} should fail the condition check: rc {p.returncode} {p.stderr.strip()}")
        return p.stdout
    def item(role, key, value):
        return ddb.get_item(TableName=names[role], Key={key: {"S": value}}, ConsistentRead=True).get("Item")
    def recent(ms): return abs(int(ms) - time.time() * 1000) < 120_000

    run("suspend")
    p = item("principals", "principal_id", principal)
    if not (p["status"]["S"] == "suspended" and p["suspended_reason"]["S"] == "Compromised credentials detected"
            and recent(p["suspended_at"]["N"]) and p["principal_type"]["S"] == "worker"):
        problem(f"runbook suspend: record is {p}")
    run("suspend", {"PRINCIPAL": "nobody@example.com"}, expect_ok=False)
    if item("principals", "principal_id", "nobody@example.com"): problem("runbook suspend created a principal")
    run("reactivate")
    p = item("principals", "principal_id", principal)
    if p["status"]["S"] != "active" or "suspended_at" in p or "suspended_reason" in p:
        problem(f"runbook reactivate: record is {p}")
    run("reactivate", {"PRINCIPAL": "nobody@example.com"}, expect_ok=False)
    out = run("certificates-of-principal")
    if soon not in out or later not in out or "beef" in out:
        problem(f"runbook certificates-of-principal: output lacks {soon}/{later} or has beef:\n{out}")
    run("revoke")
    c = item("certificates", "serial_number", soon)
    if not (c["revoked"]["BOOL"] is True and c["revocation_reason"]["S"] == "key_compromise"
            and recent(c["revoked_at"]["N"]) and c["expires_at"]["N"] == str(now_ms + 10 * day)):
        problem(f"runbook revoke: record is {c}")
    run("revoke", {"SERIAL": "ff:ee"}, expect_ok=False)
    if item("certificates", "serial_number", "ffee"): problem("runbook revoke created a certificate")
    out = run("expiring")
    if soon not in out or "beef" not in out or later in out:
        problem(f"runbook expiring: want {soon} and beef, not {later}:\n{out}")
    # The serial normalisation lines of the revoke block agree with certgate's normalize_serial.
    lines = blocks.get("revoke", "").splitlines()
    norm = "\n".join(l for l in lines if l.startswith(("SERIAL=", "[ $((")))
    for raw in ["00:4D:AE:86", "serial=0A1B", "0", "00", "ABCDEF", "01:00", "7f"]:
        script = re.sub(r"^SERIAL=.*$", f"SERIAL='{raw}'", norm, count=1, flags=re.M) + '\nprintf %s "$SERIAL"'
        got = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True).stdout
        want = normalize_serial(raw.removeprefix("serial="))
        if got != want: problem(f"runbook revoke: serial {raw!r} becomes {got!r}, certgate stores {want!r}")

mode = sys.argv[1]
if mode == "static": static_checks()
elif mode == "moto": moto_checks(sys.argv[2])
for p in problems: print(f"FAIL {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# 3. Terraform ↔ CloudFormation ↔ IAM JSON, and the fixed layout.
"$PY" -c "$CHECK" static || fail "templates disagree (above)"

# 4. The tables, created from the CloudFormation definitions, on a local moto server.
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$out/moto.log" 2>&1 &
moto_pid=$!
"$PY" -c "$CHECK" moto "http://127.0.0.1:$port" \
  || { grep -v -e "HTTP/1.1\" 200 -$" -e "development server" -e "Running on" -e "CTRL+C" "$out/moto.log" | tail -20 >&2; fail "moto checks (above)"; }

echo "deploy/dynamodb: cfn-lint, IAM JSON, Terraform/CloudFormation/IAM agreement and moto table + runbook checks passed"
