"""A small evaluator of IAM policy documents, enough to show who can do what with the CI roles.

It implements the parts of AWS's evaluation logic the bootstrap policies use: ``Action``/``NotAction``
and ``Resource``/``NotResource`` with ``*`` and ``?`` wildcards (actions case-insensitive), the
``StringEquals``/``StringLike``/``ArnEquals``/``ArnLike`` condition operators (a missing key never
matches), explicit deny over allow, and a permissions boundary as a second set of policies that must
also allow. Anything else in a document (other operators, ``...IfExists``) raises instead of being
guessed, so a policy this cannot judge fails the test rather than passing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any

Policy = Mapping[str, Any]
OPERATORS = {"StringEquals": False, "StringLike": True, "ArnEquals": False, "ArnLike": True}
"""Condition operator -> whether its values are wildcard patterns."""

POWER_USER_ACCESS: Policy = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "NotAction": ["iam:*", "organizations:*", "account:*"], "Resource": "*"},
        {
            "Effect": "Allow",
            "Action": [
                "account:GetAccountInformation",
                "account:GetPrimaryEmail",
                "account:ListRegions",
                "iam:CreateServiceLinkedRole",
                "iam:DeleteServiceLinkedRole",
                "iam:ListRoles",
                "organizations:DescribeOrganization",
            ],
            "Resource": "*",
        },
    ],
}
"""AWS's managed PowerUserAccess, as published (the deployer's other policy)."""
ADMINISTRATOR_ACCESS: Policy = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}


def _list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(patterns: Iterable[str], value: str, *, fold: bool) -> bool:
    return any(fnmatchcase(value.lower(), p.lower()) if fold else fnmatchcase(value, p) for p in patterns)


def _applies(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if "Action" in statement:
        if not _matches(_list(statement["Action"]), action, fold=True):
            return False
    elif _matches(_list(statement["NotAction"]), action, fold=True):
        return False
    if "Resource" in statement:
        if not _matches(_list(statement["Resource"]), resource, fold=False):
            return False
    elif _matches(_list(statement["NotResource"]), resource, fold=False):
        return False
    for operator, pairs in statement.get("Condition", {}).items():
        if operator not in OPERATORS:
            raise NotImplementedError(f"condition operator {operator}")
        for key, values in pairs.items():
            have = context.get(key)
            if have is None:
                return False
            wildcard = OPERATORS[operator]
            if not any(fnmatchcase(have, v) if wildcard else have == v for v in _list(values)):
                return False
    return True


def allows(policies: Iterable[Policy], action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    """Whether ``policies`` together allow the request: some statement allows it and none denies it."""
    allowed = False
    for policy in policies:
        for statement in policy["Statement"]:
            if _applies(statement, action, resource, context or {}):
                if statement["Effect"] == "Deny":
                    return False
                allowed = True
    return allowed


def effective(identity: Iterable[Policy], boundary: Policy | None, action: str, resource: str,
              context: Mapping[str, str] | None = None) -> bool:  # fmt: skip
    """A principal's permission: its policies allow it and, when it has one, so does its boundary."""
    ok = allows(identity, action, resource, context)
    return ok and (boundary is None or allows([boundary], action, resource, context))
