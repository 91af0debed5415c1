output "principals_table_name" {
  description = "store.dynamodb.principalsTable in the Helm values."
  value       = aws_dynamodb_table.principals.name
}

output "principals_table_arn" {
  value = aws_dynamodb_table.principals.arn
}

output "certificates_table_name" {
  description = "store.dynamodb.certificatesTable in the Helm values."
  value       = aws_dynamodb_table.certificates.name
}

output "certificates_table_arn" {
  value = aws_dynamodb_table.certificates.arn
}

output "audit_table_name" {
  description = "store.dynamodb.audit_table (certgate derives it from the principals table name when unset)."
  value       = aws_dynamodb_table.audit.name
}

output "audit_table_arn" {
  value = aws_dynamodb_table.audit.arn
}

output "server_policy_arn" {
  description = "Attach to the IRSA role of the certgate pods."
  value       = aws_iam_policy.server.arn
}

output "operator_policy_arn" {
  description = "Attach to the people or jobs that run the certgate CLI (Day-2)."
  value       = aws_iam_policy.operator.arn
}

output "admin_policy_arn" {
  description = "Attach to whoever runs store init / migrations."
  value       = aws_iam_policy.admin.arn
}

output "server_admin_api_policy_arn" {
  description = "Attach to the IRSA role of the certgate pods too, only when they serve the admin API."
  value       = aws_iam_policy.server_admin_api.arn
}
