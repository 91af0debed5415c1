"""Against a local moto server: the tables created from the CloudFormation definitions, items
queried through both indexes, and every `# runbook:` block of deploy/dynamodb/README.md run
as written with the aws CLI."""

import os
import re
import socket
import subprocess
import sys
import time

from cfn import cfn_tables, load_cfn, resolver
from common import D, LAYOUT, problem

def normalize_serial(text):  # mirrors src/cli.rs normalize_serial
    h = text.replace(":", "").lower().lstrip("0") or "0"
    return "0" + h if len(h) % 2 else h

def runbook_blocks():
    readme = (D / "README.md").read_text()
    found = {}
    for block in re.findall(r"^```sh\n(.*?)^```", readme, re.S | re.M):
        m = re.match(r"# runbook: ([\w-]+)\n", block)
        if m: found[m.group(1)] = block
    return found

def audit_chain(ddb, names, principal):
    """certgate's audited write as src/store/dynamodb/chain.rs sends it: the change, the record
    (its sequence new) and the head at sequence 0 moved on (still naming the record before), in
    one TransactWriteItems; then the chain read back with certgate's Query. Sequences 9 and 10
    sort wrongly unless `sequence` is a number. Leaves the principal active."""
    from botocore.exceptions import ClientError
    audit, c = names["audit"], {"S": "certgate"}
    head = {"chain": c, "sequence": {"N": "0"}}
    def append(seq, prev, status):
        values = {":n": {"N": str(seq)}, ":h": {"S": f"h{seq}"}}
        if prev is not None: values[":prev"] = {"N": str(prev)}
        ddb.transact_write_items(TransactItems=[
            {"Update": {"TableName": names["principals"], "Key": {"principal_id": {"S": principal}},
                        "UpdateExpression": "SET #s = :s", "ConditionExpression": "attribute_exists(principal_id)",
                        "ExpressionAttributeNames": {"#s": "status"},
                        "ExpressionAttributeValues": {":s": {"S": status}}}},
            {"Put": {"TableName": audit, "ConditionExpression": "attribute_not_exists(chain)",
                     "Item": {"chain": c, "sequence": {"N": str(seq)}, "action": {"S": "principal." + status},
                              "prev_hash": {"S": f"h{prev}" if prev else ""}, "hash": {"S": f"h{seq}"}}}},
            {"Update": {"TableName": audit, "Key": head, "UpdateExpression": "SET head_sequence = :n, head_hash = :h",
                        "ConditionExpression": "attribute_not_exists(chain)" if prev is None else "head_sequence = :prev",
                        "ExpressionAttributeValues": values}}])
    append(9, None, "suspended")
    append(10, 9, "active")
    try:
        append(10, 9, "suspended")
        problem("moto audit: a record's sequence was written twice")
    except ClientError as e:
        if "TransactionCanceled" not in str(e): problem(f"moto audit: second record 10: {e}")
    q = ddb.query(TableName=audit, KeyConditionExpression="chain = :c AND #q > :h",
                  ExpressionAttributeNames={"#q": "sequence"}, ConsistentRead=True,
                  ExpressionAttributeValues={":c": c, ":h": {"N": "0"}})
    got = [(i["sequence"]["N"], i["action"]["S"]) for i in q["Items"]]
    if got != [("9", "principal.suspended"), ("10", "principal.active")]:
        problem(f"moto audit chain: {got}")
    h = ddb.get_item(TableName=audit, Key=head, ConsistentRead=True).get("Item", {})
    if h.get("head_sequence") != {"N": "10"}: problem(f"moto audit head: {h}")
    p = ddb.get_item(TableName=names["principals"], Key={"principal_id": {"S": principal}}, ConsistentRead=True)
    if p["Item"]["status"]["S"] != "active": problem(f"moto audit: a cancelled transaction changed {p['Item']}")

