"""CloudFormation: the template parsed with cfn-lint, a small intrinsic-function resolver, and
the tables and policy resources read from it."""

import json
import re
import sys

from common import D, ROLE_BY_HASH, problem

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
