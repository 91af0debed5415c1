"""deploy/prometheus/certgate-alerts.yaml: valid, every rule complete, every certgate_* metric
it uses exported by certgate (src/), every alert linked to a section of docs/operations.md
that exists and unit-tested both ways in certgate-alerts.test.yaml (one firing test, one
quiet). The chart's copies in helm/certgate/files/ are identical to deploy/prometheus/.
With a rendered chart as argument (prometheusRule and grafanaDashboard enabled): the
PrometheusRule carries exactly these groups and the ConfigMap exactly the dashboard."""

import glob, json, re, sys, yaml

RULES = "deploy/prometheus/certgate-alerts.yaml"
TESTS = "deploy/prometheus/certgate-alerts.test.yaml"
DASHBOARD = "deploy/prometheus/certgate-dashboard.json"
GUIDE = "docs/operations.md"
RUNBOOKS = "https://github.com/certgate/certgate/blob/main/docs/operations.md#"

doc = yaml.safe_load(open(RULES))
groups = doc["groups"]
sources = "".join(open(p).read() for p in glob.glob("src/**/*.rs", recursive=True))
exported = set(re.findall(r'"(certgate_[a-z0-9_]+)"', sources))


def anchor(heading):
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", open(GUIDE).read(), re.M)}
tests = yaml.safe_load(open(TESTS))["tests"]
firing = {t["promql_expr_test"][0]["expr"].split('"')[1] for t in tests if "promql_expr_test" in t}
quiet = {a["alertname"] for t in tests for a in t.get("alert_rule_test", []) if not a["exp_alerts"]}

problems = []
for g in groups:
    for r in g["rules"]:
        name = r.get("alert")
        for m in set(re.findall(r"certgate_[a-z0-9_]+", r["expr"])):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if m not in exported and base not in exported:
                problems.append(f"{name}: unknown metric {m}")
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in r:
                problems.append(f"{name}: missing {key}")
        url = r.get("annotations", {}).get("runbook_url", "")
        if not url.startswith(RUNBOOKS) or url[len(RUNBOOKS):] not in anchors:
            problems.append(f"{name}: runbook_url {url!r} is not a section of {GUIDE}")
        if name not in firing:
            problems.append(f"{name}: no test in {TESTS} where it fires")
        if name not in quiet:
            problems.append(f"{name}: no test in {TESTS} where it stays quiet")
for copy, original in [("helm/certgate/files/certgate-alerts.yaml", RULES),
                       ("helm/certgate/files/certgate-dashboard.json", DASHBOARD)]:
    if open(copy).read() != open(original).read():
        problems.append(f"{copy} differs from {original} (copy it over)")
json.load(open(DASHBOARD))

if len(sys.argv) > 1:
    rendered = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
    rules = [d for d in rendered if d["kind"] == "PrometheusRule"]
    maps = [d for d in rendered if d["kind"] == "ConfigMap" and "certgate.json" in d.get("data", {})]
    if len(rules) != 1 or rules[0]["spec"]["groups"] != groups:
        problems.append("the chart's PrometheusRule does not carry the alert groups")
    if len(maps) != 1 or json.loads(maps[0]["data"]["certgate.json"]) != json.load(open(DASHBOARD)):
        problems.append("the chart's dashboard ConfigMap does not carry the dashboard")
    elif maps[0]["metadata"]["labels"].get("grafana_dashboard") != "1":
        problems.append("the dashboard ConfigMap lacks the Grafana sidecar label")
for p in problems:
    print("FAIL", p, file=sys.stderr)
sys.exit(1 if problems else 0)
