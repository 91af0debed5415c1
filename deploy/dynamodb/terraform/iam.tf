# Least-privilege policies, the same as ../iam/*.json and the CloudFormation template:
#   server   — the serving replicas (IRSA role of the pods): GetItem on both tables, and the
#              certificate inventory (UpdateItem on certificates, Query on its indexes);
#   operator — the CLI for Day-2 work: GetItem, PutItem, UpdateItem, Scan; Query on the indexes;
#              GetItem, PutItem, UpdateItem, Query on the audit table (never DeleteItem);
#   admin    — store init [--adopt] / migrate: operator + CreateTable, DescribeTable, UpdateTable,
#              UpdateTimeToLive, DescribeTimeToLive, BatchWriteItem (CreateTable and
#              DescribeTable only, on the audit table);
#   server-admin-api — optional, attached to the server role in addition to `server` only when
#              the replicas serve the admin API: the operator's rights.

data "aws_iam_policy_document" "server" {
  statement {
    sid     = "ReadRecords"
    effect  = "Allow"
    actions = ["dynamodb:GetItem"]
    resources = [
      aws_dynamodb_table.principals.arn,
      aws_dynamodb_table.certificates.arn,
    ]
  }

  # The certificate inventory: inventory items written behind, and the by_expiry Query of
  # the expiry-tier gauges.
  statement {
    sid       = "RecordInventory"
    effect    = "Allow"
    actions   = ["dynamodb:UpdateItem"]
    resources = [aws_dynamodb_table.certificates.arn]

    # Inventory items only (keys seen#…): no registration or revocation.
    condition {
      test     = "ForAllValues:StringLike"
      variable = "dynamodb:LeadingKeys"
      values   = ["seen#*"]
    }
  }

  statement {
    sid       = "QueryInventory"
    effect    = "Allow"
    actions   = ["dynamodb:Query"]
    resources = ["${aws_dynamodb_table.certificates.arn}/index/*"]
  }
}

data "aws_iam_policy_document" "operator" {
  statement {
    sid    = "ReadWriteRecords"
    effect = "Allow"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:Scan",
    ]
    resources = [
      aws_dynamodb_table.principals.arn,
      aws_dynamodb_table.certificates.arn,
    ]
  }

  statement {
    sid     = "QueryIndexes"
    effect  = "Allow"
    actions = ["dynamodb:Query"]
    resources = [
      "${aws_dynamodb_table.principals.arn}/index/*",
      "${aws_dynamodb_table.certificates.arn}/index/*",
    ]
  }

  # Each audited write is one TransactWriteItems, which IAM authorises per part: PutItem of
  # the record, UpdateItem of the head (and the change on its own table); GetItem reads the
  # head, Query the chain (audit list/verify). No DeleteItem.
  statement {
    sid    = "AppendAndReadAudit"
    effect = "Allow"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:Query",
    ]
    resources = [aws_dynamodb_table.audit.arn]
  }
}

data "aws_iam_policy_document" "admin" {
  # Everything the operator may do.
  source_policy_documents = [data.aws_iam_policy_document.operator.json]

  statement {
    sid    = "ManageTables"
    effect = "Allow"
    actions = [
      "dynamodb:CreateTable",
      "dynamodb:DescribeTable",
      "dynamodb:UpdateTable",
      "dynamodb:UpdateTimeToLive",
      "dynamodb:DescribeTimeToLive",
      "dynamodb:BatchWriteItem",
    ]
    resources = [
      aws_dynamodb_table.principals.arn,
      aws_dynamodb_table.certificates.arn,
    ]
  }

  statement {
    sid       = "CreateAuditTable"
    effect    = "Allow"
    actions   = ["dynamodb:CreateTable", "dynamodb:DescribeTable"]
    resources = [aws_dynamodb_table.audit.arn]
  }
}

# Replicas serving the admin API (listen.admin_api) write for their callers, each write with
# its audit record: the operator's rights, in a policy of its own so that the default server
# policy stays read-only.
data "aws_iam_policy_document" "server_admin_api" {
  source_policy_documents = [data.aws_iam_policy_document.operator.json]
}

resource "aws_iam_policy" "server" {
  name        = "${var.policy_name_prefix}-server"
  description = "certgate serving replicas - GetItem on both tables, certificate inventory writes and queries."
  policy      = data.aws_iam_policy_document.server.json
  tags        = local.tags
}

resource "aws_iam_policy" "server_admin_api" {
  name        = "${var.policy_name_prefix}-server-admin-api"
  description = "certgate replicas serving the admin API - operator rights, attached in addition to the server policy."
  policy      = data.aws_iam_policy_document.server_admin_api.json
  tags        = local.tags
}

resource "aws_iam_policy" "operator" {
  name        = "${var.policy_name_prefix}-operator"
  description = "certgate CLI Day-2 - read, create, update and list principals and certificates; append to and read the audit trail."
  policy      = data.aws_iam_policy_document.operator.json
  tags        = local.tags
}

resource "aws_iam_policy" "admin" {
  name        = "${var.policy_name_prefix}-admin"
  description = "certgate store init / migrate - operator rights plus table creation (audit table too), TTL and batch writes."
  policy      = data.aws_iam_policy_document.admin.json
  tags        = local.tags
}

resource "aws_iam_role_policy_attachment" "server" {
  count      = var.server_role_name != "" ? 1 : 0
  role       = var.server_role_name
  policy_arn = aws_iam_policy.server.arn
}

resource "aws_iam_role_policy_attachment" "server_admin_api" {
  count      = var.server_role_name != "" && var.server_admin_api ? 1 : 0
  role       = var.server_role_name
  policy_arn = aws_iam_policy.server_admin_api.arn
}

resource "aws_iam_role_policy_attachment" "operator" {
  count      = var.operator_role_name != "" ? 1 : 0
  role       = var.operator_role_name
  policy_arn = aws_iam_policy.operator.arn
}

resource "aws_iam_role_policy_attachment" "admin" {
  count      = var.admin_role_name != "" ? 1 : 0
  role       = var.admin_role_name
  policy_arn = aws_iam_policy.admin.arn
}
