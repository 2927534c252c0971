#!/usr/bin/env bash
# A real Slurm on this one machine, for the tests and for trying the sbatch scripts: munged,
# slurmctld and emulated nodes (one slurmd -N per node, each its own port and TmpFS).
# `down` stops exactly the daemons `up` started, by their pid files.
#   scripts/slurm/local-cluster.sh up|down|status
# Then: export SLURM_CONF=/var/tmp/tessera-slurm/slurm.conf (printed by `up`) and use sbatch.
# Knobs: TESSERA_SLURM_DIR (state, default /var/tmp/tessera-slurm), TESSERA_SLURM_NODES (2),
# TESSERA_SLURM_CPUS (CPUs each node advertises, default 2), TESSERA_SLURM_PORT (slurmctld's
# port, default 16817; node k listens on PORT + k).
set -euo pipefail

dir=${TESSERA_SLURM_DIR:-/var/tmp/tessera-slurm}
nodes=${TESSERA_SLURM_NODES:-2}
cpus=${TESSERA_SLURM_CPUS:-2}
port=${TESSERA_SLURM_PORT:-16817}
conf=$dir/slurm.conf
packages=(slurmctld slurmd slurm-client munge libpmix-dev)
node_names=()
for ((k = 1; k <= nodes; k++)); do node_names+=("tessera-n$k"); done

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: $*" >&2; exit 1; }

# alive PIDFILE COMM: the pid in PIDFILE is running and is the program COMM (not a reused pid).
alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(< "$1")
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/comm ]] || return 1
  [[ $(< "/proc/$pid/comm") == "$2"* ]]
}

# stop NAME:PIDFILE:COMM...: TERM to each (only the pid from our own pid file), wait for all up
# to 10 s, then KILL what is left.
stop() {
  local spec name pidfile comm pid i left
  local -a names=() pids=()
  for spec in "$@"; do
    IFS=: read -r name pidfile comm <<< "$spec"
    if alive "$pidfile" "$comm"; then
      pid=$(< "$pidfile")
      kill -TERM "$pid" 2> /dev/null || true
      names+=("$name")
      pids+=("$pid")
    fi
    rm -f "$pidfile"
  done
  for ((i = 0; i < 100; i++)); do
    left=0
    for pid in "${pids[@]}"; do [[ -d /proc/$pid ]] && left=1; done
    ((left)) || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if [[ -d /proc/${pids[i]} ]]; then
      kill -KILL "${pids[i]}" 2> /dev/null || true
      say "${names[i]} (pid ${pids[i]}) did not stop on TERM; killed"
    else
      say "stopped ${names[i]} (pid ${pids[i]})"
    fi
  done
}

