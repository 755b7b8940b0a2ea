"""The VPC: public and private subnets across AZs, NAT, VPC endpoints and flow logs.

Nodes live in private subnets; public subnets hold only NAT gateways and internet-facing load
balancers. Subnets carry the ``kubernetes.io/role/*`` tags the AWS load balancer controller uses to
pick them, and the private ones the tag Karpenter places nodes by. Every flow (accepted and
rejected) is logged to a KMS-encrypted log group.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.policies import assume_role_policy, flow_logs_delivery_policy
from infra.aws.roles import bounded_role_args
from infra.aws.stateful import encrypted_log_group
from infra.naming import DISCOVERY_TAG
from infra.schema import Network as NetworkConfig
from infra.schema import Protection

FLOW_LOG_RETENTION_DAYS = 90
"""Long enough to investigate an incident found weeks later; flow logs are bulky, so not longer."""


@dataclass(frozen=True)
class SubnetSpec:
    """One subnet to create."""

    name: str
    availability_zone: str
    cidr: str
    public: bool
    tags: dict[str, str]


def subnet_layout(cidr: str, zones: list[str], cluster_name: str) -> list[SubnetSpec]:
    """Carve the VPC CIDR into one private and one public subnet per AZ.

    The VPC is split in eight; private subnets take one eighth each (pods get VPC IPs through the
    VPC CNI, so they need the room), and the last eighth is split again for the small public subnets.
    Deterministic, so a stack's subnets never move between updates.
    """
    net = ipaddress.IPv4Network(cidr)
    if len(zones) > 7:
        raise ValueError(f"at most 7 availability zones fit this layout, got {len(zones)}")
    eighths = list(net.subnets(new_prefix=net.prefixlen + 3))
    publics = list(eighths[7].subnets(new_prefix=net.prefixlen + 6))
    cluster_tag = {f"kubernetes.io/cluster/{cluster_name}": "shared"}
    specs = []
    for i, zone in enumerate(zones):
        specs.append(
            SubnetSpec(
                name=f"private-{zone}",
                availability_zone=zone,
                cidr=str(eighths[i]),
                public=False,
                tags={
                    "Name": f"{cluster_name}-private-{zone}",
                    "kubernetes.io/role/internal-elb": "1",
                    DISCOVERY_TAG: cluster_name,
                }
                | cluster_tag,
            )
        )
        specs.append(
            SubnetSpec(
                name=f"public-{zone}",
                availability_zone=zone,
                cidr=str(publics[i]),
                public=True,
                tags={"Name": f"{cluster_name}-public-{zone}", "kubernetes.io/role/elb": "1"} | cluster_tag,
            )
        )
    return specs


def nat_zones(zones: list[str], mode: str) -> dict[str, str]:
    """Map each AZ's private subnet to the AZ whose NAT gateway it uses.

    ``single`` routes every AZ through the first AZ's NAT (cheap; that AZ is a shared egress point);
    ``perAz`` keeps egress inside each AZ (an AZ outage takes out only its own NAT).
    """
    if mode == "single":
        return {zone: zones[0] for zone in zones}
    if mode == "perAz":
        return {zone: zone for zone in zones}
    raise ValueError(f"natGateways {mode!r}: allowed 'single' or 'perAz'")


class Network(pulumi.ComponentResource):
    """VPC, subnets, internet/NAT gateways, route tables and VPC endpoints."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        cfg: NetworkConfig,
        cluster_name: str,
        region: str,
        account_id: pulumi.Input[str],
        protection: Protection | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("purchase-classifier:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cfg.cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": cluster_name},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": cluster_name}, opts=child)

        subnets: dict[str, aws.ec2.Subnet] = {}
        for spec in subnet_layout(cfg.cidr, cfg.availability_zones, cluster_name):
            subnets[spec.name] = aws.ec2.Subnet(
                f"{name}-{spec.name}",
                vpc_id=vpc.id,
                cidr_block=spec.cidr,
                availability_zone=spec.availability_zone,
                map_public_ip_on_launch=False,
                tags=spec.tags,
                opts=child,
            )

        public_rt = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id, tags={"Name": f"{cluster_name}-public"}, opts=child
        )
        aws.ec2.Route(
            f"{name}-public-default",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )

        nat_by_zone: dict[str, aws.ec2.NatGateway] = {}
        placement = nat_zones(cfg.availability_zones, cfg.nat_gateways)
        for zone in sorted(set(placement.values()), key=cfg.availability_zones.index):
            eip = aws.ec2.Eip(
                f"{name}-nat-{zone}", domain="vpc", tags={"Name": f"{cluster_name}-nat-{zone}"}, opts=child
            )
            nat_by_zone[zone] = aws.ec2.NatGateway(
                f"{name}-nat-{zone}",
                allocation_id=eip.id,
                subnet_id=subnets[f"public-{zone}"].id,
                tags={"Name": f"{cluster_name}-nat-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            )

        private_rts = []
        for zone in cfg.availability_zones:
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{zone}",
                route_table_id=public_rt.id,
                subnet_id=subnets[f"public-{zone}"].id,
                opts=child,
            )
            rt = aws.ec2.RouteTable(
                f"{name}-private-{zone}",
                vpc_id=vpc.id,
                tags={"Name": f"{cluster_name}-private-{zone}"},
                opts=child,
            )
            aws.ec2.Route(
                f"{name}-private-{zone}-default",
                route_table_id=rt.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat_by_zone[placement[zone]].id,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{zone}",
                route_table_id=rt.id,
                subnet_id=subnets[f"private-{zone}"].id,
                opts=child,
            )
            private_rts.append(rt)

        # S3 traffic (training data, models) stays on the AWS network and skips NAT charges.
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags={"Name": f"{cluster_name}-s3"},
            opts=child,
        )

        private_ids = [subnets[f"private-{z}"].id for z in cfg.availability_zones]
        if cfg.interface_endpoints:
            sg = aws.ec2.SecurityGroup(
                f"{name}-endpoints",
                vpc_id=vpc.id,
                description="HTTPS from inside the VPC to AWS interface endpoints",
                ingress=[
                    aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=443, to_port=443, cidr_blocks=[cfg.cidr])
                ],
                tags={"Name": f"{cluster_name}-endpoints"},
                opts=child,
            )
            for service in cfg.interface_endpoints:
                aws.ec2.VpcEndpoint(
                    f"{name}-{service.replace('.', '-')}",
                    vpc_id=vpc.id,
                    service_name=f"com.amazonaws.{region}.{service}",
                    vpc_endpoint_type="Interface",
                    private_dns_enabled=True,
                    subnet_ids=private_ids,
                    security_group_ids=[sg.id],
                    tags={"Name": f"{cluster_name}-{service}"},
                    opts=child,
                )

        flow_logs = encrypted_log_group(
            f"{name}-flow-logs",
            f"/aws/vpc/{cluster_name}/flow-logs",
            FLOW_LOG_RETENTION_DAYS,
            region,
            account_id,
            protection or Protection(),
            self,
        )
        flow_role = aws.iam.Role(
            f"{name}-flow-logs",
            description=f"VPC flow logs of {cluster_name} into CloudWatch Logs",
            assume_role_policy=json.dumps(assume_role_policy("vpc-flow-logs.amazonaws.com")),
            **bounded_role_args(account_id),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=flow_role.id,
            policy=flow_logs.arn.apply(lambda arn: json.dumps(flow_logs_delivery_policy(arn))),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-logs",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=flow_logs.arn,
            iam_role_arn=flow_role.arn,
            opts=child,
        )

        self.vpc_id = vpc.id
        self.private_subnet_ids = private_ids
        self.public_subnet_ids = [subnets[f"public-{z}"].id for z in cfg.availability_zones]
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
            }
        )
