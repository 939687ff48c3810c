"""What bench-efficiency reads of KSM and ksmd, and the one thing it sets:
ksmd's pace, written through `ksmauto ksmd restore` (the CLI owns ksmd's
settings; the whole run is inside a `ksmauto ksmd hold`, which puts every
setting back). Reads only: never signals or changes a process."""
import os
import subprocess
import tempfile
import time

SYSFS = "/sys/kernel/mm/ksm"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000
# global counters sampled with every look
COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "pages_scanned",
            "pages_skipped", "full_scans", "ksm_zero_pages", "general_profit")
PACE_KEYS = ("run", "advisor_mode", "pages_to_scan", "sleep_millisecs", "smart_scan")


def read_sysfs(name):
    try:
        with open(os.path.join(SYSFS, name)) as f:
            v = f.read().strip()
    except OSError:
        return None
    if name == "advisor_mode":  # "[none] scan-time"
        return next((w.strip("[]") for w in v.split() if w.startswith("[")), v)
    try:
        return int(v)
    except ValueError:
        return v


def counters():
    return {name: read_sysfs(name) for name in COUNTERS}


def pace_now():
    return {name: read_sysfs(name) for name in PACE_KEYS}


def pace_wanted(advisor, pages_to_scan, sleep_millisecs):
    """The pace of a set: fixed (advisor none) or the scan-time advisor, which
    sets pages_to_scan itself."""
    if advisor:
        return {"run": 1, "advisor_mode": "scan-time", "sleep_millisecs": sleep_millisecs, "smart_scan": 1}
    return {"run": 1, "advisor_mode": "none", "pages_to_scan": pages_to_scan,
            "sleep_millisecs": sleep_millisecs, "smart_scan": 1}


ADVISOR_WARM_SCANS = 6


def restart_advisor(ksmauto, wanted, settle=True, timeout=60):
    """Puts the scan-time advisor in one known state before a window: that of
    a host with next to nothing to scan. The advisor sets the pace from the
    full scans it saw, so without this a window would start at the pace the
    last variant's pool led it to. Switching advisor_mode off and on starts
    it afresh (pages_to_scan = advisor_min_pages_to_scan, its context
    zeroed); the first full scan to end then sets a pace that depends on
    what that scan saw (from a few dozen pages to a few thousand); quick
    scans of a near-empty host (the keep-alive process) then raise it step
    by step to advisor_max_pages_to_scan. Waits for ADVISOR_WARM_SCANS full
    scans (at most timeout s); returns what it saw. settle=False: only
    restarted (the window starts at advisor_min_pages_to_scan, and the
    first full scan to end, the pool's or not, sets the pace)."""
    if wanted.get("advisor_mode") != "scan-time":
        return None
    if read_sysfs("advisor_mode") == "scan-time":
        apply_pace(ksmauto, {"advisor_mode": "none"})
    apply_pace(ksmauto, wanted)
    t0, scans0 = time.monotonic(), read_sysfs("full_scans")
    while settle and read_sysfs("full_scans") - scans0 < ADVISOR_WARM_SCANS and time.monotonic() - t0 < timeout:
        time.sleep(0.1)
    return {"warm_s": round(time.monotonic() - t0, 1), "full_scans": read_sysfs("full_scans") - scans0,
            "pages_to_scan": read_sysfs("pages_to_scan")}


def pace_differs(wanted, now):
    return {k: now.get(k) for k, v in wanted.items() if str(now.get(k)) != str(v)}


