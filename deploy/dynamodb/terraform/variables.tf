variable "table_name_prefix" {
  description = "Tables are named PREFIX_principals, PREFIX_certificates and PREFIX_audit (e.g. airunner_prod gives airunner_prod_principals), unless the names below are set."
  type        = string
  default     = "certgate"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.-]{1,200}$", var.table_name_prefix))
    error_message = "table_name_prefix: 1-200 characters of a-z, A-Z, 0-9, _ . -"
  }
}

variable "principals_table_name" {
  description = "Full name of the principals table; empty = PREFIX_principals."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-zA-Z0-9_.-]{3,255})?$", var.principals_table_name))
    error_message = "principals_table_name: empty or 3-255 characters of a-z, A-Z, 0-9, _ . -"
  }
}

variable "certificates_table_name" {
  description = "Full name of the certificates table; empty = PREFIX_certificates."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-zA-Z0-9_.-]{3,255})?$", var.certificates_table_name))
    error_message = "certificates_table_name: empty or 3-255 characters of a-z, A-Z, 0-9, _ . -"
  }
}

variable "audit_table_name" {
  description = "Full name of the audit table (store.dynamodb.audit_table); empty = PREFIX_audit, which is also certgate's default when the principals table is PREFIX_principals."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-zA-Z0-9_.-]{3,255})?$", var.audit_table_name))
    error_message = "audit_table_name: empty or 3-255 characters of a-z, A-Z, 0-9, _ . -"
  }
}

variable "billing_mode" {
  description = "PAY_PER_REQUEST (on-demand, default) or PROVISIONED, for the tables and their indexes."
  type        = string
  default     = "PAY_PER_REQUEST"

  validation {
    condition     = contains(["PAY_PER_REQUEST", "PROVISIONED"], var.billing_mode)
    error_message = "billing_mode must be PAY_PER_REQUEST or PROVISIONED."
  }
}

variable "read_capacity" {
  description = "Read capacity units per table and per index; used only when billing_mode is PROVISIONED."
  type        = number
  default     = 5
}

variable "write_capacity" {
  description = "Write capacity units per table and per index; used only when billing_mode is PROVISIONED."
  type        = number
  default     = 1
}

variable "policy_name_prefix" {
  description = "Prefix of the IAM policy names: PREFIX-server, PREFIX-server-admin-api, PREFIX-operator, PREFIX-admin. IAM names are global to the account: give each deployment its own (e.g. airunner-prod-certgate)."
  type        = string
  default     = "certgate"

  validation {
    condition     = can(regex("^[a-zA-Z0-9+=,.@_-]{1,100}$", var.policy_name_prefix))
    error_message = "policy_name_prefix: 1-100 characters of a-z, A-Z, 0-9, + = , . @ _ -"
  }
}

variable "server_role_name" {
  description = "IAM role to attach the server policy to (the IRSA role of the pods); empty = none."
  type        = string
  default     = ""
}

variable "server_admin_api" {
  description = "true when the replicas serve the admin API (listen.admin_api): also attach the server-admin-api policy (writes to all three tables) to server_role_name."
  type        = bool
  default     = false
}

variable "operator_role_name" {
  description = "IAM role to attach the operator policy to (people or jobs running the CLI); empty = none."
  type        = string
  default     = ""
}

variable "admin_role_name" {
  description = "IAM role to attach the admin policy to (store init / migrate); empty = none."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Extra tags for the tables and the policies."
  type        = map(string)
  default     = {}
}
