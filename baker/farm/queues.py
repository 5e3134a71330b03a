"""Which queue a build goes to, and which queues a worker takes: capabilities as names.

A libvirt build of a recipe that asks for an accelerator goes to that accelerator's queue;
one that leaves it to `auto` goes to the host-agnostic queue. A KVM host takes KVM, TCG and
any builds (it can emulate); a TCG-only host takes TCG and any. EC2 builds need a host with
AWS credentials, not a hypervisor."""

from __future__ import annotations

from typing import Any


def route(payload: dict[str, Any]) -> str:
    if payload["backend"] == "ec2":
        return "baker.ec2"
    accel = payload.get("accel") or "auto"
    return f"baker.libvirt.{payload['arch']}.{'any' if accel == 'auto' else accel}"


def for_host(accel: str, arch: str = "amd64", ec2: bool = False) -> list[str]:
    """The queues a worker on a host with `accel` (kvm or tcg) serves."""
    kinds = ["kvm", "tcg", "any"] if accel == "kvm" else ["tcg", "any"]
    return [f"baker.libvirt.{arch}.{k}" for k in kinds] + (["baker.ec2"] if ec2 else [])
