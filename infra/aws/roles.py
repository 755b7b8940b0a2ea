"""What every IAM role the program creates carries: the workload path and permissions boundary.

The bootstrap program's ``ci-deployer`` may create roles only so (``bootstrap/policies.py``), and
the boundary caps whatever policy is attached to them; the policy pack's ``iam-role-bounded`` rule
refuses a role without either.
"""

from __future__ import annotations

from typing import Any

import pulumi

from infra.naming import WORKLOAD_ROLE_PATH, workload_boundary_arn


def bounded_role_args(account_id: pulumi.Input[str]) -> dict[str, Any]:
    """``aws.iam.Role`` keyword arguments: the path and the account's workload boundary."""
    return {
        "path": WORKLOAD_ROLE_PATH,
        "permissions_boundary": pulumi.Output.from_input(account_id).apply(workload_boundary_arn),
    }
