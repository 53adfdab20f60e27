"""Which VM of the demo fleet is which kind: easy kinds by weight, the hard
kinds (real-fleet layouts from the fidelity corpus) after the first ones."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("debian", "fedora", "alpine", "lvm", "twodisk", "data")


# Share of each kind in a large fleet (the first VMs cover every kind once).
WEIGHTS = {"debian": 5, "fedora": 2, "alpine": 2, "lvm": 1, "twodisk": 1, "data": 1}


#: corpus VMs that become demo kinds of the same name (real-fleet layouts)
HARD_KINDS = (
    "btrfs-subvol",  # Fedora 40, root and /home on btrfs subvolumes
    "mdraid",  # Debian 11, md RAID1 over two disks, LVM on the array
    "luks-lvm",  # Ubuntu 22.04, LVM on LUKS, with its key file
    "coreos",  # Container Linux: /usr on its own partition
    "windows",  # Windows Server 2019, NTFS with registry hives
    "centos7",  # CentOS 7: Berkeley DB rpmdb, no os-release, xfs root
    "arch",  # Arch Linux, pacman
)


QUICKSTART = 24  # the first VMs: easy kinds only (guestpool quickstart's default count)


HARD_EVERY = 10  # after the first hard kinds, every 10th VM is a hard kind


@dataclass
class Spec:
    name: str
    kind: str
    index: int
    seed: int


def plan(count: int) -> list[Spec]:
    kinds: list[str] = list(KINDS)
    cycle = [k for k, w in WEIGHTS.items() for _ in range(w)]
    while len(kinds) < count:
        kinds.append(_hard_kind(len(kinds)) or cycle[len(kinds) % len(cycle)])
    return [Spec(f"vm{i:05d}-{k}", k, i, 1000 + i) for i, k in enumerate(kinds[:count])]


def _hard_kind(index: int) -> str | None:
    """The hard kind of VM ``index``, or None for an easy one (see the module docstring)."""
    after = index - QUICKSTART
    if after < 0:
        return None
    if after < len(HARD_KINDS):
        return HARD_KINDS[after]
    after -= len(HARD_KINDS)
    return HARD_KINDS[after // HARD_EVERY % len(HARD_KINDS)] if after % HARD_EVERY == 0 else None
