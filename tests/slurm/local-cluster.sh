#!/bin/sh
# A one-host Slurm cluster for the tests: munged (shared, started if not running), and a
# slurmctld + slurmd pair with their own configuration, ports, state and logs under DIR.
#   local-cluster.sh start DIR PORT   -> prints the SLURM_CONF path once `sinfo` answers
#   local-cluster.sh stop DIR
# Needs root and Debian's slurm-wlm (slurmctld, slurmd, munge).
set -eu
cmd=$1 dir=$2
case $cmd in
stop)
    pkill -f "$dir/slurm.conf" 2>/dev/null || true
    i=0
    while pgrep -f "$dir/slurm.conf" >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    pkill -9 -f "$dir/slurm.conf" 2>/dev/null || true
    exit 0 ;;
start) port=$3 ;;
*) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
for p in slurmctld slurmd munged srun sinfo; do
    command -v $p >/dev/null 2>&1 || PATH=$PATH:/usr/sbin
    command -v $p >/dev/null 2>&1 || { echo "missing $p (Debian package slurm-wlm)" >&2; exit 3; }
done
if ! pgrep -x munged >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    [ -f /etc/munge/munge.key ] || { echo "no /etc/munge/munge.key" >&2; exit 3; }
    munged --force >/dev/null 2>&1 || runuser -u munge -- munged --force >/dev/null 2>&1 \
        || { echo "cannot start munged" >&2; exit 3; }
fi
host=$(hostname -s)
mkdir -p "$dir/spool" "$dir/state"
cat > "$dir/slurm.conf" <<CONF
ClusterName=rthreadstest
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host CPUs=16 State=UNKNOWN
PartitionName=rthreads Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
i=0
until sinfo -h -o %T 2>/dev/null | grep -q idle; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        echo "the Slurm node did not become idle; logs in $dir" >&2
        exit 4
    fi
    sleep 0.1
done
echo "$SLURM_CONF"
