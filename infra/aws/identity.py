"""One IAM role per workload, bound to its ServiceAccount with EKS Pod Identity.

Pod Identity (rather than IRSA) needs no OIDC provider and its trust policy is the same for every
role; the binding to namespace/ServiceAccount lives in the association, next to the role.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pulumi
import pulumi_aws as aws

from infra.aws.policies import WORKLOAD_ACCESS, BucketAccess, bucket_access_policy, pod_identity_trust_policy
from infra.aws.roles import bounded_role_args


def trust_policy_json(account_id: str) -> str:
    """The Pod Identity trust document as IAM takes it (a JSON string)."""
    return json.dumps(pod_identity_trust_policy(account_id))


def _policy_json(access: BucketAccess) -> Callable[[list[str]], str]:
    def render(arns: list[str]) -> str:
        return json.dumps(bucket_access_policy(arns[0], arns[1], access))

    return render


class Identities(pulumi.ComponentResource):
    """Roles, inline bucket policies and Pod Identity associations for the workloads.

    :param account_id: the account the stack deploys into (``aws.get_caller_identity``), which the
        trust policies pin with ``aws:SourceAccount``.
    """

    role_arns: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        cluster_name: pulumi.Input[str],
        namespace: str,
        bucket_arn: pulumi.Output[str],
        kms_key_arn: pulumi.Output[str],
        account_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:aws:Identities", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.role_arns = {}
        trust = pulumi.Output.from_input(account_id).apply(trust_policy_json)
        for workload, access in WORKLOAD_ACCESS.items():
            role = aws.iam.Role(
                f"{name}-{workload}",
                description=f"purchase-classifier {workload} pods ({namespace}/{workload})",
                assume_role_policy=trust,
                **bounded_role_args(account_id),
                opts=child,
            )
            aws.iam.RolePolicy(
                f"{name}-{workload}-bucket",
                role=role.id,
                policy=pulumi.Output.all(bucket_arn, kms_key_arn).apply(_policy_json(access)),
                opts=child,
            )
            aws.eks.PodIdentityAssociation(
                f"{name}-{workload}",
                cluster_name=cluster_name,
                namespace=namespace,
                service_account=workload,
                role_arn=role.arn,
                opts=child,
            )
            self.role_arns[workload] = role.arn
        self.register_outputs({"roleArns": self.role_arns})
