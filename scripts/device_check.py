"""Device check: what a lent GPU machine tells us about gnnopt, in one time-boxed run.

Sections, in order, each under its share of the total budget (default 480 s on CUDA, 180 s
with ``--cpu``; a section's unused time passes to the next):

* ``gpu tests``: ``pytest -q -m gpu tests`` in a subprocess (``--cpu``: tests/test_gpu.py,
  which skips without CUDA);
* ``step benchmark``: median ``GNNOptimizer.step()`` of every rule against Adam and the
  optimizee's forward+backward at batch 128, and the peak CUDA memory a step adds, on the
  task-17 CNN and its width-64/128 variants (``--cpu``: task 17, ff and pna only);
* ``host sync``: the first operation of a step that synchronises with the host
  (``torch.cuda.set_sync_debug_mode("error")``) and how many there are ("warn");
* ``meta-training throughput``: seconds per ``MetaTrainer.outer_step()`` (tbptt, pna) at
  meta-batch 1, 8 and 32 on the embedded FashionMNIST subset (``--cpu``: ff, B=1).

Exceptions are recorded per section, never fatal; sections left without time are listed
as "not run: budget". ``OUT/device_check.md`` and ``OUT/device_check.json`` are rewritten
after every section (and benchmark row), so a run killed mid-way keeps what it finished.
Usually started by ``scripts/device_check.sh``; exit status 1 when a section failed.

    python scripts/device_check.py --out device-check-out [--cpu] [--budget 480]
"""
from __future__ import annotations

import argparse, contextlib, datetime, json, os, platform, re, statistics, subprocess, sys, tempfile, time, traceback, warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: section name -> share of the total budget (cumulative deadlines: slack carries forward)
SHARES = {"gpu tests": 0.30, "step benchmark": 0.35, "host sync": 0.10, "meta-training throughput": 0.25}
MIN_SECTION_S = 3.0  # a section with less time left than this is not started


class Check:
    """The run's settings, its clock and its report (rewritten by :meth:`save`)."""

    def __init__(self, args: argparse.Namespace, torch_mod, device) -> None:
        self.args, self.torch, self.device = args, torch_mod, device
        self.cpu = device is None or device.type != "cuda"
        self.start = time.monotonic()
        self.deadline = self.start + args.budget  # the section's deadline, set by main
        self.meta: dict = {}
        self.sections: list[dict] = []

    def left(self) -> float:  # seconds to the current section's deadline
        return self.deadline - time.monotonic()

    def out_of_time(self) -> bool:
        return self.left() <= 0

    def sync(self) -> None:  # around every timing on CUDA
        if not self.cpu:
            self.torch.cuda.synchronize()

    def save(self) -> None:
        out = Path(self.args.out)
        self.meta["elapsed_s"] = round(time.monotonic() - self.start, 1)
        data = {"meta": self.meta, "sections": self.sections}
        for name, text in (("device_check.json", json.dumps(data, indent=2, default=str)),
                           ("device_check.md", render_markdown(data))):
            tmp = out / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, out / name)


# ---------------------------------------------------------------------------- sections
def gpu_tests(ck: Check, rec: dict) -> None:
    targets = ["tests/test_gpu.py"] if ck.cpu else ["-m", "gpu", "tests"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets]
    rec["columns"] = ["command", "exit", "passed", "failed", "errors", "skipped", "deselected"]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(5.0, ck.left()))
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rec["status"] = "partial: budget (pytest timed out)"
        rc = "timeout"
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?|deselected)", line)]
    counts = {k: 0 for k in ("passed", "failed", "errors", "skipped", "deselected")}
    for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary[-1] if summary else ""):
        counts["errors" if kind.startswith("error") else kind] = int(n)
    rec["rows"] = [{"command": " ".join(["pytest -q", *targets]), "exit": rc, **counts}]
    rec["failures"] = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))][:30]
    rec["output_tail"] = output[-4000:]
    if rc != 0 and rc != "timeout" or counts["failed"] or counts["errors"]:
        rec["status"] = "failed"
    if ck.cpu and counts["skipped"] and not counts["passed"]:
        rec["note"] = "CPU mode: tests/test_gpu.py only; all skipped without CUDA"


