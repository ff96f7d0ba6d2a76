#!/usr/bin/env bash
# A private one-node Slurm cluster for tests (Debian's slurm-wlm and munge; run as root).
#
#   scripts/slurm-cluster.sh start DIR   # munged, slurmctld, slurmd with state, logs and pids in DIR
#   scripts/slurm-cluster.sh stop DIR    # stops exactly the daemons started by `start DIR`, by pid
#
# Everything lives in DIR: its own munge key and socket (the system's munged, if any, is left
# alone), a generated slurm.conf on free ports, spool and state directories, logs and pid files.
# Client commands need `SLURM_CONF=DIR/slurm.conf` in their environment; `start` prints that
# assignment as its last line. Install the packages with scripts/install-test-deps.sh.
set -euo pipefail

die() {
  echo "slurm-cluster: $*" >&2
  exit 1
}

need() {
  local missing=()
  for b in munged munge unmunge slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing+=("$b")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    die "missing ${missing[*]}: install Debian's packages with \`apt-get update && apt-get install -y slurm-wlm munge\` (or scripts/install-test-deps.sh)"
  fi
  [ "$(id -u)" = 0 ] || die "must run as root (SlurmUser=root, munged runs as the munge user)"
}

port_free() { ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 20000))
    if port_free "$p" && [ "$p" != "${1:-}" ]; then
      echo "$p"
      return
    fi
  done
  die "no free TCP port found"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  local dir="$1"
  need
  PATH="/usr/sbin:$PATH"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if alive "$dir/slurmctld.pid" || alive "$dir/slurmd.pid" || alive "$dir/munge/munged.pid"; then
    die "$dir already has running daemons; stop them first with: $0 stop $dir"
  fi
  rm -rf "$dir/state" "$dir/spool"
  mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
  # munge: a private key, socket, pid and log file, owned by the munge user.
  chown munge:munge "$dir/munge"
  chmod 0755 "$dir/munge"
  if [ ! -s "$dir/munge/munge.key" ]; then
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
  fi
  chown munge:munge "$dir/munge/munge.key"
  chmod 0400 "$dir/munge/munge.key"
  local sock="$dir/munge/munge.socket"
  runuser -u munge -- munged --socket="$sock" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed" ||
    die "munged did not start; see $dir/munge/munged.log"
  munge -S "$sock" -n | unmunge -S "$sock" >/dev/null || die "munge round trip failed (socket $sock)"

  local host ctld_port d_port
  host="$(hostname -s)"
  ctld_port="$(free_port)"
  d_port="$(free_port "$ctld_port")"
  cat >"$dir/slurm.conf" <<EOF
ClusterName=msdtest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=300
SlurmctldLogFile=$dir/ctld.log
SlurmdLogFile=$dir/d.log
NodeName=$host CPUs=$(nproc) RealMemory=16000 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$SLURM_CONF" || die "slurmctld did not start; see $dir/ctld.log"
  slurmd -f "$SLURM_CONF" || die "slurmd did not start; see $dir/d.log"
  local state=""
  for _ in $(seq 1 60); do
    state="$(sinfo -h -o %t 2>/dev/null || true)"
    [ "$state" = idle ] && break
    sleep 0.5
  done
  [ "$state" = idle ] || die "the node is not idle after 30 s (state '$state'); see $dir/ctld.log and $dir/d.log"
  echo "slurm-cluster: up in $dir (node $host, $(nproc) CPUs, slurmctld port $ctld_port)" >&2
  echo "SLURM_CONF=$dir/slurm.conf"
}

stop_pid() {
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  local dir="$1"
  [ -d "$dir" ] || return 0
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munge/munged.pid"
  echo "slurm-cluster: stopped the daemons of $dir" >&2
}

case "${1:-}" in
start) start "${2:?usage: $0 start DIR}" ;;
stop) stop "${2:?usage: $0 stop DIR}" ;;
*) die "usage: $0 start|stop DIR" ;;
esac
