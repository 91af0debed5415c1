#!/usr/bin/env bash
# The Prometheus alert rules: `promtool check rules` and `promtool test rules` (a firing and a
# quiet case per alert). promtool comes with Debian's prometheus package (scripts/setup.sh
# installs it with SETUP_PROMETHEUS=1). The rules' metrics, runbook links and the chart's
# copies are checked by scripts/check_helm/alerts.py (scripts/check-helm.sh).
set -euo pipefail
cd "$(dirname "$0")/../deploy/prometheus"
command -v promtool >/dev/null || { echo "FAIL: promtool missing (SETUP_PROMETHEUS=1 scripts/setup.sh)" >&2; exit 1; }
promtool check rules certgate-alerts.yaml >/dev/null
promtool test rules certgate-alerts.test.yaml