def _optimizee(ck: Check, task_name: str):
    """A seeded task model on the device, a batch of 128 random inputs and fwd+bwd."""
    import torch
    from torch.nn import functional as F
    from gnnopt.bench.tasks import get_task

    task = get_task(task_name)
    torch.manual_seed(0)
    model = task.build_model().to(ck.device)
    x = torch.randn(128, *task.input_shape, device=ck.device)
    y = torch.randint(0, task.num_classes, (128,), device=ck.device)

    def fwd_bwd() -> None:
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x), y).backward()

    return model, fwd_bwd


def _rules(ck: Check) -> list[str]:
    from gnnopt.rules import list_rules
    return [r for r in list_rules() if r in ("ff", "pna")] if ck.cpu else list(list_rules())


def step_benchmark(ck: Check, rec: dict) -> None:
    import torch
    from gnnopt import GNNOptimizer
    from gnnopt.rules import create

    tasks = ["fmnist17"] if ck.cpu else ["fmnist17", "fmnist17-w64", "fmnist17-w128"]
    rules = _rules(ck)
    warmup, repeats = (1, 2) if ck.cpu else (3, 10)
    warnings.simplefilter("ignore")  # e.g. non-finite skips of untrained rules (counted below)
    rec["columns"] = ["task", "params", "rule", "rule_ms", "adam_ms", "fwd_bwd_ms", "rule/fwd+bwd", "rule/adam",
                      "peak_mib_added", "reps"]
    rec["note"] = f"medians of {repeats} timed steps after {warmup} warm-up, interleaved; batch 128; untrained rules"
    rec["rows"] = []
    for task_name in tasks:
        if ck.out_of_time():
            rec["status"] = "partial: budget"
            return
        model, fwd_bwd = _optimizee(ck, task_name)
        opts = {r: GNNOptimizer(model, create(r)) for r in rules}
        steps = {"fwd+bwd": fwd_bwd, "adam": torch.optim.Adam(model.parameters(), lr=1e-3).step,
                 **{r: opt.step for r, opt in opts.items()}}
        keys, times = list(steps), {k: [] for k in steps}
        for rep in range(warmup + repeats):
            if rep > warmup and ck.out_of_time():
                rec["status"] = "partial: budget"
                break
            for key in keys[rep % len(keys):] + keys[: rep % len(keys)]:  # rotate the order
                if key != "fwd+bwd":
                    fwd_bwd()  # fresh gradients (not timed)
                ck.sync()
                t0 = time.perf_counter()
                steps[key]()
                ck.sync()
                if rep >= warmup:
                    times[key].append((time.perf_counter() - t0) * 1e3)
        if not times["fwd+bwd"]:
            return
        ms = {k: statistics.median(v) for k, v in times.items()}
        params = sum(p.numel() for p in model.parameters())
        for name in ["adam", *rules]:
            peak = "n/a"
            if not ck.cpu:
                fwd_bwd()
                ck.sync()
                base = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
                steps[name]()
                ck.sync()
                peak = round((torch.cuda.max_memory_allocated() - base) / 2**20, 2)
            rec["rows"].append({
                "task": task_name, "params": params, "rule": name, "rule_ms": round(ms[name], 3),
                "adam_ms": round(ms["adam"], 3), "fwd_bwd_ms": round(ms["fwd+bwd"], 3),
                "rule/fwd+bwd": round(ms[name] / ms["fwd+bwd"], 2), "rule/adam": round(ms[name] / ms["adam"], 1),
                "peak_mib_added": peak, "reps": len(times[name])})
        skips = {r: int(o.state.get("nonfinite_skips", 0)) for r, o in opts.items() if o.state.get("nonfinite_skips")}
        if skips:
            rec.setdefault("warnings", []).append(f"{task_name}: non-finite skips {skips} (timings understate)")
        ck.save()


def _where(tb) -> str:
    """The innermost frame of a traceback in gnnopt (else the innermost frame at all)."""
    frames = traceback.extract_tb(tb)
    f = ([fr for fr in frames if "gnnopt" in fr.filename and "device_check" not in fr.filename] or frames)[-1]
    return f"{_rel(f.filename)}:{f.lineno} `{(f.line or '').strip()[:80]}`"


def _rel(path: str) -> str:
    return os.path.relpath(path, REPO) if path.startswith(str(REPO)) else path