install_packages() {
  local missing=() p added_policy=0
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) -eq 0 ]] || die "installing ${missing[*]} needs root; run: sudo $0 up"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get update only when the package lists do not know a package yet.
  for p in "${missing[@]}"; do
    if ! apt-cache policy "$p" 2> /dev/null | grep -q 'Candidate: [0-9]'; then
      apt-get update -qq
      break
    fi
  done
  # Keep the packages' maintainer scripts from starting system daemons we would not own.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  local rc=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" > "$dir/apt.log" 2>&1 || rc=$?
  ((added_policy)) && rm -f /usr/sbin/policy-rc.d
  ((rc == 0)) || { cat "$dir/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

write_config() {
  local host k
  host=$(hostname -s)
  mkdir -p "$dir/ctld"
  for k in "${node_names[@]}"; do mkdir -p "$dir/$k/spool" "$dir/$k/tmp"; done
  chmod 1777 "$dir"/tessera-n*/tmp
  # Open MPI's shared-memory transport (and the UCX one) would meet the other emulated nodes'
  # segments on this one host: tasks talk TCP over loopback instead. Only this cluster needs it.
  cat > "$dir/task-prolog.sh" << 'EOF'
#!/bin/sh
echo "export OMPI_MCA_pml=ob1"
echo "export OMPI_MCA_btl=self,tcp"
echo "export OMPI_MCA_btl_tcp_if_include=lo"
echo "export OMPI_MCA_osc=^ucx"
EOF
  chmod 755 "$dir/task-prolog.sh"
  {
    echo "# Written by scripts/slurm/local-cluster.sh; rewritten on every 'up'."
    echo "ClusterName=tessera-local"
    # host(addr): works even when the host name does not resolve.
    echo "SlurmctldHost=$host(127.0.0.1)"
    echo "SlurmctldPort=$port"
    echo "SlurmUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "AuthInfo=socket=$dir/munge/munge.socket"
    echo "StateSaveLocation=$dir/ctld"
    echo "SlurmctldPidFile=$dir/slurmctld.pid"
    echo "SlurmctldLogFile=$dir/slurmctld.log"
    echo "SlurmdSpoolDir=$dir/%n/spool"
    echo "SlurmdPidFile=$dir/%n/slurmd.pid"
    echo "SlurmdLogFile=$dir/%n/slurmd.log"
    # PMIx puts its per-step directories under TmpFS: one per node, or the nodes collide.
    echo "TmpFS=$dir/%n/tmp"
    echo "TaskProlog=$dir/task-prolog.sh"
    # Debian's Open MPI 4.1 starts under srun through PMIx only.
    echo "MpiDefault=pmix"
    # No systemd and no cgroups here.
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobCompType=jobcomp/filetxt"
    echo "JobCompLoc=$dir/jobcomp.log"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "SchedulerType=sched/backfill"
    echo "SchedulerParameters=batch_sched_delay=0"
    # Refuse requests no node can hold rather than leave them pending forever.
    echo "EnforcePartLimits=ALL"
    # Nodes advertise the CPUs below even when the machine has fewer.
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "KillWait=5"
    echo "MinJobAge=600"
    for ((k = 1; k <= nodes; k++)); do
      echo "NodeName=tessera-n$k NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + k))" \
        "CPUs=$cpus State=UNKNOWN"
    done
    echo "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  } > "$conf"
  echo "export SLURM_CONF=$conf" > "$dir/env.sh"
  # Slurm (and PMIx) look node names up; all of them are this host.
  for k in "${node_names[@]}"; do
    grep -Eq "^[^#]*[[:space:]]$k([[:space:]]|$)" /etc/hosts ||
      echo "127.0.0.1 $k  # tessera local-cluster" >> /etc/hosts
  done
}

start_munge() {
  local m=$dir/munge
  alive "$m/munged.pid" munged && return 0
  mkdir -p "$m"
  chown munge:munge "$m"
  chmod 755 "$m"  # clients (sbatch, srun) of every user reach the socket
  if [[ ! -s $m/munge.key ]]; then
    dd if=/dev/urandom of="$m/munge.key" bs=1024 count=1 status=none
  fi
  chown munge:munge "$m/munge.key"
  chmod 400 "$m/munge.key"
  runuser -u munge -- munged --key-file="$m/munge.key" --socket="$m/munge.socket" \
    --pid-file="$m/munged.pid" --log-file="$m/munged.log" --seed-file="$m/munged.seed" ||
    die "munged did not start; see $m/munged.log"
}

wait_idle() {
  local i states
  for ((i = 0; i < 300; i++)); do
    states=$(SLURM_CONF=$conf sinfo -h -N -o '%T' 2> /dev/null | sort -u | tr '\n' ' ')
    [[ $states == "idle " ]] && return 0
    sleep 0.1
  done
  die "nodes not idle after 30 s (states: ${states:-none}); see $dir/slurmctld.log and $dir/tessera-n*/slurmd.log"
}

up() {
  [[ $(id -u) -eq 0 ]] || die "up needs root (installs packages, edits /etc/hosts, runs slurmd); run: sudo $0 up"
  mkdir -p "$dir"
  chmod 755 "$dir"
  install_packages
  local k all=1
  alive "$dir/slurmctld.pid" slurmctld || all=0
  for k in "${node_names[@]}"; do alive "$dir/$k/slurmd.pid" slurmd || all=0; done
  if ((all)); then
    say "already up ($dir)"
    wait_idle
    return 0
  fi
  down > /dev/null  # what is left of a half-started or crashed cluster
  write_config
  start_munge
  # -c: a fresh controller state each time (no jobs or node states from an earlier cluster).
  slurmctld -c -f "$conf" || die "slurmctld did not start; see $dir/slurmctld.log"
  for k in "${node_names[@]}"; do
    slurmd -f "$conf" -N "$k" || die "slurmd for $k did not start; see $dir/$k/slurmd.log"
  done
  wait_idle
  say "up: ${#node_names[@]} nodes x $cpus CPUs; state in $dir"
  say "to use it: export SLURM_CONF=$conf"
}

down() {
  local k
  if [[ -s $conf ]] && alive "$dir/slurmctld.pid" slurmctld; then
    # Jobs first, so no slurmstepd outlives its slurmd.
    SLURM_CONF=$conf scancel --full --quiet --partition=local 2> /dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
      [[ -z $(SLURM_CONF=$conf squeue -h -o '%i' 2> /dev/null) ]] && break  # none left unfinished
      sleep 0.1
    done
  fi
  local specs=("slurmctld:$dir/slurmctld.pid:slurmctld")
  for k in "${node_names[@]}"; do specs+=("slurmd $k:$dir/$k/slurmd.pid:slurmd"); done
  stop "${specs[@]}"
  stop "munged:$dir/munge/munged.pid:munged"  # last: the Slurm daemons authenticate through it
}

status() {
  local k rc=0
  check() {
    if alive "$2" "$3"; then
      echo "$1: running (pid $(< "$2"))"
    else
      echo "$1: stopped"
      rc=1
    fi
  }
  check munged "$dir/munge/munged.pid" munged
  check slurmctld "$dir/slurmctld.pid" slurmctld
  for k in "${node_names[@]}"; do check "slurmd $k" "$dir/$k/slurmd.pid" slurmd; done
  if ((rc == 0)); then SLURM_CONF=$conf sinfo -N || rc=1; fi
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
