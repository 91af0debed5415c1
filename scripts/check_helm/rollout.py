"""Rollout safety of the rendered Deployments in argv[1:]: probes on /readyz everywhere;
Recreate for the embedded store; for DynamoDB, RollingUpdate with maxUnavailable 0, two or
more replicas and a PodDisruptionBudget."""

import sys, yaml
def objects(path):
    return {d["kind"]: d for d in yaml.safe_load_all(open(path)) if d}
problems = []
for path in sys.argv[1:]:
    objs = objects(path)
    dep = objs["Deployment"]
    c = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "certgate")
    probe = c.get("startupProbe", {}).get("httpGet", {}).get("path")
    if probe != "/readyz" or c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz":
        problems.append(f"{path}: startup and readiness probes must ask /readyz, got {probe}")
    if "dynamodb" in path:
        strategy = dep["spec"].get("strategy", {})
        if strategy.get("type") != "RollingUpdate" or strategy.get("rollingUpdate", {}).get("maxUnavailable") != 0:
            problems.append(f"dynamodb: expected RollingUpdate with maxUnavailable 0, got {strategy}")
        replicas = objs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] if "HorizontalPodAutoscaler" in objs else dep["spec"]["replicas"]
        if replicas < 2:
            problems.append(f"dynamodb: {replicas} replica(s)")
        pdb = objs.get("PodDisruptionBudget", {}).get("spec", {})
        if not pdb.get("minAvailable", 0) >= 1 and pdb.get("maxUnavailable") != 1:
            problems.append(f"dynamodb: no PodDisruptionBudget keeping a pod up: {pdb}")
    elif dep["spec"].get("strategy", {}).get("type") != "Recreate":
        problems.append("embedded store: the single-writer volume needs Recreate")
for p in problems:
    print("FAIL", p, file=sys.stderr)
sys.exit(1 if problems else 0)
