"""The image configuration (`buildah inspect` JSON in argv[1]) as a runtime sees it: user,
entrypoint, command and OCI labels for version argv[2] and revision argv[3]."""

import json, sys
info, version, revision = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
config = info["OCIv1"]["config"]
labels = config.get("Labels") or {}
expect = {
    "User": ("65532:65532", config.get("User")),
    "Entrypoint": (["/usr/local/bin/certgate"], config.get("Entrypoint")),
    "Cmd": (["serve", "--config", "/etc/certgate/certgate.yaml"], config.get("Cmd")),
    "version label": (version, labels.get("org.opencontainers.image.version")),
    "revision label": (revision, labels.get("org.opencontainers.image.revision")),
    "licenses label": ("Apache-2.0", labels.get("org.opencontainers.image.licenses")),
}
problems = [f"{k}: want {w!r}, got {g!r}" for k, (w, g) in expect.items() if w != g]
if not labels.get("org.opencontainers.image.source", "").startswith("https://"):
    problems.append(f"source label: {labels.get('org.opencontainers.image.source')!r}")
for p in problems:
    print("FAIL", p, file=sys.stderr)
sys.exit(1 if problems else 0)