def apply_pace(ksmauto, wanted):
    """Sets the pace through `ksmauto ksmd restore` of a file naming only
    these settings (it knows their order: the advisor before pages_to_scan).
    Returns what it changed ({} when the pace was already as wanted)."""
    changed = pace_differs(wanted, pace_now())
    if not changed:
        return {}
    with tempfile.NamedTemporaryFile("w", prefix="effbench-pace-", dir="/tmp", delete=False) as f:
        f.write("".join(f"{k}={v}\n" for k, v in wanted.items()))
    try:
        r = subprocess.run([ksmauto, "ksmd", "restore", f.name], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    left = pace_differs(wanted, pace_now())
    if r.returncode != 0 or left:
        raise RuntimeError(f"could not set ksmd's pace {wanted}: still {left}; {r.stdout}{r.stderr}".strip())
    return changed


def stat_fields(pid):
    """/proc/PID/stat after the comm: fields 3.. (state is [0]); None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read()
    except OSError:
        return None
    return s[s.rindex(b")") + 2:].split()


def ksmd_pid():
    """The kernel thread named ksmd (a kernel thread: PF_KTHREAD, child of kthreadd)."""
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() != "ksmd":
                    continue
        except OSError:
            continue
        st = stat_fields(p)
        if st and (int(st[6]) & PF_KTHREAD or int(st[1]) == 2):
            return int(p)
    return None


def ksmd_cpu(pid):
    """(utime+stime in clock ticks from /proc/PID/stat, sum_exec_runtime in ns
    from /proc/PID/schedstat or None)."""
    st = stat_fields(pid)
    ticks = int(st[11]) + int(st[12]) if st else None
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            ns = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ns = None
    return ticks, ns


def parents():
    """pid -> ppid of every process (not threads) now."""
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            st = stat_fields(p)
            if st and st[0] != b"Z":
                out[int(p)] = int(st[1])
    return out


def tree(roots, ppids):
    """The roots and every process below them by parent links."""
    children = {}
    for pid, pp in ppids.items():
        children.setdefault(pp, []).append(pid)
    seen, todo = set(), [r for r in roots if r in ppids]
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(children.get(p, ()))
    return seen


def ksm_stat(pid):
    """/proc/PID/ksm_stat as ints; None if unreadable (gone)."""
    try:
        with open(f"/proc/{pid}/ksm_stat") as f:
            out = {}
            for line in f:
                k, _, v = line.partition(" ")
                try:
                    out[k] = int(v)
                except ValueError:
                    out[k] = v.strip()
            return out
    except OSError:
        return None


def process_cpu_ticks(pid):
    """utime + stime of a process (all its threads; the library's included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def pool_figures(pids):
    """Σ over the pool's processes of ksm_stat's pages."""
    tot = {"merging": 0, "rmap": 0, "zero": 0, "profit": 0, "procs": 0, "cpu_ticks": 0}
    for pid in pids:
        s = ksm_stat(pid)
        if s is None:
            continue
        tot["cpu_ticks"] += process_cpu_ticks(pid)
        tot["procs"] += 1
        tot["merging"] += s.get("ksm_merging_pages", 0)
        tot["rmap"] += s.get("ksm_rmap_items", 0)
        tot["zero"] += s.get("ksm_zero_pages", 0)
        tot["profit"] += s.get("ksm_process_profit", 0)
    return tot


def host_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


HOLDS = "/run/ksmauto/ksmd-holds"


def other_holds(mine):
    """Pids of the running `ksmauto ksmd hold`s in the CLI's record other than
    ours (`mine`): another helper's tests, a demo, `compare --hold-ksmd`.
    Each may set its own pace while it runs."""
    try:
        with open(HOLDS) as f:
            lines = [l.split() for l in f if l.strip() and not l.startswith("#")]
    except OSError:
        return []
    out = []
    for w in lines:
        if len(w) < 2 or not w[0].isdigit() or int(w[0]) == mine:
            continue
        st = stat_fields(w[0])
        if st and st[0] not in (b"Z", b"X") and st[19].decode() == w[1]:
            out.append(int(w[0]))
    return out


def wait_quiet(mine, timeout, log):
    """Waits (at most timeout s) until no other hold runs; returns the seconds
    waited and the holds still running then."""
    t0 = time.monotonic()
    others = other_holds(mine)
    if others and timeout > 0:
        log(f"bench-efficiency: waiting for other ksmd holds to end (pids {' '.join(map(str, others))}), "
            f"at most {timeout:g} s")
        while others and time.monotonic() - t0 < timeout:
            time.sleep(1)
            others = other_holds(mine)
    return round(time.monotonic() - t0, 1), others


def wait_clean(timeout, log):
    """Waits until ksmd has let go of the pages of pools that ended: KSM pages
    (pages_shared + pages_sharing) no more than the live processes' own
    ksm_merging_pages (other users of KSM on this machine) plus a margin.
    Returns (seconds waited, clean?, the last figures)."""
    t0 = time.monotonic()
    while True:
        others = sum((ksm_stat(p) or {}).get("ksm_merging_pages", 0) for p in parents())
        c = counters()
        held = (c["pages_shared"] or 0) + (c["pages_sharing"] or 0)
        margin = max(256, others // 100)
        figures = {"ksm_pages": held, "merging_of_live_processes": others,
                   "pages_unshared": c["pages_unshared"], "pages_volatile": c["pages_volatile"]}
        waited = round(time.monotonic() - t0, 1)
        if held <= others + margin:
            return waited, True, figures
        if waited >= timeout:
            log(f"bench-efficiency: KSM still holds {held} pages against {others} of live processes "
                f"after {waited} s: going on (marked not clean)")
            return waited, False, figures
        time.sleep(0.5)
