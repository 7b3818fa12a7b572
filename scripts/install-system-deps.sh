#!/usr/bin/env bash
# Installs the Debian packages veza-canary's lab and tests need. Idempotent; root only.
# Incus comes from Debian's bookworm-backports suite, added with the same mirror URI
# the machine's apt sources already use (never a hard-coded host).
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: must run as root (apt-get)" >&2
  exit 2
fi

# Packages must not start daemons at install time (there is no systemd here).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 0755 /usr/sbin/policy-rc.d
fi

need=()
for pkg in incus-base dnsmasq-base debootstrap nftables socat openssh-server openssh-client curl git make \
           iproute2 procps; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0

if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
  mirror=$(grep -rhs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
           | grep -v security | head -n1)
  if [ -z "$mirror" ]; then
    mirror=$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -n1)
  fi
  if [ -z "$mirror" ]; then
    echo "install-system-deps: cannot find the Debian mirror in /etc/apt" >&2
    exit 1
  fi
  cat > /etc/apt/sources.list.d/veza-backports.sources <<SRC
Types: deb
URIs: ${mirror}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports incus-base >/dev/null
apt-get install -y -qq --no-install-recommends dnsmasq-base debootstrap nftables socat openssh-server \
  openssh-client curl git make iproute2 procps >/dev/null
# Nothing started at install time may linger (policy-rc.d may be missing on some machines).
for svc in ssh haproxy prometheus; do
  if [ -x "/etc/init.d/$svc" ]; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
done
echo "install-system-deps: installed ${need[*]}"
