#!/bin/sh
# Stops the daemons bench/slurm/setup.sh started (by the pids it recorded), and nothing else.
# Leaves the packages and /etc/slurm in place.
set -u
state=/run/kumo-bench-slurm

stop() { # name
    pidfile="$state/$1.pid"
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ]; then
        kill -TERM "$pid"
        i=0
        while kill -0 "$pid" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -ge 100 ]; then
                echo "teardown.sh: $1 ($pid) ignores SIGTERM; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null
                break
            fi
            sleep 0.1
        done
        echo "teardown.sh: stopped $1 ($pid)"
    fi
    rm -f "$pidfile"
}

# Nodes first, then the controller, then authentication.
stop slurmd
stop slurmctld
stop munged
rmdir "$state" 2>/dev/null || true
rm -f /var/lib/slurm/fake-gpus/gpu0 /var/lib/slurm/fake-gpus/gpu1
rmdir /var/lib/slurm/fake-gpus 2>/dev/null || true
