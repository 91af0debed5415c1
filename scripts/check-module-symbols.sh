#!/usr/bin/env bash
# Every Envoy callback the dynamic module imports must be exported by the pinned Envoy binary.
# Envoy loads modules with lazy binding: a missing callback would abort Envoy at its first
# call in production instead of failing here. Usage: scripts/check-module-symbols.sh [SO [ENVOY]]
set -euo pipefail
cd "$(dirname "$0")/.."
so=${1:-target/debug/libcertgate_envoy.so}
envoy=${2:-${ENVOY_BIN:-.venv/bin/envoy}}
# pip's `envoy` is a Python launcher: the ELF binary sits in the package.
if ! nm -D "$envoy" >/dev/null 2>&1; then
  envoy=$("$(dirname "$envoy")/python3" -c \
    'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
fi
[ -f "$so" ] || nice -n 10 cargo build --quiet -p certgate-envoy
imported=$(nm -D --undefined-only "$so" | awk '{print $NF}' | grep '^envoy_dynamic_module_callback_' | sort -u)
exported=$(nm -D --defined-only "$envoy" | awk '{print $NF}' | grep '^envoy_dynamic_module_callback_' | sort -u)
[ -n "$imported" ] || { echo "no envoy_dynamic_module_callback_* imports in $so: wrong file?" >&2; exit 1; }
missing=$(comm -23 <(echo "$imported") <(echo "$exported"))
if [ -n "$missing" ]; then
  echo "$so imports callbacks $envoy does not export:" >&2
  echo "$missing" >&2
  exit 1
fi
echo "module ABI: all $(echo "$imported" | wc -l) imported Envoy callbacks are exported by $("$envoy" --version | grep -o '[0-9]*\.[0-9]*\.[0-9]*' | head -1)"
