# certgate store on Amazon DynamoDB: the principals, certificates and audit tables.
# The same tables as ../cloudformation.yaml (kept in step by scripts/check-deploy-dynamodb.sh);
# layout, runbook and IAM in ../README.md. Usable as a root module (provider from the
# environment, e.g. AWS_REGION) or as a child module.

terraform {
  required_version = ">= 1.3"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0"
    }
  }
}

locals {
  principals_table_name   = var.principals_table_name != "" ? var.principals_table_name : "${var.table_name_prefix}_principals"
  certificates_table_name = var.certificates_table_name != "" ? var.certificates_table_name : "${var.table_name_prefix}_certificates"
  audit_table_name        = var.audit_table_name != "" ? var.audit_table_name : "${var.table_name_prefix}_audit"
  provisioned             = var.billing_mode == "PROVISIONED"
  read_capacity           = local.provisioned ? var.read_capacity : null
  write_capacity          = local.provisioned ? var.write_capacity : null
  tags                    = merge({ app = "certgate" }, var.tags)
}

# principal_id → principal_type, status, suspended_at, suspended_reason, roles, created_at.
# Read by GetItem only; listed by Scan (small table). No indexes.
resource "aws_dynamodb_table" "principals" {
  name           = local.principals_table_name
  billing_mode   = var.billing_mode
  read_capacity  = local.read_capacity
  write_capacity = local.write_capacity
  hash_key       = "principal_id"

  attribute {
    name = "principal_id"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true # KMS, AWS managed key alias/aws/dynamodb
  }

  deletion_protection_enabled = true

  tags = local.tags
}

# serial_number → principal_id, issuer, fingerprint_sha256, not_before, expires_at, revoked,
# revoked_at, revocation_reason, expiry_bucket ("all"), purge_at (TTL, epoch seconds).
resource "aws_dynamodb_table" "certificates" {
  name           = local.certificates_table_name
  billing_mode   = var.billing_mode
  read_capacity  = local.read_capacity
  write_capacity = local.write_capacity
  hash_key       = "serial_number"

  attribute {
    name = "serial_number"
    type = "S"
  }

  attribute {
    name = "principal_id"
    type = "S"
  }

  attribute {
    name = "expiry_bucket"
    type = "S"
  }

  attribute {
    name = "expires_at"
    type = "N"
  }

  # `certgate cert list --principal ID`, ordered by expiry.
  global_secondary_index {
    name            = "by_principal"
    hash_key        = "principal_id"
    range_key       = "expires_at"
    projection_type = "ALL"
    read_capacity   = local.read_capacity
    write_capacity  = local.write_capacity
  }

  # `certgate cert list --expiring-within 30d`: expiry_bucket = "all" AND expires_at <= :t.
  # One partition key value by design (certificate writes are rare).
  global_secondary_index {
    name            = "by_expiry"
    hash_key        = "expiry_bucket"
    range_key       = "expires_at"
    projection_type = "ALL"
    read_capacity   = local.read_capacity
    write_capacity  = local.write_capacity
  }

  ttl {
    attribute_name = "purge_at" # epoch seconds: expiry + retention
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  deletion_protection_enabled = true

  tags = local.tags
}

# The audit trail (README "Audit trail"): chain ("certgate") + sequence → at, actor, action,
# target, reason, before, after, prev_hash, hash; the item at sequence 0 is the chain head
# (head_sequence, head_hash). Appended to in the same TransactWriteItems as each change,
# read by GetItem (the head) and Query (audit list/verify). No indexes, no TTL: records are
# never deleted, so it is the most protected table (and no policy grants DeleteItem on it).
resource "aws_dynamodb_table" "audit" {
  name           = local.audit_table_name
  billing_mode   = var.billing_mode
  read_capacity  = local.read_capacity
  write_capacity = local.write_capacity
  hash_key       = "chain"
  range_key      = "sequence"

  attribute {
    name = "chain"
    type = "S"
  }

  attribute {
    name = "sequence"
    type = "N"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled = true
  }

  deletion_protection_enabled = true

  tags = local.tags

  # Terraform's counterpart of CloudFormation's DeletionPolicy: Retain: `terraform destroy`
  # stops here instead of deleting the trail (deletion protection would refuse it anyway).
  lifecycle {
    prevent_destroy = true
  }
}
