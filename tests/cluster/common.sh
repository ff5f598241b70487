# shellcheck shell=bash disable=SC2034  # the names are used by the scripts that source this file
# Names shared by tests/cluster/{up,down,record-fixtures}: every node, address, path and
# account of the test cluster is defined here and nowhere else. Sourced, not executed.

CLUSTER=lab
ACCOUNT=lab
RESEARCHER=researcher          # the non-root Unix + Slurm user that submits every test job
INTRUDER=intruder              # another ordinary user (own account, no GPU quota): plays the hostile neighbour
INTRUDER_ACCOUNT=others
GPU_QUOTA=4                    # GrpTRES=gres/gpu of account lab
GPUS_PER_NODE=4
GPU_NODES=(node1 node2)             # fake NVIDIA GPUs, partition gpu
AMD_NODES=(amd1)                   # fake AMD GPUs (/dev/kfd, /dev/dri/renderD*), partition amd
CPU_NODES=(cpu1)
ALL_NODES=("${GPU_NODES[@]}" "${AMD_NODES[@]}" "${CPU_NODES[@]}")

# Private addresses on our own bridge; the namespaces have no default route, nothing leaves the machine.
CTL_NAME=slurmctl
CTL_IP=10.77.0.1
BRIDGE=hpctfbr0
NETNS_PREFIX=hpctf-
declare -A NODE_IP=([node1]=10.77.0.11 [node2]=10.77.0.12 [amd1]=10.77.0.31 [cpu1]=10.77.0.21)

STATE_DIR=/run/hpc-tf-cluster      # what up started, the config checksum, fake GPUs, state.env
STATE_ENV=$STATE_DIR/state.env     # machine-readable description read by tests/conftest.py
STARTED_LIST=$STATE_DIR/started.list
DEV_DIR=$STATE_DIR/dev
SHARED_DIR=/srv/hpc-tf             # plays the cluster's shared filesystem (like /home or /scratch over NFS)
SCRATCH_DIR=$SHARED_DIR/scratch
ETC=/etc/slurm
LOG_DIR=/var/log/slurm
PID_DIR=/run/slurm
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=hpc-tf-test                # MariaDB listens on localhost only
SLURM_BUILDS=/opt/hpc-tf/slurm     # Slurm versions built from source by tests/cluster/build-slurm
HOSTS_BEGIN='# BEGIN hpc-tf-cluster'
HOSTS_END='# END hpc-tf-cluster'

# Clean environment for commands run as the researcher: root's PATH (pyenv shims under a 0700
# /root) must not leak into jobs, because sbatch exports the submitter's environment.
RESEARCHER_ENV=(env -i PATH=/usr/local/bin:/usr/bin:/bin "HOME=/home/$RESEARCHER" "USER=$RESEARCHER"
  "LOGNAME=$RESEARCHER" LANG=C.UTF-8)

T0=${EPOCHREALTIME/./}
# log MESSAGE: prefixed with the seconds since the script started
log() {
  local us=$(( ${EPOCHREALTIME/./} - T0 ))
  printf '[%s %3d.%02ds] %s\n' "${0##*/}" $((us / 1000000)) $((us % 1000000 / 10000)) "$*"
}
die() { echo "${0##*/}: ERROR: $*" >&2; exit 1; }
# wait_for SECONDS WHAT CMD...: poll CMD every 0.1 s; false (and a message) after SECONDS
wait_for() {
  local secs=$1 what=$2 end=$(( ${EPOCHREALTIME/./} + $1 * 1000000 )); shift 2
  until "$@" >/dev/null 2>&1; do
    [ "${EPOCHREALTIME/./}" -lt "$end" ] || { echo "timeout ($secs s) waiting for $what" >&2; return 1; }
    sleep 0.1
  done
}

# alive PID: a running process. A stopped daemon stays a zombie until PID 1 reaps it (up to ~2 s
# on machines whose init reaps lazily), so state Z counts as gone.
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st:0:1}" != Z ]
}
# pid_alive PIDFILE COMM: the pid file names a live process whose command name is COMM
pid_alive() {
  local p
  [ -s "$1" ] && p=$(<"$1") && alive "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ]
}
# node_munge_dir NODE: the node's own munged (socket, pid and seed); bind-mounted over /run/munge for its slurmd
node_munge_dir() { echo "/run/munge-$1"; }

was_started() { grep -qx "$1" "$STARTED_LIST" 2>/dev/null; }
mark_started() { was_started "$1" || echo "$1" >> "$STARTED_LIST"; }

