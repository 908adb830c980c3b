"""Run a command and sample its resident memory every 50 ms (VmRSS and VmHWM of /proc/PID/status,
the command's own process; a child it starts is not counted): prints, per interval of --every
seconds, the lowest and highest RSS and the peak so far, in MiB, then the command's output with the
second each line came.

    python scripts/memory/rss_timeline.py --every 20 -- intlm pretrain --minutes 2 --out /tmp/r

Linux only. NUMBA_CACHE_DIR=<an empty folder> in front shows a first run's compiling."""

import argparse
import subprocess
import threading
import time


def status(pid: int) -> tuple:
    """(VmRSS, VmHWM) of ``pid`` in kB, or None once it has gone."""
    try:
        text = open(f"/proc/{pid}/status").read()
    except OSError:
        return None
    return int(text.split("VmRSS:")[1].split()[0]), int(text.split("VmHWM:")[1].split()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=10.0, help="seconds per line of the timeline")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    proc = subprocess.Popen(args.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    start, lines, samples = time.time(), [], []
    threading.Thread(target=lambda: lines.extend((time.time() - start, line.rstrip()) for line in proc.stdout),
                     daemon=True).start()
    while proc.poll() is None:
        seen = status(proc.pid)
        if seen:
            samples.append((time.time() - start, *seen))
        time.sleep(0.05)
    time.sleep(0.2)  # the reader's last lines
    print(f"{'seconds':>8} {'RSS min':>8} {'RSS max':>8} {'peak':>8}  (MiB)")
    buckets = {}
    for t, rss, hwm in samples:
        buckets.setdefault(int(t // args.every), []).append((rss, hwm))
    for k, seen in sorted(buckets.items()):
        print(f"{k * args.every:8.0f} {min(s[0] for s in seen) >> 10:8d} {max(s[0] for s in seen) >> 10:8d} "
              f"{max(s[1] for s in seen) >> 10:8d}")
    print(f"peak {max(s[2] for s in samples)} kB (VmHWM), exit status {proc.returncode}")
    for t, line in lines:
        print(f"{t:8.1f}  {line}")


if __name__ == "__main__":
    main()
