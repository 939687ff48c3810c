"""The pools bench-efficiency measures, and how each variant starts one.

A variant is how a pool's memory is offered to ksmd: `merge-any` (the
kernel's prctl, set by the synthetic worker itself or, for a real program,
by the bench in the child just before exec), `library` (LD_PRELOAD of
libksmauto.so, with the variant's environment), `oracle` (the synthetic
worker madvises exactly its duplicated data; no real pool has one) and
`none` (nothing: ksmd's CPU with nothing of the pool to scan).

Each workload makes a pool object per run: `setup()` (untimed: copies,
directories), `launch()` (time zero of the window), `roots` (the processes
whose trees are the pool), `ready()`, `info()` and `stop()` (kills exactly
the processes it started and their descendants, and waits for them to go).
"""
import ctypes
import os
import signal
import subprocess
import tempfile
import time

from . import ksm

PR_SET_PDEATHSIG = 1
PR_SET_MEMORY_MERGE = 67
_libc = ctypes.CDLL(None, use_errno=True)


class Variant:
    KINDS = ("merge-any", "library", "oracle", "none")

    def __init__(self, name, kind, env=None):
        self.name, self.kind, self.env = name, kind, dict(env or {})

    def describe(self):
        extra = " ".join(f"{k}={v}" for k, v in self.env.items())
        return f"{self.name} ({self.kind}{', ' + extra if extra else ''})"


class Ctx:
    """What every pool needs: programs, the library, a clean environment."""

    def __init__(self, root, tmp, log, lib_env):
        self.root, self.tmp, self.log = root, tmp, log
        self.lib = os.path.join(root, "target", "release", "libksmauto.so")
        self.eff_pool = os.path.join(root, "target", "bench", "eff_pool")
        self.base_env = {k: v for k, v in os.environ.items()
                         if not k.startswith("KSMAUTO_") and k != "LD_PRELOAD"}
        self.lib_env = dict(lib_env)

    def env_for(self, variant, extra=None):
        env = dict(self.base_env, **(extra or {}))
        if variant.kind == "library":
            env.update(LD_PRELOAD=self.lib, KSMAUTO_STATS="off")
            env.update(self.lib_env)
            env.update(variant.env)
        return env


def child_setup(merge_any):
    """preexec_fn: die with the bench; merge-any set just before exec (kept
    across exec since Linux 6.7) for real programs' merge-any variant."""
    def setup():
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if merge_any and _libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0:
            os._exit(121)
    return setup


def kill_trees(roots, procs, timeout=30):
    """SIGKILL to the trees below our own processes `roots`, then wait until
    every one of them is gone (reaped: ours by wait, the rest by theirs)."""
    pids = ksm.tree(roots, ksm.parents())
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(ksm.stat_fields(p) for p in pids):
        time.sleep(0.1)


class ReadyDir:
    """Workers drop a file (named by worker or pid) here once loaded."""

    def __init__(self, ctx, want):
        self.path = tempfile.mkdtemp(prefix="ready-", dir=ctx.tmp)
        os.chmod(self.path, 0o1777)
        self.want = want

    def count(self):
        return sum(1 for n in os.listdir(self.path) if not n.endswith(".tmp"))

    def ready(self):
        return self.count() >= self.want


# ---------------------------------------------------------------- synthetic

SYNTHETIC = {
    # name: (layout, dup MiB, unique MiB, volatile MiB, late?)
    "pool": ("coalesced", 128, 128, 64, False),
    "pool-separate": ("separate", 128, 128, 64, False),
    "mix-10-80-10": ("coalesced", 32, 256, 32, False),
    "mix-60-20-20": ("coalesced", 192, 64, 64, False),
    "small-vmas": ("small:64", 96, 96, 64, False),
    "late-dup": ("coalesced", 128, 128, 64, True),
    "heap": ("heap", 128, 128, 64, False),
}


class Synthetic:
    """4 eff_pool workers (benches/eff_pool.c) of one layout."""
    workers = 4

    def __init__(self, name, ctx, seconds, late):
        self.name, self.ctx = name, ctx
        self.layout, self.dup, self.unique, self.volatile, has_late = SYNTHETIC[name]
        self.late = late if has_late else 0
        self.seconds = seconds

    def describe(self):
        how = {"coalesced": "the three areas adjacent mmaps, one VMA",
               "separate": "each area its own VMA",
               "heap": "small malloc objects (32-480 B) on the brk heap, dup objects first"}.get(self.layout)
        if how is None:  # small:KIB
            how = f"{self.layout.partition(':')[2]} KiB mappings, kinds alternating, each its own VMA"
        late = f"; dup data unique for {self.late} s, then rewritten shared" if self.late else ""
        return (f"{self.workers} workers x ({self.dup} MiB dup, {self.unique} MiB unique, "
                f"{self.volatile} MiB volatile); {how}{late}")

    def window(self):
        return self.seconds + self.late

    def supports(self, kind):
        return True

    def pool(self, variant):
        return SyntheticPool(self, variant)


class SyntheticPool:
    def __init__(self, wl, variant):
        self.wl, self.variant, self.procs, self.roots = wl, variant, [], []

    def setup(self):
        self.ready_dir = ReadyDir(self.wl.ctx, self.wl.workers)
        self.log = open(os.path.join(self.ready_dir.path, "..", f"{self.wl.name}-{self.variant.name}.log"), "a")

    def launch(self):
        wl, mark = self.wl, {"merge-any": "merge-any", "oracle": "oracle"}.get(self.variant.kind, "none")
        for k in range(wl.workers):
            argv = [wl.ctx.eff_pool, f"worker={k}", f"layout={wl.layout}", f"dup={wl.dup}",
                    f"unique={wl.unique}", f"volatile={wl.volatile}", f"mark={mark}", f"late={wl.late}",
                    f"ready={os.path.join(self.ready_dir.path, str(k))}"]
            p = subprocess.Popen(argv, env=wl.ctx.env_for(self.variant), stdin=subprocess.DEVNULL,
                                 stdout=self.log, stderr=self.log)
            self.procs.append(p)
            self.roots.append(p.pid)

    def ready(self):
        return self.ready_dir.ready()

    def broken(self):
        dead = [p for p in self.procs if p.poll() is not None]
        return f"{len(dead)} worker(s) exited (status {dead[0].returncode})" if dead else None

    def info(self):
        vmas = []
        for k in range(self.wl.workers):
            try:
                with open(os.path.join(self.ready_dir.path, str(k))) as f:
                    vmas.append(int(next(l.split()[1] for l in f if l.startswith("vmas "))))
            except (OSError, StopIteration, ValueError):
                vmas.append(None)
        return {"data_vmas_per_worker": vmas}

    def stop(self):
        kill_trees(self.roots, self.procs)
        self.log.close()


class Keepalive:
    """One small merge-any eff_pool worker (1 MiB, nothing to merge): keeps
    ksmd scanning while no pool runs (ksmd sleeps with nothing registered),
    so the scan-time advisor can settle between windows."""

    def __init__(self, ctx):
        self.proc = subprocess.Popen([ctx.eff_pool, "worker=99", "layout=coalesced", "dup=0", "unique=1",
                                      "volatile=0", "mark=merge-any"], env=ctx.base_env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.roots = [self.proc.pid]

    def stop(self):
        kill_trees(self.roots, [self.proc])
