"""Terraform: the *.tf files parsed with python-hcl2, and the tables and policy documents read
from them."""

import re

from common import D, problem, statements_grants

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

def tf_condition(blocks):
    """condition { test, variable, values } blocks as an IAM JSON Condition."""
    out = {}
    for c in blocks:
        out.setdefault(unq(c["test"]), {})[unq(c["variable"])] = [unq(v) for v in c["values"]]
    return out


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
              **({"Condition": tf_condition(s["condition"])} if s.get("condition") else {}),
              **({"NotAction": 1} if s.get("not_actions") else {})}
             for s in body.get("statement", [])]
    return grants | statements_grants(stmts, tf_resource_token, where)