def moto_checks(url):
    import boto3
    from botocore.exceptions import ClientError
    deadline = time.time() + 30
    host, port = url.rsplit("//", 1)[1].split(":")
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close(); break
        except OSError:
            if time.time() > deadline: sys.exit(f"FAIL: moto server did not start on {url}")
            time.sleep(0.2)
    ddb = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    tpl = load_cfn()

    def create(overrides):
        names = {}
        for role, (lid, p) in cfn_tables(tpl, resolver(tpl, overrides)).items():
            args = {k: p[k] for k in ("TableName", "KeySchema", "AttributeDefinitions",
                                      "GlobalSecondaryIndexes", "BillingMode", "ProvisionedThroughput",
                                      "DeletionProtectionEnabled", "Tags") if k in p}
            if "SSESpecification" in p:
                args["SSESpecification"] = {"Enabled": p["SSESpecification"]["SSEEnabled"]}
            def ints(pt): return {k: int(v) for k, v in pt.items()}
            if "ProvisionedThroughput" in args: args["ProvisionedThroughput"] = ints(args["ProvisionedThroughput"])
            for g in args.get("GlobalSecondaryIndexes", []):
                if "ProvisionedThroughput" in g: g["ProvisionedThroughput"] = ints(g["ProvisionedThroughput"])
            ddb.create_table(**args)
            ddb.get_waiter("table_exists").wait(TableName=args["TableName"], WaiterConfig={"Delay": 1, "MaxAttempts": 20})
            if "TimeToLiveSpecification" in p:
                ddb.update_time_to_live(TableName=args["TableName"], TimeToLiveSpecification=p["TimeToLiveSpecification"])
            if "PointInTimeRecoverySpecification" in p:
                ddb.update_continuous_backups(TableName=args["TableName"],
                                              PointInTimeRecoverySpecification=p["PointInTimeRecoverySpecification"])
            names[role] = args["TableName"]
        return names

    names = create({"TableNamePrefix": "cgcheck"})
    prov = create({"TableNamePrefix": "cgprov", "BillingMode": "PROVISIONED"})
    for role, name in names.items():
        t = ddb.describe_table(TableName=name)["Table"]
        if t.get("BillingModeSummary", {}).get("BillingMode", "PAY_PER_REQUEST") != "PAY_PER_REQUEST":
            problem(f"moto {name}: billing mode {t.get('BillingModeSummary')}")
        gsis = {g["IndexName"]: g for g in t.get("GlobalSecondaryIndexes", [])}
        if set(gsis) != set(LAYOUT[role]["gsis"]): problem(f"moto {name}: indexes {sorted(gsis)}")
        if not t.get("DeletionProtectionEnabled"): problem(f"moto {name}: deletion protection off")
        pitr = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        if pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] != "ENABLED":
            problem(f"moto {name}: PITR not enabled")
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        want_ttl = LAYOUT[role]["ttl"]
        if want_ttl and (ttl.get("TimeToLiveStatus") != "ENABLED" or ttl.get("AttributeName") != want_ttl[0]):
            problem(f"moto {name}: TTL {ttl}")
        if t.get("SSEDescription", {}).get("Status") != "ENABLED": problem(f"moto {name}: SSE {t.get('SSEDescription')}")
        try:
            ddb.delete_table(TableName=name)
            problem(f"moto {name}: deleted despite deletion protection")
        except ClientError as e:
            if "DeletionProtection" not in str(e): problem(f"moto {name}: delete_table: {e}")
    for role, name in prov.items():
        t = ddb.describe_table(TableName=name)["Table"]
        caps = [t["ProvisionedThroughput"]] + [g["ProvisionedThroughput"] for g in t.get("GlobalSecondaryIndexes", [])]
        if any(c["ReadCapacityUnits"] != 5 or c["WriteCapacityUnits"] != 1 for c in caps):
            problem(f"moto {name}: provisioned capacity {caps}")

    now_ms = int(time.time() * 1000)
    day = 86_400_000
    retention_s = 90 * 86_400
    principal = "worker-17@example.com"
    ddb.put_item(TableName=names["principals"], Item={
        "principal_id": {"S": principal}, "principal_type": {"S": "worker"}, "status": {"S": "active"},
        "roles": {"L": [{"S": "worker"}]}, "created_at": {"N": str(now_ms)}})
    def cert(serial, expires):
        return {"serial_number": {"S": serial}, "principal_id": {"S": principal},
                "issuer": {"S": "CN=Example Client CA,O=Example"}, "fingerprint_sha256": {"S": "ab" * 32},
                "not_before": {"N": str(now_ms - day)}, "expires_at": {"N": str(expires)},
                "revoked": {"BOOL": False}, "expiry_bucket": {"S": "all"},
                "purge_at": {"N": str(expires // 1000 + retention_s)}}
    soon, later = normalize_serial("00:4D:AE:86"), normalize_serial("0A:1B")
    ddb.put_item(TableName=names["certificates"], Item=cert(soon, now_ms + 10 * day))
    ddb.put_item(TableName=names["certificates"], Item=cert(later, now_ms + 100 * day))
    ddb.put_item(TableName=names["certificates"], Item={**cert("beef", now_ms + 5 * day),
                                                         "principal_id": {"S": "other@example.com"}})
    q = ddb.query(TableName=names["certificates"], IndexName="by_expiry",
                  KeyConditionExpression="expiry_bucket = :b AND expires_at <= :t",
                  ExpressionAttributeValues={":b": {"S": "all"}, ":t": {"N": str(now_ms + 30 * day)}})
    got = [i["serial_number"]["S"] for i in q["Items"]]
    if got != ["beef", soon]: problem(f"moto by_expiry expires_at <= 30d: {got}, want ['beef', '{soon}']")
    q = ddb.query(TableName=names["certificates"], IndexName="by_principal",
                  KeyConditionExpression="principal_id = :p", ExpressionAttributeValues={":p": {"S": principal}})
    got = [i["serial_number"]["S"] for i in q["Items"]]
    if got != [soon, later]: problem(f"moto by_principal: {got}, want ['{soon}', '{later}']")
    audit_chain(ddb, names, principal)

    # The README's runbook, run as written with the aws CLI.
    blocks = runbook_blocks()
    want_blocks = {"suspend", "reactivate", "suspend-all", "revoke", "revoke-unregistered",
                   "certificates-of-principal", "expiring", "expiring-scan"}
    if set(blocks) != want_blocks: problem(f"README runbook blocks {sorted(blocks)}, want {sorted(want_blocks)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ENDPOINT_URL": url, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_PAGER": "",
                "PATH": os.path.abspath(".venv/bin") + os.pathsep + os.environ["PATH"],
                "CERTGATE_PRINCIPALS_TABLE": names["principals"],
                "CERTGATE_CERTIFICATES_TABLE": names["certificates"]})
    def run(name, subst=None, expect_ok=True):
        block = blocks.get(name, "")
        for var, value in (subst or {}).items():
            block = re.sub(rf"^{var}=.*$", f"{var}='{value}'", block, count=1, flags=re.M)
        p = subprocess.run(["bash", "-euo", "pipefail", "-c", block], env=env, capture_output=True, text=True, timeout=60)
        if expect_ok and p.returncode != 0:
            problem(f"runbook {name} failed ({p.returncode}): {p.stderr.strip()}")
        if not expect_ok and (p.returncode == 0 or "ConditionalCheckFailed" not in p.stderr):
            problem(f"runbook {name} {subst} should fail the condition check: rc {p.returncode} {p.stderr.strip()}")
        return p.stdout
    def item(role, key, value):
        return ddb.get_item(TableName=names[role], Key={key: {"S": value}}, ConsistentRead=True).get("Item")
    def recent(ms): return abs(int(ms) - time.time() * 1000) < 120_000

    run("suspend")
    p = item("principals", "principal_id", principal)
    if not (p["status"]["S"] == "suspended" and p["suspended_reason"]["S"] == "Compromised credentials detected"
            and recent(p["suspended_at"]["N"]) and p["principal_type"]["S"] == "worker"):
        problem(f"runbook suspend: record is {p}")
    run("suspend", {"PRINCIPAL": "nobody@example.com"}, expect_ok=False)
    if item("principals", "principal_id", "nobody@example.com"): problem("runbook suspend created a principal")
    run("reactivate")
    p = item("principals", "principal_id", principal)
    if p["status"]["S"] != "active" or "suspended_at" in p or "suspended_reason" in p:
        problem(f"runbook reactivate: record is {p}")
    run("reactivate", {"PRINCIPAL": "nobody@example.com"}, expect_ok=False)
    out = run("certificates-of-principal")
    if soon not in out or later not in out or "beef" in out:
        problem(f"runbook certificates-of-principal: output lacks {soon}/{later} or has beef:\n{out}")
    run("revoke")
    c = item("certificates", "serial_number", soon)
    if not (c["revoked"]["BOOL"] is True and c["revocation_reason"]["S"] == "key_compromise"
            and recent(c["revoked_at"]["N"]) and c["expires_at"]["N"] == str(now_ms + 10 * day)):
        problem(f"runbook revoke: record is {c}")
    run("revoke", {"SERIAL": "ff:ee"}, expect_ok=False)
    if item("certificates", "serial_number", "ffee"): problem("runbook revoke created a certificate")
    out = run("expiring")
    if soon not in out or "beef" not in out or later in out:
        problem(f"runbook expiring: want {soon} and beef, not {later}:\n{out}")
    out = run("expiring-scan")
    if soon not in out or "beef" not in out or later in out:
        problem(f"runbook expiring-scan: want {soon} and beef, not {later}:\n{out}")
    run("revoke-unregistered", {"SERIAL": "ff:ee"})
    c = item("certificates", "serial_number", "ffee")
    if not (c and c["revoked"]["BOOL"] is True and c["issuer"]["S"] == "CN=Example Client CA,O=Example"):
        problem(f"runbook revoke-unregistered: record is {c}")
    out = run("suspend-all")
    if f"suspended {principal}" not in out:
        problem(f"runbook suspend-all: {principal} not suspended:\n{out}")
    # The serial normalisation lines of the revoke block agree with certgate's normalize_serial.
    lines = blocks.get("revoke", "").splitlines()
    norm = "\n".join(l for l in lines if l.startswith(("SERIAL=", "[ $((")))
    for raw in ["00:4D:AE:86", "serial=0A1B", "0", "00", "ABCDEF", "01:00", "7f"]:
        script = re.sub(r"^SERIAL=.*$", f"SERIAL='{raw}'", norm, count=1, flags=re.M) + '\nprintf %s "$SERIAL"'
        got = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True).stdout
        want = normalize_serial(raw.removeprefix("serial="))
        if got != want: problem(f"runbook revoke: serial {raw!r} becomes {got!r}, certgate stores {want!r}")
