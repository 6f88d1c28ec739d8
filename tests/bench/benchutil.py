"""Small helpers the benchmarks and the valgrind session share: a free
loopback port, and a process's CPU time read from /proc (user+sys from
/proc/PID/stat in clock ticks; on-CPU time of its threads from
/proc/PID/task/*/schedstat in nanoseconds, finer than ticks)."""

import os
import socket

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stat_cpu_s(pid):
    """user+sys seconds of process PID (/proc/PID/stat, TICK resolution)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime (fields 14, 15)


def sched_cpu_s(pid):
    """On-CPU seconds of every thread of PID from schedstat; None if unavailable."""
    ns = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                ns += int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return ns / 1e9
