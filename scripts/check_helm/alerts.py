"""deploy/prometheus/certgate-alerts.yaml: valid, every rule complete, and every certgate_*
metric it uses exported by src/metrics.rs."""

import re, sys, yaml
doc = yaml.safe_load(open("deploy/prometheus/certgate-alerts.yaml"))
groups = doc["spec"]["groups"] if doc.get("kind") == "PrometheusRule" else doc["groups"]
exported = set(re.findall(r'"(certgate_[a-z0-9_]+)"', open("src/metrics.rs").read()))
problems = []
for g in groups:
    for r in g["rules"]:
        for m in set(re.findall(r"certgate_[a-z0-9_]+", r["expr"])):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if m not in exported and base not in exported:
                problems.append(f"{r.get('alert')}: unknown metric {m}")
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                problems.append(f"{r.get('alert')}: missing {key}")
for p in problems:
    print("FAIL", p, file=sys.stderr)
sys.exit(1 if problems else 0)
