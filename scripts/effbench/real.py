"""Real programs as pools for bench-efficiency: CPython and Node.js workers
that load the same data, and idle PostgreSQL backends after a pgbench
warm-up. No oracle exists for them (only the program could say where its
duplicates are). Missing Debian packages are installed with apt-get, services
kept from starting (as scripts/compat does)."""
import glob
import os
import shutil
import subprocess
import threading
import time

from .workloads import ReadyDir, child_setup, kill_trees

PY = "/usr/bin/python3"

PY_WORKER = r'''
import os, random, time
r = random.Random(20260521)
blobs = [r.randbytes(65536) for _ in range(1536)]          # 96 MiB of byte strings (malloc)
table = {f"user-{i:07d}": (i, r.random(), f"name-{r.getrandbits(40):x}") for i in range(300000)}
column = [r.random() for _ in range(1000000)]
open(os.path.join(os.environ["EFFBENCH_READY_DIR"], str(os.getpid())), "w").close()
while True:
    time.sleep(3600)
'''

NODE_WORKER = r'''
const fs = require("fs"), path = require("path");
let s = 0x9e3779b9 | 0;
const next = () => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return s >>> 0; };
const blobs = [];
for (let i = 0; i < 384; i++) {                           // 96 MiB of Buffers (off the V8 heap)
  const b = Buffer.allocUnsafeSlow(256 * 1024);
  const w = new Uint32Array(b.buffer, b.byteOffset, b.length / 4);
  for (let j = 0; j < w.length; j++) w[j] = next();
  blobs.push(b);
}
const table = new Map();                                 // objects and strings on the V8 heap
for (let i = 0; i < 300000; i++)
  table.set("user-" + i, { id: i, v: next() / 4294967296, name: "name-" + next().toString(16) });
fs.writeFileSync(path.join(process.env.EFFBENCH_READY_DIR, String(process.pid)), "");
setInterval(() => {}, 1 << 30);
'''


def ensure_packages(need, log):
    """need: {command: debian package}; installs the packages of missing commands."""
    missing = sorted({pkg for cmd, pkg in need.items() if not shutil.which(cmd) and not glob.glob(cmd)})
    if not missing:
        return
    log(f"bench-efficiency: installing {' '.join(missing)} (apt-get)")
    policy = "/usr/sbin/policy-rc.d"
    made = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# temporary, from libksmauto scripts/bench-efficiency\nexit 101\n")
        os.chmod(policy, 0o755)
        made = True
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends"] + missing,
                       env=env, check=True, stdout=subprocess.DEVNULL)
    finally:
        if made:
            os.unlink(policy)


class Workers:
    """N copies of one command that each drop a file named by their pid in
    EFFBENCH_READY_DIR once loaded."""
    workers = 4

    def __init__(self, name, ctx, seconds, argv, env, describe):
        self.name, self.ctx, self.seconds = name, ctx, seconds
        self.argv, self.env, self.text = argv, env, describe

    def describe(self):
        return f"{self.workers} x {self.text}"

    def window(self):
        return self.seconds

    def supports(self, kind):
        return kind != "oracle"

    def pool(self, variant):
        return WorkersPool(self, variant)


class WorkersPool:
    def __init__(self, wl, variant):
        self.wl, self.variant, self.procs, self.roots = wl, variant, [], []

    def setup(self):
        self.ready_dir = ReadyDir(self.wl.ctx, self.wl.workers)
        self.log = open(os.path.join(self.wl.ctx.tmp, f"{self.wl.name}-{self.variant.name}.log"), "a")

    def launch(self):
        env = self.wl.ctx.env_for(self.variant, dict(self.wl.env, EFFBENCH_READY_DIR=self.ready_dir.path))
        for _ in range(self.wl.workers):
            p = subprocess.Popen(self.wl.argv, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                 stderr=self.log, preexec_fn=child_setup(self.variant.kind == "merge-any"))
            self.procs.append(p)
            self.roots.append(p.pid)

    def ready(self):
        return self.ready_dir.ready()

    def broken(self):
        dead = [p for p in self.procs if p.poll() is not None]
        return f"{len(dead)} worker(s) exited (status {dead[0].returncode})" if dead else None

    def info(self):
        return {}

    def stop(self):
        kill_trees(self.roots, self.procs)
        self.log.close()


