#!/usr/bin/env bash
# Stop the daemons scripts/slurm/start.sh started (their pids are in $WS_SLURM_DIR/started),
# and nothing else: a munged or slurmctld that was running before start.sh is left alone.
set -uo pipefail
state="${WS_SLURM_DIR:-/var/tmp/weightshare-slurm}"
list="$state/started"
[[ -f "$list" ]] || { echo "slurm: nothing to stop ($list absent)"; exit 0; }
# the reverse order of starting: slurmd, slurmctld, munged
tac "$list" | while read -r name pid; do
  [[ -n "${pid:-}" ]] || continue
  if kill -0 "$pid" 2>/dev/null && [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$name" ]]; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "slurm: stopped $name ($pid)"
  fi
done
rm -f "$list"
