"""From a variant's samples to its figures, and from the figures of a set to
the tables bench-efficiency prints: one per workload (and pace), a row per
variant, the issue's targets judged for library variants (informational)."""
import statistics

# issue 21's targets, against merge-any at the same pace over the same window
TARGET_MERGED = 0.95
TARGET_CPU = 0.5
TARGET_RMAP = 0.6
STRETCH_ORACLE_CPU = 1.25
SAMPLE_S = 0.5


def t90(samples):
    """Seconds from launch until the pool first held 90% of its final merged pages."""
    final = samples[-1]["pool"]["merging"] if samples else 0
    if final <= 0:
        return None
    return next(s["t"] for s in samples if s["pool"]["merging"] >= 0.9 * final)


def figures(run):
    """The figures of one variant's window (its samples, start and end)."""
    s, first, last = run["samples"], run["start"], run["samples"][-1]
    merged, rmap = last["pool"]["merging"], last["pool"]["rmap"]
    cpu = (last["ksmd_ticks"] - first["ksmd_ticks"]) / run["clk_tck"]
    ns = (last["ksmd_ns"] - first["ksmd_ns"]) / 1e9 if last["ksmd_ns"] is not None else None
    busy = (last["host"][0] - first["host"][0]) / max(1, last["host"][1] - first["host"][1])
    return {
        "merged": merged, "zero": last["pool"]["zero"], "rmap": rmap,
        "rmap_per_merged": round(rmap / merged, 2) if merged else None,
        "d_pages_sharing": last["ksm"]["pages_sharing"] - first["ksm"]["pages_sharing"],
        "d_pages_scanned": last["ksm"]["pages_scanned"] - first["ksm"]["pages_scanned"],
        "d_full_scans": last["ksm"]["full_scans"] - first["ksm"]["full_scans"],
        "ksmd_cpu_s": round(cpu, 2), "ksmd_cpu_exact_s": round(ns, 3) if ns is not None else None,
        # the pool's own CPU (its processes alive at the end; the library's
        # thread, sightings included, is part of it): what the variant costs
        # the program, beside what it saves ksmd
        "pool_cpu_s": round((last["pool"].get("cpu_ticks", 0) - first["pool"].get("cpu_ticks", 0))
                            / run["clk_tck"], 2),
        "t90_s": t90(s), "ready_s": run.get("ready_s"), "procs": last["pool"]["procs"],
        "max_rmap": max(x["pool"]["rmap"] for x in s),
        "host_busy": round(busy, 3), "window_s": last["t"],
        # share of the samples at which ksmd's pace was not the one set (another hold changed it)
        "pace_off_share": round(len(run["pace_changed_during"]) / len(s), 3),
    }


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def combine(runs):
    """Median over rounds of each figure; net CPU = CPU minus that round's `none`."""
    keys = runs[0]["figures"].keys()
    out = {k: median([r["figures"][k] for r in runs]) for k in keys}
    out["net_cpu_s"] = median([r["figures"].get("net_cpu_s") for r in runs])
    out["rounds"] = len(runs)
    out["disturbed"] = sum(1 for r in runs if r["pace_changed_during"])
    out["not_clean"] = sum(1 for r in runs if not r["clean"])
    return out


def net_cpu(results):
    """Subtract each round's `none` CPU (same workload, same pace) from its other variants."""
    base = {(r["pace"], r["workload"], r["round"]): r["figures"]["ksmd_cpu_s"]
            for r in results if r["kind"] == "none"}
    for r in results:
        b = base.get((r["pace"], r["workload"], r["round"]))
        r["figures"]["net_cpu_s"] = round(max(0.0, r["figures"]["ksmd_cpu_s"] - b), 2) if b is not None else None


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{round(v):,}"
    return f"{v:.{digits}f}"


