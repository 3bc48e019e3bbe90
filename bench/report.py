"""Markdown from a run's JSON-able result (bench/run.py), so RESULTS.md can be rebuilt from
results.json for every run it holds."""
MB = 2 ** 20


def _s(x):
    return "—" if x is None else f"{x:.3f}" if x < 100 else f"{x:.1f}"


def _diff(r):
    if r.get("check") == "reference":
        return "reference"
    if r.get("max_abs_diff") is None:
        return r.get("check") or "—"
    text = f"{r['max_abs_diff']:.1e}"
    return text if r.get("check_ok", True) else f"**DIVERGED** {text}"


def _mark(ok):
    return "pass" if ok else "**fail**"


def header(h):
    blas = "; ".join(f"{b['internal_api']} {b['version']} ({b['user_api']}, kernel "
                     f"{b.get('architecture')}, {b['num_threads']} threads, {b['library']})"
                     for b in h["threadpools"]) or "threadpoolctl not installed"
    env = ", ".join(f"{k}={'unset' if v is None else repr(v)}" for k, v in h["openblas_env"].items())
    versions = ", ".join(f"{k} {v}" for k, v in h["versions"].items())
    return "\n".join([
        f"- command: `{h['command']}` ({h['date']})",
        f"- machine: {h['cpu']}, {h['cores']} cores ({h['affinity']} usable), "
        f"{h['memory_gib']:.0f} GiB; load average {h['load_start']} at the start, "
        f"{h.get('load_end', '?')} at the end (other processes may share the machine)",
        f"- versions: {versions}; chainrule at {h['git']}",
        f"- BLAS threads: {h['threads']} (threadpoolctl and torch.set_num_threads); "
        f"threadpools: {blas}",
        f"- environment: {env}",
    ])


