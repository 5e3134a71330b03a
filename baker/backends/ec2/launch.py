"""The AWS calls that make a build instance: its key pair, its security group (in the given
subnet's VPC or the default one), the instance itself, and the SSH rule for the builder.
Each returns what it made; the machine remembers it at once, so cleanup finds it."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from baker.backends.base import BuildLabel
from baker.backends.ec2.base import BaseAmi
from baker.edge.aws import AwsError, api, tag_spec
from baker.edge.ssh import Endpoint
from baker.errors import BuildError, InputError
from baker.recipe.spec import Ec2Backend

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import (
        InstanceTypeDef,
        IpPermissionTypeDef,
        RunInstancesRequestTypeDef,
    )


def import_key_pair(ec2: EC2Client, label: BuildLabel, public_key: str) -> None:
    """The build's client key as the key pair named `label.name`."""
    with api(f"import the build's key pair {label.name}"):
        ec2.import_key_pair(
            KeyName=label.name,
            PublicKeyMaterial=public_key.encode(),
            TagSpecifications=[tag_spec("key-pair", label.tags())],
        )


def create_security_group(ec2: EC2Client, config: Ec2Backend, label: BuildLabel) -> str:
    """A security group of the build's name, with no rules yet; returns its id."""
    vpc = _vpc(ec2, config)
    with api(f"create the build's security group {label.name}"):
        return str(
            ec2.create_security_group(
                GroupName=label.name,
                Description=f"baker build {label.build_id}: SSH from the builder only",
                VpcId=vpc,
                TagSpecifications=[tag_spec("security-group", label.tags())],
            )["GroupId"]
        )


def _vpc(ec2: EC2Client, config: Ec2Backend) -> str:
    if config.subnet:
        try:
            with api(f"look up backend.subnet {config.subnet}"):
                subnets = ec2.describe_subnets(SubnetIds=[config.subnet])["Subnets"]
        except AwsError as e:
            if not e.code.startswith("InvalidSubnetID"):
                raise
            subnets = []
        if not subnets:
            raise InputError(f"backend.subnet {config.subnet}: no such subnet in {config.region}.")
        return str(subnets[0]["VpcId"])
    with api("find the region's default VPC"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])
    if not vpcs["Vpcs"]:
        raise InputError(
            f"{config.region} has no default VPC: give backend.subnet, a subnet to "
            "launch the build instance in."
        )
    return str(vpcs["Vpcs"][0]["VpcId"])


def run_instance(
    ec2: EC2Client,
    config: Ec2Backend,
    label: BuildLabel,
    base: BaseAmi,
    key_name: str,
    group_id: str,
) -> str:
    """One instance of `base` for the build; returns its id."""
    params: RunInstancesRequestTypeDef = {
        "ImageId": base.image_id,
        # The stubs list the instance types EC2 had when they were made; EC2 judges the name.
        "InstanceType": cast("InstanceTypeType", config.instance_type),
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": key_name,
        "SecurityGroupIds": [group_id],
        # A retried call must not start a second instance.
        "ClientToken": label.build_id,
        "InstanceInitiatedShutdownBehavior": "stop",
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            tag_spec("instance", label.tags()),
            tag_spec("volume", label.tags()),
        ],
    }
    if config.subnet:
        params["SubnetId"] = config.subnet
    if config.root_volume_gib:
        params["BlockDeviceMappings"] = [
            {
                "DeviceName": base.root_device,
                "Ebs": {"VolumeSize": config.root_volume_gib, "DeleteOnTermination": True},
            }
        ]
    with api(f"launch a {config.instance_type} instance from {base.image_id}"):
        reply = ec2.run_instances(**params)
    return str(reply["Instances"][0]["InstanceId"])


def describe_instance(ec2: EC2Client, instance_id: str) -> InstanceTypeDef:
    with api(f"describe instance {instance_id}"):
        reply = ec2.describe_instances(InstanceIds=[instance_id])
    return reply["Reservations"][0]["Instances"][0].copy()


def instance_endpoint(ec2: EC2Client, config: Ec2Backend, instance_id: str) -> Endpoint:
    """Where SSH reaches the instance: ssh_host/ssh_port when given, else its address."""
    if config.ssh_host:
        return Endpoint(config.ssh_host, config.ssh_port)
    instance = describe_instance(ec2, instance_id)
    if config.ssh_interface == "private_ip":
        address = instance.get("PrivateIpAddress")
    else:
        address = instance.get("PublicIpAddress")
    if not address:
        raise BuildError(
            f"instance {instance_id} has no {config.ssh_interface.replace('_', ' ')}"
            " address: give backend.subnet one that assigns public addresses, or set "
            "backend.ssh_interface: private_ip when this machine can reach the subnet."
        )
    return Endpoint(str(address), config.ssh_port)


def allow_ssh(ec2: EC2Client, group_id: str, cidr: str) -> None:
    """Let SSH in to the group's instances from `cidr`, and from nowhere else."""
    rule: IpPermissionTypeDef = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22}
    if ":" in cidr:
        rule["Ipv6Ranges"] = [{"CidrIpv6": cidr, "Description": "the baker builder"}]
    else:
        rule["IpRanges"] = [{"CidrIp": cidr, "Description": "the baker builder"}]
    with api(f"allow SSH from {cidr} in {group_id}"):
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