def python_workload(name, ctx, seconds):
    ensure_packages({PY: "python3"}, ctx.log)
    return Workers(name, ctx, seconds, [PY, "-c", PY_WORKER], {"PYTHONHASHSEED": "0"},
                   "python3 -c: 96 MiB of 64 KiB bytes, a 300k-entry dict and a 1M-float list from one seeded "
                   "generator, then idle")


def node_workload(name, ctx, seconds):
    ensure_packages({"node": "nodejs"}, ctx.log)
    return Workers(name, ctx, seconds, [shutil.which("node") or "node", "-e", NODE_WORKER], {},
                   "node -e: 96 MiB of 256 KiB Buffers and a 300k-entry Map of objects from one seeded "
                   "generator, then idle")


# ---------------------------------------------------------------- postgres

PG_CLIENTS = 8
APP_TABLES = 200
# An application's schema next to pgbench's: what an idle backend keeps of
# a session is mostly its caches of the relations it touched.
APP_SCHEMA = f"""DO $$ BEGIN FOR i IN 1..{APP_TABLES} LOOP
  EXECUTE format('CREATE TABLE app_%s (id int PRIMARY KEY, name text, qty int, at timestamptz,
                  price numeric, doc jsonb, note text, ref int, ok bool, tag text)', i);
  EXECUTE format('CREATE INDEX ON app_%s (ref, qty)', i);
  EXECUTE format('INSERT INTO app_%s SELECT g, md5(g::text), g, now(), g, ''{{}}'', ''x'', g, true, ''y''
                  FROM generate_series(1, 200) g', i);
END LOOP; END $$;"""


def pg_bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return found[-1] if found else None


def session_script(path, accounts):
    """What each of the 8 clients does once, on its own connection, before it
    idles: a query on each application table, catalog-heavy queries and 200
    select-only pgbench transactions."""
    lines = [f"SELECT count(*), max(name) FROM app_{i} WHERE ref < 50;" for i in range(1, APP_TABLES + 1)]
    lines += ["SELECT count(*) FROM information_schema.columns;",
             "SELECT sum(abalance) FROM pgbench_accounts WHERE aid % 997 = 0;",
             "SELECT c.relname, count(*) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
             "GROUP BY c.relname ORDER BY 2 DESC LIMIT 5;"]
    for _ in range(200):
        lines += [f"\\set aid random(1, {accounts})",
                  "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;"]
    # pgbench keeps \sleep in an int of microseconds: 2000 s at most a command
    lines += ["\\sleep 2000 s"] * 50
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


