"""The CycloneDX SBOM argv[1] beside the image archive: certgate, its runtime crates, no
dev-dependencies."""

import json, sys
bom = json.load(open(sys.argv[1]))
names = {c["name"] for c in bom["components"]}
assert bom["bomFormat"] == "CycloneDX" and bom["metadata"]["component"]["name"] == "certgate", bom["metadata"]
assert {"tokio", "rusqlite", "tonic"} <= names, sorted(names)
assert not names & {"proptest", "criterion", "tempfile"}, "dev-dependencies are not in the binary"
