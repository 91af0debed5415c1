#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM (JSON) of the Rust crates linked into the certgate binary, from
`cargo metadata` and Cargo.lock: only normal (not dev or build) dependencies reachable from
certgate for this platform (proc-macro crates included: they shape the code though they are
not linked), each with its version, purl, licence expression and the
crates.io SHA-256 from Cargo.lock, plus the dependency graph.

    scripts/sbom.py OUT.json [TARGET-TRIPLE]

Used by scripts/build-image.sh (target/image/certgate-VERSION.cdx.json beside the archive).
Offline once the crates are fetched. Standard library only."""
import json
import subprocess
import sys
import tomllib
import uuid
from datetime import datetime, timezone


def main() -> None:
    out = sys.argv[1]
    triple = sys.argv[2] if len(sys.argv) > 2 else None
    if triple is None:
        rustc = subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True)
        triple = next(l.split(": ", 1)[1] for l in rustc.stdout.splitlines() if l.startswith("host: "))
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", triple],
        check=True, capture_output=True, text=True).stdout)
    lock = tomllib.load(open("Cargo.lock", "rb"))
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock["package"]}
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = next(i for i in meta["workspace_members"] if packages[i]["name"] == "certgate")

    # Normal dependencies reachable from certgate (what is linked into the binary).
    seen, todo, graph = set(), [root], {}
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        deps = [d["pkg"] for d in nodes[pid]["deps"]
                if any(k["kind"] is None for k in d["dep_kinds"])]
        graph[pid] = deps
        todo.extend(deps)

    def ref(pid: str) -> str:
        p = packages[pid]
        return f"pkg:cargo/{p['name']}@{p['version']}"

    def component(pid: str, kind: str) -> dict:
        p = packages[pid]
        c = {"type": kind, "bom-ref": ref(pid), "name": p["name"], "version": p["version"],
             "purl": ref(pid)}
        if p.get("description"):
            c["description"] = p["description"].strip()
        if p.get("license"):
            c["licenses"] = [{"expression": p["license"]}]
        digest = checksums.get((p["name"], p["version"]))
        if digest:
            c["hashes"] = [{"alg": "SHA-256", "content": digest}]
        if p.get("repository"):
            c["externalReferences"] = [{"type": "vcs", "url": p["repository"]}]
        return c

    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "scripts/sbom.py"}]},
            "component": component(root, "application"),
            "properties": [{"name": "cdx:rust:target", "value": triple}],
        },
        "components": [component(pid, "library") for pid in sorted(seen - {root}, key=ref)],
        "dependencies": [{"ref": ref(pid), "dependsOn": sorted({ref(d) for d in deps})}
                         for pid, deps in sorted(graph.items(), key=lambda kv: ref(kv[0]))],
    }
    with open(out, "w") as f:
        json.dump(bom, f, indent=1)
        f.write("\n")
    print(f"{len(bom['components'])} crates")


if __name__ == "__main__":
    main()