def host_sync(ck: Check, rec: dict) -> None:
    if ck.cpu:
        rec["status"] = "skipped: no CUDA"
        return
    import torch
    from gnnopt import GNNOptimizer
    from gnnopt.rules import create

    rec["columns"] = ["rule", "first_sync", "where", "syncs_per_step", "sync_sites"]
    rec["note"] = "one step after a warm-up step on the fmnist17 CNN; syncs_per_step counted in 'warn' mode"
    rec["rows"] = []
    warnings.simplefilter("ignore")
    for name in _rules(ck):
        if ck.out_of_time():
            rec["status"] = "partial: budget"
            return
        model, fwd_bwd = _optimizee(ck, "fmnist17")
        opt = GNNOptimizer(model, create(name))
        fwd_bwd()
        opt.step()  # warm-up: state, graph and rule moved to the device
        row = {"rule": name, "first_sync": "none", "where": ""}
        fwd_bwd()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        except RuntimeError as e:
            row["first_sync"] = str(e).strip().splitlines()[0][:160]
            row["where"] = _where(e.__traceback__)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        fwd_bwd()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                opt.step()
            except Exception as e:  # e.g. state left half-updated by the interrupted step
                row["warn_mode_error"] = f"{type(e).__name__}: {e}"[:200]
                rec.setdefault("warnings", []).append(f"{name}: warn-mode step failed: {row['warn_mode_error']}")
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        sites: dict[str, int] = {}
        for w in syncs:
            sites[f"{_rel(w.filename)}:{w.lineno}"] = sites.get(f"{_rel(w.filename)}:{w.lineno}", 0) + 1
        row["syncs_per_step"] = len(syncs)
        row["sync_sites"] = ", ".join(f"{s} x{n}" for s, n in sorted(sites.items(), key=lambda kv: -kv[1])[:6])
        rec["rows"].append(row)
        ck.save()


def meta_throughput(ck: Check, rec: dict) -> None:
    import torch
    from gnnopt.bench.data import load_dataset
    from gnnopt.training import MetaTrainer, TrainConfig

    rule, inner, timed, batches = ("ff", 4, 1, (1,)) if ck.cpu else ("pna", 10, 2, (1, 8, 32))
    rec["columns"] = ["rule", "meta_batch", "inner_steps", "s_per_outer_step", "episodes_per_s", "inner_steps_per_s",
                      "peak_mib", "meta_loss", "reps"]
    rec["note"] = f"tbptt unroll 5, embedded FashionMNIST subset; median of {timed} outer step(s) after 1 warm-up"
    rec["rows"] = []
    data = load_dataset("fmnist", embedded=True, device=ck.device)
    with tempfile.TemporaryDirectory() as tmp:
        for b in batches:
            if ck.out_of_time():
                rec["status"] = "partial: budget"
                return
            cfg = TrainConfig(rule=rule, objective="tbptt", unroll=5, inner_steps=inner, outer_steps=1 + timed,
                              meta_batch_size=b, eval_every=10**6, embedded=True)
            trainer = MetaTrainer(cfg, Path(tmp) / f"b{b}", device=ck.device, data=data, progress=False)
            trainer.outer_step()  # warm-up
            ck.sync()
            if not ck.cpu:
                torch.cuda.reset_peak_memory_stats()
            times, record = [], {}
            for _ in range(timed):
                if times and ck.out_of_time():
                    break
                t0 = time.perf_counter()
                record = trainer.outer_step()
                ck.sync()
                times.append(time.perf_counter() - t0)
            sec = statistics.median(times)
            rec["rows"].append({
                "rule": rule, "meta_batch": b, "inner_steps": inner, "s_per_outer_step": round(sec, 3),
                "episodes_per_s": round(b / sec, 2), "inner_steps_per_s": round(b * inner / sec, 1),
                "peak_mib": "n/a" if ck.cpu else round(torch.cuda.max_memory_allocated() / 2**20, 1),
                "meta_loss": round(float(record.get("meta_loss", float("nan"))), 4), "reps": len(times)})
            del trainer
            ck.save()


SECTIONS = {"gpu tests": gpu_tests, "step benchmark": step_benchmark, "host sync": host_sync,
            "meta-training throughput": meta_throughput}


