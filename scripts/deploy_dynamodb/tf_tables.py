"""The tables as deploy/dynamodb/terraform/main.tf defines them (keys, attribute
definitions, indexes, TTL), created with boto3 on a DynamoDB-compatible server: what
`terraform apply` would leave, for tests that cannot run Terraform."""

from terraform import load_tf, tf_layout

def create_tf_tables(url, names):
    import boto3
    ddb = boto3.client("dynamodb", endpoint_url=url, region_name="eu-west-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    variables, _, resources, _, _, _ = load_tf()
    for role, name in names.items():
        t = tf_layout(resources[("aws_dynamodb_table", role)], variables)
        keys = lambda h, r: [{"AttributeName": h, "KeyType": "HASH"}] + (
            [{"AttributeName": r, "KeyType": "RANGE"}] if r else [])
        args = {"TableName": name, "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": keys(t["hash"], t["range"]),
                "AttributeDefinitions": [{"AttributeName": a, "AttributeType": ty}
                                         for a, ty in t["attributes"].items()]}
        if t["gsis"]:
            args["GlobalSecondaryIndexes"] = [
                {"IndexName": g, "KeySchema": keys(h, r), "Projection": {"ProjectionType": p}}
                for g, (h, r, p) in t["gsis"].items()]
        ddb.create_table(**args)
        if t["ttl"]:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                "AttributeName": t["ttl"][0], "Enabled": t["ttl"][1]})
        print(f"{name}: created from terraform/main.tf aws_dynamodb_table.{role}")
