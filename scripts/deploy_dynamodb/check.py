"""Checks of deploy/dynamodb/ (run from the repository root by scripts/check-deploy-dynamodb.sh):

    check.py static       templates, policies and README agree
    check.py moto URL     tables and runbook on the moto server at URL
    check.py tf-tables URL PRINCIPALS CERTIFICATES [AUDIT]
                          create the tables as terraform/main.tf does (tests/it/dynamodb);
                          without AUDIT, the audit table is left to `certgate store init`"""

import sys

from common import problems
from moto_checks import moto_checks
from static import static_checks
from tf_tables import create_tf_tables

mode = sys.argv[1]
if mode == "static": static_checks()
elif mode == "moto": moto_checks(sys.argv[2])
elif mode == "tf-tables":
    create_tf_tables(sys.argv[2], dict(zip(["principals", "certificates", "audit"], sys.argv[3:6])))
for p in problems: print(f"FAIL {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
