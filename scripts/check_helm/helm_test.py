"""The chart's `helm test` Pod (templates/tests/probe.yaml), rendered in argv[1], checked and
then run: its containers' `certgate probe` arguments are executed with the binary argv[2]
against `certgate serve` started from the configuration argv[3] (rendered_config.py's
output, its listen addresses moved to free loopback ports), the Service name and ports
mapped to them. They must pass while certgate serves and fail once it is stopped.
Usage: helm_test.py RENDERED CERTGATE CONFIG (exit 1 with the problems on stderr)."""

import re, socket, subprocess, sys, time, urllib.request, yaml

rendered, binary, config = sys.argv[1:4]
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
problems = []
def problem(msg): problems.append(msg)

tests = [d for d in docs if d.get("metadata", {}).get("annotations", {}).get("helm.sh/hook") == "test"]
service = next(d for d in docs if d["kind"] == "Service")
deploy = next(d for d in docs if d["kind"] == "Deployment")
if len(tests) != 1 or tests[0]["kind"] != "Pod":
    sys.exit(f"FAIL {rendered}: want one helm test Pod, got {[d['kind'] for d in tests]}")
pod = tests[0]
labels = pod["metadata"].get("labels", {})
selector = service["spec"]["selector"]
if all(labels.get(k) == v for k, v in selector.items()):
    problem("the test Pod carries the Service's selector labels (it would receive traffic)")
if pod["spec"].get("restartPolicy") != "Never": problem("test Pod restartPolicy is not Never")
# mode: module runs no certgate container (Envoy holds certgate); the probe image is then
# certgate's own, whatever the pod runs.
image = next((c["image"] for c in deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "certgate"),
             pod["spec"]["containers"][0]["image"])
ports = {p["port"]: p["name"] for p in service["spec"]["ports"]}
name = service["metadata"]["name"]
calls = []
for c in pod["spec"]["containers"]:
    if c["image"] != image: problem(f"test container {c['name']}: image {c['image']}, not {image}")
    args = c.get("args", [])
    if c.get("command") or args[:1] != ["probe"]: problem(f"test container {c['name']} does not run `certgate probe`")
    m = re.fullmatch(rf"http://{re.escape(name)}:(\d+)(/.*)", args[1] if len(args) > 1 else "")
    if not m or int(m.group(1)) not in ports:
        problem(f"test container {c['name']}: {args[1:2]} is not a port of Service {name}")
        continue
    calls.append((c["name"], ports[int(m.group(1))], m.group(2), args[2:]))
want = {"admin"} | ({"http"} if "http" in ports.values() else set())
if {port for _, port, _, _ in calls} != want:
    problem(f"the test Pod probes ports {sorted(p for _, p, _, _ in calls)}, want {sorted(want)}")
if problems:
    for p in problems: print(f"FAIL {rendered}: {p}", file=sys.stderr)
    sys.exit(1)

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close(); return port
local = {"admin": free_port(), "grpc": free_port(), "http": free_port()}
text = open(config).read()
for key, port in local.items():
    text = re.sub(rf"(?m)^(  {key}): \S+$", rf"\1: 127.0.0.1:{port}", text)
open(config, "w").write(text)
server = subprocess.Popen([binary, "serve", "--config", config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

def probe(call):
    container, port, path, extra = call
    url = f"http://127.0.0.1:{local[port]}{path}"
    return subprocess.run([binary, "probe", url, *extra], capture_output=True, text=True, timeout=30)

try:
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{local['admin']}/healthz", timeout=1); break
        except Exception:
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"FAIL {rendered}: certgate did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.2)
    for call in calls:
        p = probe(call)
        if p.returncode != 0: problem(f"test container {call[0]} fails against a serving certgate: {p.stdout}{p.stderr}")
finally:
    server.terminate(); server.wait(timeout=10)
for call in calls:
    p = probe(call)
    if p.returncode != 1: problem(f"test container {call[0]} passes with certgate stopped: {p.returncode} {p.stdout}")
for p in problems: print(f"FAIL {rendered}: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