class Postgres:
    """8 idle backends of one server after a pgbench warm-up."""

    def __init__(self, name, ctx, seconds, scale=10, warm_s=5):
        ensure_packages({"/usr/lib/postgresql/*/bin/postgres": "postgresql",
                         "/usr/lib/postgresql/*/bin/pgbench": "postgresql-contrib"}, ctx.log)
        self.name, self.ctx, self.seconds, self.scale, self.warm_s = name, ctx, seconds, scale, warm_s
        self.dir = os.path.join(ctx.tmp, "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres", "postgres")
        self.template = os.path.join(self.dir, "template")
        self.script = os.path.join(self.dir, "session.sql")
        session_script(self.script, 100000 * scale)
        self._make_template()

    def describe(self):
        return (f"PostgreSQL ({os.path.basename(os.path.dirname(os.path.dirname(pg_bin('postgres'))))}) "
                f"on a Unix socket, pgbench -i -s {self.scale} and {APP_TABLES} small tables; then pgbench -S -c 8 "
                f"for {self.warm_s} s, then {PG_CLIENTS} clients that each query every table, run catalog "
                f"queries and 200 select-only "
                f"transactions and keep their connection idle; the pool is the server's processes")

    def window(self):
        return self.seconds

    def supports(self, kind):
        return kind != "oracle"

    def pool(self, variant):
        return PostgresPool(self, variant)

    def server_argv(self, data, sock):
        return [pg_bin("postgres"), "-D", data, "-c", "listen_addresses=", "-c", f"unix_socket_directories={sock}",
                "-c", "fsync=off", "-c", "max_connections=40", "-c", "logging_collector=off"]

    def client(self, sock, *args, **kw):
        return subprocess.run([pg_bin(args[0]), "-h", sock, "-U", "postgres"] + list(args[1:]),
                              env=self.ctx.base_env, capture_output=True, text=True, **kw)

    def _make_template(self):
        self.ctx.log(f"bench-efficiency: postgres: initdb and pgbench -i -s {self.scale} (once) ...")
        r = subprocess.run([pg_bin("initdb"), "-A", "trust", "-E", "UTF8", "--no-sync", "-D", self.template],
                           user="postgres", env=self.ctx.base_env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr[-500:]}")
        sock = self._sockdir("prep")
        srv = subprocess.Popen(self.server_argv(self.template, sock), user="postgres", env=self.ctx.base_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=child_setup(False))
        try:
            wait_server(self, sock)
            for step in (["createdb", "bench"], ["pgbench", "-i", "-q", "-s", str(self.scale), "bench"],
                         ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-c", APP_SCHEMA, "bench"]):
                r = self.client(sock, *step)
                if r.returncode:
                    raise RuntimeError(f"{' '.join(step)} failed: {r.stderr[-500:]}")
        finally:
            srv.send_signal(2)  # SIGINT: fast shutdown, a clean template
            srv.wait(timeout=60)

    def _sockdir(self, tag):
        d = os.path.join(self.dir, f"sock-{tag}")
        os.makedirs(d, exist_ok=True)
        shutil.chown(d, "postgres", "postgres")
        return d


def wait_server(wl, sock, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wl.client(sock, "pg_isready", "-q").returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("postgres did not start")


class PostgresPool:
    def __init__(self, wl, variant):
        self.wl, self.variant, self.procs, self.roots = wl, variant, [], []
        self.state, self.error = "starting", None

    def setup(self):
        tag = f"{self.variant.name}-{time.time_ns()}"
        self.data = os.path.join(self.wl.dir, f"data-{tag}")
        subprocess.run(["cp", "-a", self.wl.template, self.data], check=True)
        self.sock = self.wl._sockdir(tag)
        self.log = open(os.path.join(self.wl.ctx.tmp, f"{self.wl.name}-{self.variant.name}.log"), "a")

    def launch(self):
        srv = subprocess.Popen(self.wl.server_argv(self.data, self.sock), user="postgres",
                               env=self.wl.ctx.env_for(self.variant), stdin=subprocess.DEVNULL,
                               stdout=self.log, stderr=self.log,
                               preexec_fn=child_setup(self.variant.kind == "merge-any"))
        self.procs.append(srv)
        self.roots.append(srv.pid)
        self.thread = threading.Thread(target=self._warm_up, daemon=True)
        self.thread.start()

    def _warm_up(self):
        wl, sock = self.wl, self.sock
        try:
            wait_server(wl, sock)
            r = wl.client(sock, "pgbench", "-n", "-S", "-c", str(PG_CLIENTS), "-j", "2", "-T", str(wl.warm_s), "bench")
            if r.returncode:
                raise RuntimeError(f"pgbench warm-up failed: {r.stderr[-300:]}")
            clients = subprocess.Popen([pg_bin("pgbench"), "-h", sock, "-U", "postgres", "-n", "-c", str(PG_CLIENTS),
                                        "-j", "2", "-t", "1", "-f", wl.script, "bench"], env=wl.ctx.base_env,
                                       stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
            # (no PR_SET_PDEATHSIG: it fires when the *thread* that started
            # the process ends, and this one ends once the pool is ready; the
            # clients end with the server anyway)
            self.procs.append(clients)
            self.clients = clients
            query = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' "
                     "AND state = 'idle' AND query LIKE 'SELECT abalance%'")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and clients.poll() is None:
                r = wl.client(sock, "psql", "-tA", "-c", query, "bench")
                if r.stdout.strip() == str(PG_CLIENTS):
                    self.state = "ready"
                    return
                time.sleep(1)
            self.log.flush()
            with open(self.log.name) as f:
                tail = f.read()[-600:]
            raise RuntimeError(f"the idle sessions did not come up; log ends: {tail}")
        except Exception as e:  # reported by broken()
            self.error, self.state = str(e), "broken"

    def ready(self):
        return self.state == "ready"

    def broken(self):
        if self.error:
            return self.error
        if self.procs[0].poll() is not None:
            return f"postgres exited (status {self.procs[0].returncode})"
        return None

    def info(self):
        return {}

    def stop(self):
        srv = self.procs[0]
        if srv.poll() is None:
            srv.send_signal(3)  # SIGQUIT: immediate shutdown, every backend with it
            try:
                srv.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        roots = [p.pid for p in self.procs]
        kill_trees(roots, self.procs)
        self.thread.join(timeout=30)
        self.log.close()
        shutil.rmtree(self.data, ignore_errors=True)
        shutil.rmtree(self.sock, ignore_errors=True)
