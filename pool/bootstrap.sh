#!/usr/bin/env bash
# Set up guestpool on a Debian 12 host: system packages, .venv, the project.
#
#   bash pool/bootstrap.sh          # runtime only
#   bash pool/bootstrap.sh --dev    # plus test and lint tools
#
# Idempotent: a second run checks a stamp and returns in about a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GUESTPOOL_VENV:-$here/.venv}"
extras=""
[[ "${1:-}" == "--dev" ]] && extras="[dev]"

die() { echo "guestpool bootstrap: $*" >&2; exit 1; }

# Debian's python3 matches the ABI of Debian's libguestfs bindings exactly.
python=/usr/bin/python3
system_packages=(libguestfs-tools python3-guestfs qemu-utils python3-venv e2fsprogs
                 fdisk lvm2 xfsprogs btrfs-progs dosfstools procps
                 mdadm cryptsetup-bin ntfs-3g db5.3-util
                 libvirt-daemon-system python3-libvirt
                 nats-server)

# the status page test drives a real headless browser
[[ -n $extras ]] && system_packages+=(chromium chromium-driver)

missing=()
for p in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "apt-get not found: install ${missing[*]} with your package manager (see README)"
    sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "installing ${missing[*]} needs root; run as root or install sudo"
        sudo="sudo"
    fi
    echo "guestpool bootstrap: installing system packages: ${missing[*]}" >&2
    $sudo apt-get update -qq || die "apt-get update failed (is the network to the Debian mirror up?)"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" \
        >/tmp/guestpool-apt.log 2>&1 \
        || die "apt-get install ${missing[*]} failed; see /tmp/guestpool-apt.log"
fi
[[ -x $python ]] || die "$python is missing after installing python3"

bindings_dir=/usr/lib/python3/dist-packages
[[ -f $bindings_dir/guestfs.py ]] || die "libguestfs Python bindings not found in $bindings_dir (package python3-guestfs)"

stamp="$venv/.guestpool-stamp"
want="$(cat "$here/pyproject.toml" "$here/pool/bootstrap.sh" | sha256sum | cut -d' ' -f1)$extras"
if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -x $venv/bin/guestpool ]]; then
    exit 0
fi

echo "guestpool bootstrap: creating $venv" >&2
[[ -x $venv/bin/python ]] || "$python" -m venv "$venv" || die "could not create $venv (package python3-venv)"

# Bring in only the libguestfs and libvirt bindings from dist-packages, not all of
# Debian's modules.
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$venv/guestfs-bindings"
for f in "$bindings_dir"/guestfs.py "$bindings_dir"/libguestfsmod*.so \
         "$bindings_dir"/libvirt.py "$bindings_dir"/libvirt_qemu.py "$bindings_dir"/libvirtaio.py \
         "$bindings_dir"/libvirtmod.cpython*.so "$bindings_dir"/libvirtmod_qemu.cpython*.so; do
    [[ -e $f ]] && ln -sf "$f" "$venv/guestfs-bindings/$(basename "$f")"
done
echo "$venv/guestfs-bindings" > "$site/guestfs-bindings.pth"
"$venv/bin/python" -c 'import guestfs, libvirt' || die "the venv cannot import guestfs and libvirt"

pip_log=/tmp/guestpool-pip.log
echo "guestpool bootstrap: installing Python packages (log: $pip_log)" >&2
"$venv/bin/python" -m pip install -q --upgrade pip >"$pip_log" 2>&1 \
    || die "pip upgrade failed (PyPI reachable?); see $pip_log"
"$venv/bin/python" -m pip install -q -e "$here$extras" >>"$pip_log" 2>&1 \
    || die "pip install of guestpool failed; see $pip_log"
echo "$want" > "$stamp"
echo "guestpool bootstrap: ready ($venv/bin/guestpool)" >&2
