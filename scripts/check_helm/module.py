"""mode: module as rendered (argv[1]): no certgate server container; the pod's Envoy finds the
module where the init container puts it (ENVOY_DYNAMIC_MODULES_SEARCH_PATH = the mounted
emptyDir), mounts certgate's configuration, trust bundle and store like `serve` would, is
probed on the module's /readyz, and its bootstrap loads certgate_envoy with the mounted
certgate.yaml; the Service exposes no gRPC or forward-auth port, and certgate.yaml names no
listener the module would not serve."""

import sys, yaml

objs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in objs}
pod = kinds["Deployment"]["spec"]["template"]["spec"]
problems = []
names = [c["name"] for c in pod["containers"]]
if names != ["envoy"]:
    problems.append(f"containers {names}, want only envoy")
envoy = pod["containers"][0]
env = {e["name"]: e.get("value") for e in envoy.get("env", [])}
mounts = {m["name"]: m["mountPath"] for m in envoy.get("volumeMounts", [])}
search = env.get("ENVOY_DYNAMIC_MODULES_SEARCH_PATH")
if not search or mounts.get("certgate-module") != search:
    problems.append(f"search path {search} is not the module volume {mounts.get('certgate-module')}")
init = pod.get("initContainers", [])
if not init or "/modules" not in " ".join(init[0]["command"]) or init[0]["volumeMounts"][0]["name"] != "certgate-module":
    problems.append(f"no init container copying the module into its volume: {init}")
for name, path in [("config", "/etc/certgate/config"), ("trust", "/etc/certgate/trust"), ("store", "/var/lib/certgate")]:
    if mounts.get(name) != path:
        problems.append(f"volume {name} not at {path}: {mounts}")
for probe in ("startupProbe", "readinessProbe"):
    if envoy.get(probe, {}).get("httpGet", {}).get("path") != "/readyz":
        problems.append(f"{probe} does not ask the module's /readyz")
bootstrap = yaml.safe_load(next(d for d in objs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-envoy"))["data"]["envoy.yaml"])
hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
module = [f for f in hcm["http_filters"] if "DynamicModuleFilter" in f.get("typed_config", {}).get("@type", "")]
if not module or module[0]["typed_config"]["dynamic_module_config"]["name"] != "certgate_envoy":
    problems.append("the bootstrap has no certgate_envoy dynamic_modules filter")
elif "/etc/certgate/config/certgate.yaml" not in module[0]["typed_config"]["filter_config"]["value"]:
    problems.append("the module's filter_config does not name the mounted certgate.yaml")
if hcm.get("forward_client_cert_details") != "SANITIZE_SET":
    problems.append("the module needs forward_client_cert_details: SANITIZE_SET")
certgate = yaml.safe_load(next(d for d in objs if d["kind"] == "ConfigMap" and "certgate.yaml" in d.get("data", {}))["data"]["certgate.yaml"])
served = {k: v for k, v in certgate["listen"].items() if k in ("grpc", "grpc_unix", "http") and v}
if served:
    problems.append(f"certgate.yaml names listeners the module does not serve: {served}")
ports = [p["name"] for p in kinds["Service"]["spec"]["ports"]]
if "grpc" in ports or "http" in ports:
    problems.append(f"Service ports {ports} in mode: module")
for p in problems:
    print("FAIL module:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