# daemon NAME: "PIDFILE COMM" of a daemon this rig may start (slurmd-NODE for each node)
daemon() {
  case $1 in
    munged) echo "/run/munge/munged.pid munged" ;;
    munged-*) echo "$(node_munge_dir "${1#munged-}")/munged.pid munged" ;;
    mariadbd) echo "/run/mysqld/mysqld.pid mariadbd" ;;
    slurmdbd) echo "$PID_DIR/slurmdbd.pid slurmdbd" ;;
    slurmctld) echo "$PID_DIR/slurmctld.pid slurmctld" ;;
    slurmd-*) echo "$PID_DIR/$1.pid slurmd" ;;
    *) die "unknown daemon $1" ;;
  esac
}
daemon_alive() { local d; read -ra d <<< "$(daemon "$1")"; pid_alive "${d[0]}" "${d[1]}"; }
daemon_pid() { local d; read -ra d <<< "$(daemon "$1")"; cat "${d[0]}"; }

# stop_daemons NAME...: SIGTERM every listed daemon that this rig started (all at once: each slurmd
# needs 1-2 s to exit), wait, SIGKILL after 20 s. Never touches a process it did not start.
stop_daemons() {
  local name pids=() p
  for name in "$@"; do
    daemon_alive "$name" || continue
    if ! was_started "$name"; then
      log "$name (pid $(daemon_pid "$name")) was not started by tests/cluster/up: left running"
      continue
    fi
    p=$(daemon_pid "$name"); kill "$p" 2>/dev/null || true; pids+=("$p")
    log "stopping $name (pid $p)"
  done
  local left
  for _ in $(seq 200); do
    left=0; for p in "${pids[@]}"; do alive "$p" && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for p in "${pids[@]}"; do alive "$p" && { log "pid $p did not stop in 20 s: SIGKILL"; kill -9 "$p" 2>/dev/null || true; }; done
  return 0
}

# start_slurmctld: start the controller in its own UTS namespace, so that it is "slurmctl"
# (= SlurmctldHost) whatever this machine is called; slurmctld_up: it answers a ping. Used by up and
# by the test that stops the controller (tests/integration/test_outage_slurm.py).
start_slurmctld() {
  unshare --uts sh -c "hostname $CTL_NAME && exec slurmctld" < /dev/null >> "$LOG_DIR/slurmctld.console" 2>&1 ||
    return 1
  mark_started slurmctld
}
slurmctld_up() { grep -q "is UP" <<< "$(scontrol ping 2>/dev/null)"; }

# start_mariadb: start MariaDB in the background (no init system here) and wait until it answers
start_mariadb() {
  install -d -o mysql -g root -m 0755 /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  # stdin /dev/null, output to a file: no caller's pipe (pytest, CI log) stays open in the daemon
  setsid /usr/sbin/mariadbd --user=mysql < /dev/null >> "$LOG_DIR/mariadb.console" 2>&1 &
  wait_for 60 MariaDB mariadb-admin ping
}

# slurm_tarball: the Slurm source tarball to build (HPC_TF_SLURM_TARBALL, else the newest in the
# shared notes beside the checkout); fails with a message when there is none
slurm_tarball() {
  if [ -n "${HPC_TF_SLURM_TARBALL:-}" ]; then echo "$HPC_TF_SLURM_TARBALL"; return; fi
  local found
  local checkout
  checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  found=$(ls -1 "$checkout"/../shared/slurm/slurm-*.tar.xz 2>/dev/null | sort -V | tail -n 1)
  [ -n "$found" ] || { echo "no slurm-*.tar.xz in ../shared/slurm/ beside the checkout; set HPC_TF_SLURM_TARBALL" >&2; return 1; }
  realpath "$found"
}

# link_slurm_build PREFIX: the build's commands and daemons in /usr/local/{bin,sbin}, ahead of Debian's
# on every PATH (the cluster user's too); each link recorded so that unlink_slurm_build removes only ours
SLURM_LINKS=$STATE_DIR/slurm-links.list
link_slurm_build() {
  local prefix=$1 dir file link
  unlink_slurm_build
  install -d -m 0755 "$STATE_DIR"
  for dir in bin sbin; do
    for file in "$prefix/$dir"/*; do
      link=/usr/local/$dir/$(basename "$file")
      if [ -e "$link" ] || [ -L "$link" ]; then die "$link exists and is not the test cluster's: remove it first"; fi
      ln -s "$file" "$link"
      echo "$link" >> "$SLURM_LINKS"
    done
  done
}
unlink_slurm_build() {
  local link
  [ -f "$SLURM_LINKS" ] || return 0
  while read -r link; do
    [ -L "$link" ] && rm -f "$link"
  done < "$SLURM_LINKS"
  rm -f "$SLURM_LINKS"
}
