#!/bin/sh
# Starts a one-machine Slurm (munged, slurmctld, slurmd) for bench/mltask_throughput.py --slurm.
#
#   sudo sh bench/slurm/setup.sh        # as root
#   sudo sh bench/slurm/teardown.sh     # stops exactly what this started
#
# Installs Debian's slurm-wlm and munge with apt if they are missing, writes
# bench/slurm/{slurm,gres}.conf to /etc/slurm (the node's CPUs= set to this machine's nproc,
# or to $SLURM_BENCH_CPUS), creates the munge key if there is none, and starts the daemons
# directly, without systemd (this works in a container): each daemonizes itself and writes a
# pid file. slurmctld starts with -c (no jobs or state from an earlier run).
#
# SLURM_BENCH_TUNED=1 adds SchedulerParameters=batch_sched_delay=0 (see slurm.conf): Slurm
# tuned for many short batch jobs, for a second set of figures beside the default one.
# The pids of the daemons this script started are recorded in /run/kumo-bench-slurm/ so that
# teardown.sh stops those and nothing else (a munged that was already running is left alone).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
state=/run/kumo-bench-slurm

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (it installs packages and starts system daemons)" >&2
    exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
   ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    echo "setup.sh: installing slurm-wlm and munge with apt"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
fi

mkdir -p "$state"
trap 'echo "setup.sh: failed; stopping what it started" >&2; sh "$here/teardown.sh"' EXIT
for pidfile in "$state"/*.pid; do
    [ -e "$pidfile" ] || continue
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "setup.sh: $(basename "$pidfile" .pid) from an earlier setup is still running; run teardown.sh first" >&2
        trap - EXIT
        exit 1
    fi
    rm -f "$pidfile"
done

# Configuration.
cpus=${SLURM_BENCH_CPUS:-$(nproc)}
mkdir -p /etc/slurm
sed "s/^\(NodeName=localhost .*\)CPUs=[0-9]*/\1CPUs=$cpus/" "$here/slurm.conf" > /etc/slurm/slurm.conf
if [ "${SLURM_BENCH_TUNED:-0}" = 1 ]; then
    echo "SchedulerParameters=batch_sched_delay=0" >> /etc/slurm/slurm.conf
fi
cp "$here/gres.conf" /etc/slurm/gres.conf
chmod 644 /etc/slurm/slurm.conf /etc/slurm/gres.conf

# Directories the daemons write to.
install -d -o slurm -g slurm -m 755 /run/slurm /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d -o root -g root -m 755 /var/lib/slurm/slurmd
install -d -o munge -g munge -m 700 /etc/munge
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
: > /var/log/slurm/jobcomp.log
chown slurm:slurm /var/log/slurm/jobcomp.log

# The fake GPUs of gres.conf: gres/gpu wants a character device per GPU, so these are device
# nodes with /dev/null's numbers (harmless if opened); regular files where mknod is not allowed
# (slurmd then logs "not a valid character or block device" but still counts them).
install -d -m 755 /var/lib/slurm/fake-gpus
for g in 0 1; do
    f=/var/lib/slurm/fake-gpus/gpu$g
    [ -e "$f" ] || mknod -m 666 "$f" c 1 3 2>/dev/null || : > "$f"
done

# munge: a key, then the daemon (unless one already answers).
if [ ! -s /etc/munge/munge.key ]; then
    echo "setup.sh: creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    echo "setup.sh: munged is already running; using it (teardown.sh will leave it)"
else
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$state/munged.pid"
    i=0
    until munge -n 2>/dev/null | unmunge >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 50 ] || { echo "setup.sh: munged does not answer" >&2; exit 1; }
        sleep 0.1
    done
fi

# slurmctld then slurmd, each daemonizing itself (no -D) and writing its pid file.
rm -f /run/slurm/slurmctld.pid /run/slurm/slurmd.pid
/usr/sbin/slurmctld -c
i=0
until [ -s /run/slurm/slurmctld.pid ] && scontrol ping 2>/dev/null | grep -q UP; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "setup.sh: slurmctld did not come up; see /var/log/slurm/slurmctld.log" >&2; exit 1; }
    sleep 0.2
done
cp /run/slurm/slurmctld.pid "$state/slurmctld.pid"

/usr/sbin/slurmd -N localhost
i=0
until [ -s /run/slurm/slurmd.pid ]; do
    i=$((i + 1)); [ $i -lt 100 ] || { echo "setup.sh: slurmd did not start; see /var/log/slurm/slurmd.log" >&2; exit 1; }
    sleep 0.2
done
cp /run/slurm/slurmd.pid "$state/slurmd.pid"

# Wait for the node to be schedulable.
i=0
until sinfo -h -N -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)$'; do
    i=$((i + 1)); [ $i -lt 150 ] || { echo "setup.sh: the node did not become idle:" >&2; sinfo -N -l >&2; exit 1; }
    sleep 0.2
done
trap - EXIT
echo "setup.sh: slurm $(sinfo -V | awk '{print $2}') up: $(sinfo -h -N -o '%N cpus=%c gres=%G state=%t')"