# ---------------------------------------------------------------------------- report
def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [f"# gnnopt device check ({meta.get('mode', '?')})", ""]
    for key in ("date", "device", "torch", "cuda", "python", "gnnopt", "commit", "host", "budget_s", "elapsed_s"):
        if key in meta:
            lines.append(f"- **{key}**: {meta[key]}")
    for item in meta.get("install", []):
        lines.append(f"- install: {item}")
    lines += ["", "| section | status | seconds | note |", "|---|---|---:|---|"]
    for s in data["sections"]:
        lines.append(f"| {s['name']} | {_cell(s['status'])} | {s.get('seconds', '')} | {_cell(s.get('note', ''))} |")
    for s in data["sections"]:
        if not s.get("rows") and not s.get("error") and not s.get("failures"):
            continue
        lines += ["", f"## {s['name']}", ""]
        if s.get("rows"):
            cols = s["columns"]
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |" for r in s["rows"]]
        for item in s.get("failures", []) + s.get("warnings", []):
            lines.append(f"- {_cell(item)}")
        if s.get("error"):
            lines += ["", "```", s["error"].rstrip()[-3000:], "```"]
    return "\n".join(lines) + "\n"


def describe(args, torch_mod, device) -> dict:
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": "cpu" if device is None or device.type != "cuda" else "cuda",
            "python": sys.version.split()[0], "host": f"{platform.node()} ({os.cpu_count()} CPUs)",
            "budget_s": args.budget}
    if torch_mod is not None:
        meta["torch"] = torch_mod.__version__
        meta["cuda"] = f"{torch_mod.version.cuda} (available: {torch_mod.cuda.is_available()})"
        meta["device"] = (torch_mod.cuda.get_device_name(device) if meta["mode"] == "cuda"
                          else f"cpu, {torch_mod.get_num_threads()} threads")
    try:
        import gnnopt
        meta["gnnopt"] = f"{getattr(gnnopt, '__version__', '?')} from {os.path.dirname(gnnopt.__file__)}"
    except Exception as e:  # reported; the sections will fail with the details
        meta["gnnopt"] = f"import failed: {type(e).__name__}: {e}"
    try:
        meta["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True, timeout=10).stdout.strip() or "?"
    except Exception:
        meta["commit"] = "?"
    log = os.environ.get("DEVICE_CHECK_INSTALL_LOG")
    if log and os.path.exists(log):
        meta["install"] = [line.split("] ", 1)[1].strip() for line in open(log, errors="replace")
                           if line.startswith("[device_check] ")]
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "device-check-out"))
    p.add_argument("--budget", type=float, default=None, help="total seconds (default 480; 180 with --cpu)")
    p.add_argument("--cpu", action="store_true", help="CPU smoke run: small sections, no CUDA needed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 2 on CPU, untouched on CUDA)")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch_mod, device, problem = None, None, None
    try:
        import torch as torch_mod
        if not args.cpu and not torch_mod.cuda.is_available():
            problem, args.cpu = "CUDA not available: ran in --cpu mode", True
        device = torch_mod.device("cpu" if args.cpu else "cuda")
        if args.threads or args.cpu:
            torch_mod.set_num_threads(args.threads or min(2, os.cpu_count() or 1))
    except Exception as e:
        problem = f"torch import failed: {type(e).__name__}: {e}"
    if args.budget is None:
        args.budget = 180.0 if args.cpu else 480.0
    ck = Check(args, torch_mod, device)
    ck.meta = describe(args, torch_mod, device)
    if problem:
        ck.meta.setdefault("install", []).append(problem)
    ck.sections = [{"name": name, "status": "pending"} for name in SECTIONS]
    ck.save()
    share_end = 0.0
    for rec, (name, fn) in zip(ck.sections, SECTIONS.items()):
        share_end += SHARES[name]
        ck.deadline = ck.start + args.budget * share_end
        if ck.left() < MIN_SECTION_S:  # also when the total budget is spent
            rec["status"] = "not run: budget"
            ck.save()
            continue
        rec["status"] = "running"
        t0 = time.monotonic()
        try:
            if torch_mod is None:
                raise RuntimeError(problem)
            with warnings.catch_warnings():  # a section's filters end with it
                fn(ck, rec)
            if rec["status"] == "running":
                rec["status"] = "ok"
        except Exception as e:
            rec["status"] = f"error: {type(e).__name__}"
            rec["error"] = traceback.format_exc()
        finally:
            rec["seconds"] = round(time.monotonic() - t0, 1)
            if torch_mod is not None and not ck.cpu:
                with contextlib.suppress(Exception):
                    torch_mod.cuda.set_sync_debug_mode(0)
            ck.save()
        print(f"[device_check] {name}: {rec['status']} ({rec['seconds']} s)", file=sys.stderr, flush=True)
    return 1 if any(s["status"].startswith(("error", "failed")) for s in ck.sections) else 0


if __name__ == "__main__":
    sys.exit(main())
