"""The rendered chart argv[1] holds one NetworkPolicy with no ingress rule open to all; the
admin port is admitted only when argv[2] is "metrics" (metricsFrom set), and otherwise only
to the `helm test` Pod, by its own labels (never the Service's selector labels)."""

import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
assert len(policies) == 1, f"expected one NetworkPolicy, got {len(policies)}"
test_pods = [d for d in docs if d.get("metadata", {}).get("annotations", {}).get("helm.sh/hook") == "test"]
test_labels = test_pods[0]["metadata"]["labels"] if test_pods else None
def for_test_pod(rule):
    peers = rule.get("from", [])
    return test_labels is not None and len(peers) == 1 and set(peers[0]) == {"podSelector"} and \
        all(test_labels.get(k) == v for k, v in peers[0]["podSelector"]["matchLabels"].items())
rules = policies[0]["spec"].get("ingress") or []
problems = [f"rule open to all: {r}" for r in rules if not r.get("from")]
admin = [r for r in rules if any(p.get("port") == "admin" for p in r.get("ports", [])) and not for_test_pod(r)]
if sys.argv[2] == "closed" and admin:
    problems.append(f"admin port admitted without metricsFrom: {admin}")
if sys.argv[2] == "metrics" and len(admin) != 1:
    problems.append(f"admin port not admitted from metricsFrom: {rules}")
if test_labels is not None and not any(for_test_pod(r) for r in rules):
    problems.append("the helm test Pod is not admitted (its probes could not reach certgate)")
for r in rules:
    if for_test_pod(r) and {"app.kubernetes.io/name", "app.kubernetes.io/instance"} <= set(r["from"][0]["podSelector"]["matchLabels"]) \
            and not r["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"].endswith("-test"):
        problems.append(f"the test Pod rule admits certgate's own pods: {r}")
for p in problems:
    print("FAIL", p, file=sys.stderr)
sys.exit(1 if problems else 0)