def judge(row, base, oracle, real, cpu_key):
    """PASS/FAIL against issue 21's targets (informational)."""
    out = []
    def check(name, ok):
        out.append(f"{name} {'n/a' if ok is None else 'PASS' if ok else 'FAIL'}")
    merged = ratio(row["merged"], base["merged"])
    check("merged>=95%", None if merged is None else merged >= TARGET_MERGED)
    r = ratio(row["rmap"], base["rmap"])
    check("rmap<=0.6x", None if r is None else r <= TARGET_RMAP)
    if not real:
        r = ratio(row[cpu_key], base[cpu_key])
        check("CPU<=1/2", None if r is None else r <= TARGET_CPU)
        # 90% of a variant's own final pages says nothing when it merged less
        t, tb = row["t90_s"], base["t90_s"]
        short = merged is None or merged < TARGET_MERGED
        check("t90<=merge-any", None if t is None or tb is None or short else t <= tb + SAMPLE_S)
        if oracle:
            r = ratio(row[cpu_key], oracle[cpu_key])
            check("stretch CPU<=1.25x oracle", None if r is None else r <= STRETCH_ORACLE_CPU)
    return ", ".join(out)


COLUMNS = ["variant", "merged pages", "Δpages_sharing", "rmap items", "rmap/merged", "ksmd CPU s", "net CPU s",
           "pool CPU s", "pages scanned", "CPU vs merge-any", "rmap vs merge-any", "merged vs merge-any", "t90 s", "targets"]


def table(pace, workload, describe, window, rows, kinds, real):
    """Markdown table of one workload at one pace. rows: {variant: combined figures}."""
    base = next((rows[v] for v in rows if kinds[v] == "merge-any"), None)
    oracle = next((rows[v] for v in rows if kinds[v] == "oracle"), None)
    # net CPU (minus `none`, ksmd's CPU spent on the machine's other users of
    # KSM) when `none` ran and left merge-any some CPU of its own; raw else
    have_net = all(r["net_cpu_s"] is not None for v, r in rows.items() if kinds[v] != "none") \
        and base is not None and (base["net_cpu_s"] or 0) > 0
    cpu_key = "net_cpu_s" if have_net else "ksmd_cpu_s"
    rounds = max(r["rounds"] for r in rows.values())
    out = [f"### {workload} ({pace}, {window:g} s window{', median of %d rounds' % rounds if rounds > 1 else ''})",
           "", describe, "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for v, r in rows.items():
        rel = lambda k: fmt(ratio(r[k], base[k]), 2) if base and kinds[v] not in ("merge-any", "none") else ""
        cpu_rel = rel(cpu_key) + (f" (raw {rel('ksmd_cpu_s')})" if have_net and rel(cpu_key) else "")
        marks = ("*" if r["disturbed"] else "") + ("†" if r["not_clean"] else "")
        judged = judge(r, base, oracle, real, cpu_key) if base and kinds[v] == "library" and pace == "fixed" else ""
        out.append("| " + " | ".join([
            v + marks, fmt(r["merged"]), fmt(r["d_pages_sharing"]), fmt(r["rmap"]), fmt(r["rmap_per_merged"], 2),
            fmt(r["ksmd_cpu_s"], 2), fmt(r["net_cpu_s"], 2), fmt(r.get("pool_cpu_s"), 2), fmt(r["d_pages_scanned"]),
            cpu_rel, rel("rmap"), rel("merged"), fmt(r["t90_s"], 1), judged]) + " |")
    notes = ["CPU ratios use " + ("net CPU (minus the `none` variant of the same round; raw in brackets)." if have_net
                                  else "raw ksmd CPU (no `none` variant, or it took as much CPU as merge-any: "
                                       "ksmd was busy with other processes).")]
    if any(r["disturbed"] for r in rows.values()):
        off = max(r["pace_off_share"] or 0 for r in rows.values())
        notes.append(f"* ksmd's pace was changed by someone else (another hold) during the window, "
                     f"for up to {off * 100:.0f}% of its samples: these rows are not at the set pace.")
    if any(r["not_clean"] for r in rows.values()):
        notes.append("† KSM still held pages of an earlier pool when the window began.")
    busy = median([r["host_busy"] for r in rows.values()])
    if busy is not None:
        notes.append(f"Host CPU busy during the windows (median): {busy * 100:.0f}%.")
    return "\n".join(out + [""] + notes + [""])
