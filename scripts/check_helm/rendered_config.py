"""Print the certgate.yaml of the ConfigMap in the rendered chart argv[1], its in-pod paths
pointed at the scratch directory argv[2] (which holds ca.pem); exit 1 if there is none."""

import re, sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap" and "certgate.yaml" in doc.get("data", {}):
        text = doc["data"]["certgate.yaml"]
        text = re.sub(r"ca_bundle: .*", f"ca_bundle: {sys.argv[2]}/ca.pem", text)
        text = re.sub(r"(path|grpc_unix|cache_dir): /\S*/", rf"\1: {sys.argv[2]}/", text)
        print(text)
        sys.exit(0)
sys.exit(1)
