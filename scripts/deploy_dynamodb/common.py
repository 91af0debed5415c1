"""The fixed table layout certgate uses, the least-privilege policies, and the problem list
every check appends to."""

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
    # The audit trail: one partition (chain = "certgate") sorted by sequence, the head at 0.
    "audit": {
        "hash": "chain", "range": "sequence",
        "attributes": {"chain": "S", "sequence": "N"},
        "gsis": {}, "ttl": None,
    },
}
ROLE_BY_HASH = {v["hash"]: k for k, v in LAYOUT.items()}
DEFAULT_NAMES = {role: "certgate_" + role for role in LAYOUT}

T = ["principals", "certificates"]
IDX = [t + "/index/*" for t in T]
# The one condition a statement may carry: items whose key starts with seen# (the certificate
# inventory). A grant under it is marked on its resource.
INVENTORY_ONLY = {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["seen#*"]}}
INVENTORY_KEYS = "[seen#*]"
def grant(actions, resources): return {("dynamodb:" + a, r) for a in actions for r in resources}
# An audited write is one TransactWriteItems, authorised per part: PutItem of the record and
# UpdateItem of the head on the audit table (the change itself on its own table); GetItem reads
# the head, Query the chain. Nobody may DeleteItem a record.
AUDIT = grant(["GetItem", "PutItem", "UpdateItem", "Query"], ["audit"])
OPERATOR = grant(["GetItem", "PutItem", "UpdateItem", "Scan"], T) | grant(["Query"], IDX) | AUDIT
POLICIES = {
    # Reads, plus the certificate inventory: UpdateItem of inventory items and the by_expiry
    # Query of the expiry-tier gauges.
    # Only items keyed seen#…: a serving replica still cannot change a registration or a
    # revocation.
    "server": grant(["GetItem"], T) | grant(["UpdateItem"], ["certificates" + INVENTORY_KEYS])
              | grant(["Query"], ["certificates/index/*"]),
    "operator": OPERATOR,
    "admin": OPERATOR | grant(["CreateTable", "DescribeTable", "UpdateTable", "UpdateTimeToLive",
                               "DescribeTimeToLive", "BatchWriteItem"], T)
             | grant(["CreateTable", "DescribeTable"], ["audit"]),
    # Attached to the server role in addition to "server", only when the replicas serve the
    # admin API: they then write for their callers, as the operator CLI does.
    "server-admin-api": OPERATOR,
}
# Where each policy is in CloudFormation (logical id) and Terraform (aws_iam_policy name).
POLICY_IDS = {name: ("".join(w.capitalize() for w in name.split("-")) + "Policy", name.replace("-", "_"))
              for name in POLICIES}

def statements_grants(statements, token, where):
    grants = set()
    for st in statements:
        cond = st.get("Condition")
        if st.get("Effect") != "Allow" or set(st) - {"Sid", "Effect", "Action", "Resource", "Condition"} \
                or cond not in (None, INVENTORY_ONLY):
            problem(f"{where}: statement {st.get('Sid')}: only Allow with Action and Resource "
                    f"(and the inventory-only condition) expected")
        suffix = INVENTORY_KEYS if cond == INVENTORY_ONLY else ""
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for a in actions:
            for r in resources:
                grants.add((a, token(r) + suffix))
    return grants
