#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (munge, slurmctld, slurmd), idempotently.
#
#   scripts/slurm/start.sh        # installs Debian's slurmctld slurmd slurm-client munge if missing
#   scripts/slurm/stop.sh         # ends exactly the daemons this script started
#
# For the `slurm` tests (pytest -m slurm) and for trying hydra/launcher=slurm on one machine.
# State, logs and pid files live in $WS_SLURM_DIR (default /var/tmp/weightshare-slurm); the
# config is written to /etc/slurm/slurm.conf from slurm.conf.in beside this script (a
# slurm.conf that this script did not write is left alone, and that cluster is used as it is).
# Needs root (it installs packages and runs the daemons as root, as in a CI container).
# Exit status 0 when `sinfo` shows the node idle; otherwise 1 with the reason on stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${WS_SLURM_DIR:-/var/tmp/weightshare-slurm}"
conf=/etc/slurm/slurm.conf
marker="written by scripts/slurm/start.sh"

die() { echo "slurm: $*" >&2; exit 1; }
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ "$(id -u)" == 0 ]] || die "needs root (installs packages, runs slurmctld/slurmd as root)"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
    || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || die "slurmctld/slurmd/munge missing and no apt-get to install them"
  echo "slurm: installing slurmctld slurmd slurm-client munge (apt-get)"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null \
    || die "apt-get install slurmctld slurmd slurm-client munge failed"
fi

if [[ -f "$conf" ]] && ! grep -q "$marker" "$conf"; then
  sinfo -h >/dev/null 2>&1 || die "$conf was not written by this script and its cluster does not answer (sinfo)"
  echo "slurm: $conf is another cluster's; using it as it is"
  exit 0
fi

mkdir -p "$state/ctld" "$state/d" /run/munge
touch "$state/started"  # the daemons this script started, one "name pid" a line (stop.sh reads it)

# munge: the key from the package (or a new one), the daemon as the munge user
if [[ ! -s /etc/munge/munge.key ]]; then
  mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key /run/munge && chmod 400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  echo "munged $(cat /run/munge/munged.pid)" >>"$state/started"
fi
munge -n | unmunge >/dev/null || die "munge does not work (munge -n | unmunge)"

host="$(hostname -s)"
node_line="$(slurmd -C | head -n 1)"
[[ "$node_line" == NodeName=* ]] || die "slurmd -C gave no node line: $node_line"
sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$state|g" -e "s|@NODE@|$host|g" -e "s|@NODE_LINE@|$node_line|" \
  "$here/slurm.conf.in" >"$conf.tmp"
mv "$conf.tmp" "$conf"

if ! alive "$state/slurmctld.pid"; then
  slurmctld || die "slurmctld did not start (see $state/slurmctld.log)"
  for _ in $(seq 50); do alive "$state/slurmctld.pid" && break; sleep 0.1; done
  alive "$state/slurmctld.pid" || die "slurmctld exited (see $state/slurmctld.log)"
  echo "slurmctld $(cat "$state/slurmctld.pid")" >>"$state/started"
fi
if ! alive "$state/slurmd.pid"; then
  slurmd || die "slurmd did not start (see $state/slurmd.log)"
  for _ in $(seq 50); do alive "$state/slurmd.pid" && break; sleep 0.1; done
  alive "$state/slurmd.pid" || die "slurmd exited (see $state/slurmd.log)"
  echo "slurmd $(cat "$state/slurmd.pid")" >>"$state/started"
fi

for _ in $(seq 100); do
  node_state="$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1)"
  [[ "$node_state" == idle* || "$node_state" == mixed* || "$node_state" == allocated* ]] && break
  sleep 0.2
done
[[ "$node_state" == idle* || "$node_state" == mixed* || "$node_state" == allocated* ]] \
  || die "node $host is '${node_state:-unknown}', not idle (see $state/slurmd.log)"
echo "slurm: one-node cluster up ($node_line; partition debug; state in $state)"
