"""Wrap the pure rules of :mod:`policy.rules` into pulumi-policy objects, all MANDATORY.

Kept apart from ``__main__.py`` because constructing a ``PolicyPack`` starts the analyzer gRPC server
the Pulumi CLI talks to; the tests build the same policy objects from :func:`policies` and call their
``validate`` callbacks with hand-made ``ResourceValidationArgs`` instead.
"""

from __future__ import annotations

from collections.abc import Callable

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from policy.rules import RESOURCE_RULES, STACK_RULES, ResourceRule, StackResource, StackRule

PACK_NAME = "purchase-classifier"


def _resource_validator(check: ResourceRule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    """Adapt ``check(type, props) -> [messages]`` to pulumi-policy's callback signature."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, args.props):
            report_violation(message, None)

    return validate


def _stack_resource(resource: PolicyResource) -> StackResource:
    deps = {d.urn for d in resource.dependencies}
    for items in resource.property_dependencies.values():
        deps.update(d.urn for d in items)
    return StackResource(resource.resource_type, resource.urn, resource.props, frozenset(deps), resource.opts.protect)


def _stack_validator(check: StackRule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    """Adapt ``check(resources) -> [(urn, message)]`` to pulumi-policy's stack callback."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for urn, message in check(_stack_resource(r) for r in args.resources):
            report_violation(message, urn)

    return validate


def policies() -> list[Policy]:
    """Every rule of the pack, each MANDATORY (a violation fails the preview/update)."""
    out: list[Policy] = [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_resource_validator(rule.check),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for rule in RESOURCE_RULES
    ]
    out.extend(
        StackValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_stack_validator(rule.check),
            enforcement_level=EnforcementLevel.MANDATORY,
        )
        for rule in STACK_RULES
    )
    return out
