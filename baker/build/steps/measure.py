"""The measure step: boot the published image fresh, several times, the way a user's
hypervisor would (baker.backends.plainqemu), and record how long it takes to be usable (boot.json).

Times are the host's monotonic clock from starting qemu: to the first console output and to
the first successful SSH command; the guest's own view comes from `systemd-analyze`.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

import paramiko

from baker.backends import plainqemu as plainboot
from baker.backends.accel import Accel
from baker.errors import BuildError
from baker.progress import Reporter
from baker.spec import PerAccel

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
_STARTUP = re.compile(r"Startup finished in (.*?)(?:= .*)?$", re.M)


def timespan_s(text: str) -> float:
    """systemd's time spans ("1min 2.345s", "812ms") in seconds."""
    total = 0.0
    parts = re.findall(r"([\d.]+)(us|ms|min|h|s)\b", text)
    if not parts:
        raise ValueError(f"not a systemd time span: {text!r}")
    for number, unit in parts:
        total += float(number) * _UNITS[unit]
    return total


def parse_startup(text: str) -> dict[str, float]:
    """`systemd-analyze time`: {"kernel_s": …, "initrd_s": …, "userspace_s": …}."""
    found = _STARTUP.search(text)
    if not found:
        raise ValueError(f"unexpected systemd-analyze output: {text.strip()!r}")
    out = {}
    for span, phase in re.findall(r"([\d.]+\w+(?: [\d.]+\w+)*) \((\w+)\)", found.group(1)):
        out[f"{phase}_s"] = round(timespan_s(span), 3)
    return out


def parse_blame(text: str, top: int = 10) -> list[dict[str, object]]:
    rows = []
    for line in text.splitlines():
        span, _, unit = line.strip().rpartition(" ")
        if not unit or not span:
            continue
        try:
            rows.append({"unit": unit, "seconds": round(timespan_s(span), 3)})
        except ValueError:
            continue
    return rows[:top]


def budget_for(budget: float | PerAccel | None, accel: Accel) -> float | None:
    if budget is None or isinstance(budget, float | int):
        return budget
    return float(getattr(budget, accel))


def _guest(client: paramiko.SSHClient, command: str) -> str:
    _, out, err = client.exec_command(command, timeout=300)
    code = out.channel.recv_exit_status()
    text = out.read().decode(errors="replace")
    if code != 0:
        raise BuildError(f"`{command}` failed in the booted image: {err.read().decode().strip()}")
    return text


def one_run(image: Path, workdir: Path, accel: Accel, timeout: float) -> dict[str, object]:
    with plainboot.boot(image, workdir, accel) as machine:
        client, to_ssh = machine.wait_for_ssh(timeout)
        with client:
            # systemd-analyze answers only once the boot transaction is complete.
            _guest(client, "systemctl is-system-running --wait >/dev/null || true")
            startup = parse_startup(_guest(client, "systemd-analyze time"))
            blame = parse_blame(_guest(client, "systemd-analyze blame --no-pager"))
    return {
        "time_to_first_output_s": (
            round(machine.first_output_s, 3) if machine.first_output_s is not None else None
        ),
        "time_to_ssh_s": round(to_ssh, 3),
        "kernel_s": startup.get("kernel_s"),
        "initrd_s": startup.get("initrd_s"),
        "userspace_s": startup.get("userspace_s"),
        "slowest_units": blame,
    }


def measure(
    image: Path,
    digest: str,
    workdir: Path,
    accel: Accel,
    runs: int,
    budget: float | PerAccel | None,
    reporter: Reporter,
    timeout: float = 300,
) -> dict[str, object]:
    """boot.json's content; raises BuildError when the median time to SSH is over budget."""
    results = []
    for i in range(runs):
        result = one_run(image, workdir, accel, timeout)
        reporter.info(
            f"boot {i + 1}/{runs}: SSH after {result['time_to_ssh_s']:.1f} s "
            f"(kernel {result['kernel_s']} s, userspace {result['userspace_s']} s)"
        )
        results.append(result)

    def median(key: str) -> float | None:
        values = [r[key] for r in results if isinstance(r[key], int | float)]
        return round(statistics.median(values), 3) if values else None

    limit = budget_for(budget, accel)
    record: dict[str, object] = {
        "image": digest,
        "accel": accel,
        "runs": len(results),
        "time_to_first_output_s": median("time_to_first_output_s"),
        "time_to_ssh_s": median("time_to_ssh_s"),
        "kernel_s": median("kernel_s"),
        "initrd_s": median("initrd_s"),
        "userspace_s": median("userspace_s"),
        "budget_s": limit,
        "within_budget": None,
        "each_run": results,
        "method": "qemu-system-x86_64 -drive (no -kernel), snapshot=on, user-mode NIC; "
        "host monotonic clock from process start",
    }
    median_ssh = record["time_to_ssh_s"]
    if limit is not None and isinstance(median_ssh, float):
        record["within_budget"] = median_ssh <= limit
        if median_ssh > limit:
            raise BuildError(
                f"boot budget exceeded: the median time to SSH over {runs} "
                f"boot{'s' if runs != 1 else ''} was "
                f"{median_ssh:.1f} s under {accel}, over the recipe's boot_budget_s of {limit:g} s."
            )
    return record
