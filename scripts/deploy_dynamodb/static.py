"""The offline checks: CloudFormation, Terraform and iam/*.json agree with each other, with the
fixed layout and with the least-privilege policies; the README documents the layout."""

import json
import re

from cfn import cfn_layout, cfn_resource_token, cfn_tables, load_cfn, resolver
from common import D, DEFAULT_NAMES, LAYOUT, POLICIES, POLICY_IDS, ROLE_BY_HASH, problem, statements_grants
from terraform import load_tf, tf_layout, tf_policy_grants, unq

ARN = (r"arn:aws:dynamodb:\$\{AWS_REGION\}:\$\{AWS_ACCOUNT_ID\}:table/"
       r"\$\{CERTGATE_(PRINCIPALS|CERTIFICATES|AUDIT)_TABLE\}(/index/\*)?")
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
    want_cfn = {f"{role.capitalize()}Table{what}" for role in LAYOUT for what in ("Name", "Arn")} \
        | {lid + "Arn" for lid, _ in POLICY_IDS.values()}
    want_tf = {f"{role}_table_{what}" for role in LAYOUT for what in ("name", "arn")} \
        | {tf + "_policy_arn" for _, tf in POLICY_IDS.values()}
    if missing := want_cfn - set(tpl.get("Outputs", {})): problem(f"cloudformation: missing outputs {sorted(missing)}")
    if missing := want_tf - outputs: problem(f"terraform: missing outputs {sorted(missing)}")

    # Policies: CloudFormation, Terraform and iam/*.json all grant exactly the expected sets.
    lid_role = {lid: role for role, (lid, _) in tables.items()}
    for name, want in POLICIES.items():
        lid, tf_name = POLICY_IDS[name]
        r = tpl["Resources"].get(lid)
        if not r or r["Type"] != "AWS::IAM::ManagedPolicy":
            problem(f"cloudformation: no AWS::IAM::ManagedPolicy {lid}"); continue
        doc = r["Properties"]["PolicyDocument"]
        got = {
            f"cloudformation {lid}": statements_grants(doc["Statement"], lambda n: cfn_resource_token(n, lid_role), lid),
        }
        pol = resources.get(("aws_iam_policy", tf_name))
        m = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", (pol or {}).get("policy", ""))
        if not m:
            problem(f"terraform: aws_iam_policy.{tf_name} does not use an aws_iam_policy_document")
        else:
            got[f"terraform aws_iam_policy.{tf_name}"] = tf_policy_grants(data, m.group(1), f"terraform {name}")
        jdoc = json.loads((D / "iam" / f"certgate-{name}.json").read_text())
        if jdoc.get("Version") != "2012-10-17": problem(f"iam/certgate-{name}.json: Version 2012-10-17 expected")
        got[f"iam/certgate-{name}.json"] = statements_grants(jdoc["Statement"], json_resource_token, f"certgate-{name}.json")
        for where, g in got.items():
            if g != want:
                extra = sorted(g - want); lacking = sorted(want - g)
                problem(f"{where}: grants differ from the {name} policy; extra {extra}, missing {lacking}")

    # server-admin-api reaches the server role only when asked for: default pods stay read-only.
    for flag, want in (("false", None), ("true", ["pods"])):
        roles = resolver(tpl, {"ServerRoleName": "pods", "ServerAdminApi": flag})(
            {"r": tpl["Resources"].get("ServerAdminApiPolicy", {}).get("Properties", {}).get("Roles")}).get("r")
        if roles != want: problem(f"cloudformation ServerAdminApiPolicy: ServerAdminApi={flag} attaches it to {roles}")
    count = unq(resources.get(("aws_iam_role_policy_attachment", "server_admin_api"), {}).get("count", ""))
    if "var.server_admin_api" not in str(count) or variables.get("server_admin_api") is not False:
        problem(f"terraform: server_admin_api attachment should depend on var.server_admin_api (default false): {count}")

    # README documents the runbook expressions exactly.
    readme = (D / "README.md").read_text()
    for needle in ["SET #s = :s, suspended_reason = :r, suspended_at = :t",
                   "attribute_exists(principal_id)",
                   "SET #s=:a REMOVE suspended_at, suspended_reason",
                   "SET revoked = :t, revoked_at = :now, revocation_reason = :r",
                   'serviceAccount.annotations."eks.amazonaws.com/role-arn"']:
        if needle not in readme: problem(f"README.md does not contain {needle!r}")
    for a in LAYOUT["principals"]["attributes"] | LAYOUT["certificates"]["attributes"] | LAYOUT["audit"]["attributes"] | {
            "principal_type": 1, "status": 1, "suspended_at": 1, "suspended_reason": 1, "roles": 1,
            "created_at": 1, "issuer": 1, "fingerprint_sha256": 1, "not_before": 1, "revoked": 1,
            "revoked_at": 1, "revocation_reason": 1, "purge_at": 1, "head_sequence": 1, "head_hash": 1,
            "at": 1, "actor": 1, "action": 1, "target": 1, "reason": 1, "before": 1, "after": 1,
            "prev_hash": 1, "hash": 1}:
        if f"| `{a}` |" not in readme: problem(f"README.md: attribute {a} is not in a layout table")
