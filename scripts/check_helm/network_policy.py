"""The rendered chart argv[1] holds one NetworkPolicy with no ingress rule open to all; the
admin port is admitted only when argv[2] is "metrics" (metricsFrom set)."""

import sys, yaml
policies = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "NetworkPolicy"]
assert len(policies) == 1, f"expected one NetworkPolicy, got {len(policies)}"
rules = policies[0]["spec"].get("ingress") or []
problems = [f"rule open to all: {r}" for r in rules if not r.get("from")]
admin = [r for r in rules if any(p.get("port") == "admin" for p in r.get("ports", []))]
if sys.argv[2] == "closed" and admin:
    problems.append(f"admin port admitted without metricsFrom: {admin}")
if sys.argv[2] == "metrics" and len(admin) != 1:
    problems.append(f"admin port not admitted from metricsFrom: {rules}")
for p in problems:
    print("FAIL", p, file=sys.stderr)
sys.exit(1 if problems else 0)