def timing_table(run):
    lines = ["| workload | system | median s | min-max s | x NumPy | x NumPy, best | "
             "max abs diff vs NumPy | target |", "|---|---|---:|---:|---:|---:|---|---|"]
    for name, w in run["workloads"].items():
        if name in ("W5", "W6"):
            continue
        targets = {t["system"]: t for t in w.get("targets", [])}
        base = w["systems"].get("numpy", {})
        for system, r in w["systems"].items():
            t = targets.get(system)
            mark = f"<= {t['limit']:.2f} {_mark(t['pass'])}" if t else ""
            best = f"{r['min'] / base['min']:.2f}" if base.get("min") and r.get("min") else "—"
            lines.append(f"| {name} | {system} | {_s(r['median'])} | {_s(r['min'])}-{_s(r['max'])}"
                         f" | {r['ratio']:.2f} | {best} | {_diff(r)} | {mark} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def disturbed(run, limit=1.10):
    """Lines naming the workloads whose median NumPy repetition ran more than `limit` times its
    fastest: other work shared the machine, so their ratios and pass/fail marks are weak
    evidence either way."""
    out = []
    for name, w in run["workloads"].items():
        r = w.get("systems", {}).get("numpy", {})
        if name not in ("W5", "W6") and r.get("min") and r["median"] / r["min"] > limit:
            out.append(f"- **{name} was disturbed**: NumPy's median repetition took "
                       f"{r['median'] / r['min']:.2f}x its fastest ({_s(r['min'])}-{_s(r['max'])} "
                       f"s), so other work shared the machine; its ratios are weak evidence")
    return out


def w6_table(w):
    lines = [f"W6: {w['description']}", "",
             "| system | median s | min-max s | x NumPy | x sklearn | epochs | test accuracy | "
             "max abs diff vs NumPy | target |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    targets = {t["system"]: t for t in w.get("targets", [])}
    for system, r in w["systems"].items():
        t = targets.get(system)
        mark = f"{t['what']} {_mark(t['pass'])}" if t else ""
        acc = "—" if r.get("accuracy") is None else f"{r['accuracy']:.4f}"
        rel = "—" if r.get("ratio_sklearn") is None else f"{r['ratio_sklearn']:.2f}"
        lines.append(f"| {system} | {_s(r['median'])} | {_s(r['min'])}-{_s(r['max'])} | "
                     f"{r['ratio']:.2f} | {rel} | {r.get('epochs', '—')} | {acc} | {_diff(r)} | "
                     f"{mark} |")
    return "\n".join(lines)


def _verdict(t):
    """A W5 target: its verdict (pass, parity (not below), fail ...), bold unless a pass."""
    v = t.get("verdict") or ("pass" if t["pass"] else "fail")
    return f"{t['what']}: " + (v if t["pass"] else f"**{v}**")


def _mb(r, key, digits=3):
    return "—" if r.get(key) is None else f"{r[key] / MB:.{digits}f}"


def w5_table(w):
    lines = [f"W5: {w['description']}", "",
             "| phase | system | exact array peak MB | tracemalloc peak MB (arrays + objects) | "
             "resident set peak MB, median | min-max | saved for backward MB | target |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    targets = {(t["phase"], t["system"]): t for t in w.get("targets", [])}
    for phase in ("train", "infer"):
        for system, phases in w["systems"].items():
            r = phases.get(phase, {})
            if "error" in r:
                lines.append(f"| {phase} | {system} | failed | | | | | |")
                continue
            t = targets.get((phase, system))
            traced = "n/a" if system == "torch" else _mb(r, "tracemalloc_peak")
            saved = "n/a" if r.get("saved_bytes") is None else _mb(r, "saved_bytes")
            spread = ("—" if r.get("rss_min") is None
                      else f"{_mb(r, 'rss_min', 2)}-{_mb(r, 'rss_max', 2)}")
            lines.append(f"| {phase} | {system} | {_mb(r, 'array_peak')} | {traced} | "
                         f"{_mb(r, 'rss_peak', 2)} | {spread} | {saved} | "
                         f"{_verdict(t) if t else ''} |")
    return "\n".join(lines + [""] + [f"- {n}" for n in w.get("notes", [])])


def markdown(run, title):
    parts = [f"## {title}", "", header(run["header"]), ""]
    table = timing_table(run)
    if table:
        parts += ["Seconds per workload: median and min-max over the repetitions (number "
                  "given with each workload below), the systems interleaved (order rotated each "
                  "repetition); ratios to the hand-written NumPy median of the same run (the "
                  "targets' figure) and, as a check on noise, each system's fastest repetition "
                  "over NumPy's fastest. Before timing, each system's result (final weights, or "
                  "outputs) is compared with NumPy's.", "", table, ""] + disturbed(run)
        if disturbed(run):
            parts.append("")
        for name, w in run["workloads"].items():
            if name not in ("W5", "W6"):
                parts.append(f"- {name} ({w['reps']} repetitions): {w['description']}")
        parts.append("")
    if "W6" in run["workloads"]:
        parts += [w6_table(run["workloads"]["W6"]), ""]
    if "W5" in run["workloads"]:
        parts += [w5_table(run["workloads"]["W5"]), ""]
    parts += ["Systems:", ""] + [f"- **{k}**: {v}" for k, v in run["notes"].items()]
    if run.get("skipped"):
        parts += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in run["skipped"].items())]
    if run.get("problems"):
        parts += ["", "**Problems:**", ""] + [f"- {p}" for p in run["problems"]]
    return "\n".join(parts) + "\n"


def results_md(runs):
    out = ["# chainrule benchmark results", "",
           "Made by `bench/run.py --write` (see bench/README.md); one section per BLAS thread "
           "setting, the newest run of each. Targets of issue 6, as ratios to hand-written NumPy "
           "in the same run: W1 <= 1.05, W2 <= 2.0 eager and <= 1.25 compiled, W3 <= 1.05, "
           "W4 <= 1.05; W5 exact training array peak below PyTorch's (within 1 % is parity, "
           "not a pass) and nothing saved at inference; W6 "
           "faster than scikit-learn at equal accuracy.", ""]
    for key in sorted(runs):
        out.append(markdown(runs[key], key))
    return "\n".join(out)
