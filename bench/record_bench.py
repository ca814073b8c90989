#!/usr/bin/env python3
"""Recording-cost benchmark: camrec vs. one ffmpeg process per camera.

For each requested camera count N this script records the same N test-camera streams
(served by `camrec fake-cameras`) for T seconds twice:

  A. with one `camrec node` (single-voter cluster, local object store), and
  B. with one `ffmpeg -c copy -f segment` process per camera, the way Frigate/Shinobi record,

and prints CPU-seconds per camera-hour and peak RSS per camera for both, plus the
camrec/ffmpeg ratios. CPU is utime+stime from /proc/PID/stat over exactly the T-second
measurement window; peak RSS is VmHWM from /proc/PID/status. The fake cameras' own CPU is
not counted in either run (it is printed separately for context).

Python 3 standard library only; Linux only (/proc). All traffic stays on 127.0.0.1, every
wait is bounded, and every child process is killed on exit or Ctrl-C.

Usage:
  python3 bench/record_bench.py --camrec target/release/camrec --cameras 50 --seconds 60 \
      [--cameras 500 ...] [--json results.json]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Every child process started by this script; killed in `kill_all` (finally / signal).
CHILDREN = []

# urllib without any proxy from the environment: all traffic is to 127.0.0.1.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- process helpers


def spawn(argv, stdout, stderr, **kw):
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, **kw)
    CHILDREN.append(p)
    return p


def stop(procs, sig=signal.SIGTERM, timeout=10.0):
    """Sends `sig` to every live process, waits up to `timeout` in total, then SIGKILLs."""
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def kill_all():
    stop(CHILDREN, signal.SIGTERM, timeout=5.0)
    CHILDREN.clear()


def cpu_ticks(pid):
    """utime+stime of `pid` in clock ticks, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The comm field may contain spaces; fields after the last ')' start at field 3 (state).
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 (utime, stime)


def status_kib(pid, key):
    """A `kB` field (VmRSS, VmHWM, ...) of /proc/PID/status, or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def pss_kib(pid):
    """Proportional set size (shared pages divided among their users), or 0 if unavailable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


class Sampler:
    """Tracks CPU ticks and VmHWM of a set of processes, remembering the last value seen for
    processes that exit during the window (so a crash does not erase its cost)."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.start = {}
        self.last = {}
        self.hwm = {}

    def sample(self):
        for pid in self.pids:
            t = cpu_ticks(pid)
            if t is not None:
                self.last[pid] = t
                self.start.setdefault(pid, t)
            h = status_kib(pid, "VmHWM")
            if h is not None:
                self.hwm[pid] = max(h, self.hwm.get(pid, 0))

    def begin(self):
        self.start = {}
        self.sample()

    def alive(self):
        return sum(1 for pid in self.pids if cpu_ticks(pid) is not None)

    def cpu_seconds(self):
        return sum(self.last[p] - self.start[p] for p in self.start) / CLK_TCK

    def hwm_kib(self):
        return sum(self.hwm.values())


def measure(sampler, seconds, extra_samplers=(), progress=None):
    """Samples once a second over exactly `seconds`; returns the elapsed wall time."""
    for s in (sampler, *extra_samplers):
        s.begin()
    t0 = time.monotonic()
    end = t0 + seconds
    next_report = t0 + 10
    while True:
        now = time.monotonic()
        if now >= end:
            break
        time.sleep(min(1.0, end - now))
        for s in (sampler, *extra_samplers):
            s.sample()
        if progress and time.monotonic() >= next_report:
            next_report += 10
            progress(time.monotonic() - t0)
    return time.monotonic() - t0


# ---------------------------------------------------------------- helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=5.0):
    """Returns (status, parsed JSON or text); (None, error) if the request did not complete."""
    data = None
    headers = {}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with HTTP.open(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def count_files(root, suffix=".mp4"):
    n = 0
    for _dir, _subdirs, files in os.walk(root):
        n += sum(1 for f in files if f.endswith(suffix))
    return n


def total_bytes(root, suffix=".mp4"):
    size = 0
    for d, _subdirs, files in os.walk(root):
        for f in files:
            if f.endswith(suffix):
                try:
                    size += os.path.getsize(os.path.join(d, f))
                except OSError:
                    pass
    return size


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


# ---------------------------------------------------------------- fake cameras


class FakeCameras:
    def __init__(self, binary, count, workdir, timeout):
        self.err_path = os.path.join(workdir, "fake-cameras.log")
        self.err = open(self.err_path, "wb")
        argv = [binary, "fake-cameras", "--count", str(count), "--listen", "127.0.0.1:0"]
        self.proc = spawn(argv, subprocess.PIPE, self.err, text=True)
        self.urls = []
        got_all = threading.Event()

        def reader():
            for line in self.proc.stdout:  # keeps draining after the URLs so it never blocks
                line = line.strip()
                if line.startswith("rtsp://") and len(self.urls) < count:
                    self.urls.append(line)
                    if len(self.urls) == count:
                        got_all.set()

        threading.Thread(target=reader, daemon=True).start()
        if not got_all.wait(timeout):
            raise BenchError(
                f"fake-cameras printed {len(self.urls)}/{count} URLs within {timeout:.0f}s "
                f"(exit code {self.proc.poll()}); log tail:\n{tail(self.err_path)}")
        self.sampler = Sampler([self.proc.pid])

    def check(self):
        if self.proc.poll() is not None:
            raise BenchError(f"fake-cameras exited ({self.proc.returncode}):\n{tail(self.err_path)}")

    def close(self):
        stop([self.proc])
        self.err.close()


# ---------------------------------------------------------------- run A: camrec


def run_camrec(args, binary, urls, workdir, fake):
    n = len(urls)
    data_dir = os.path.join(workdir, "camrec-data")
    os.makedirs(data_dir)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    cfg = os.path.join(workdir, "node.toml")
    with open(cfg, "w") as f:
        f.write(
            "# Written by bench/record_bench.py: one bootstrap node, local object store.\n"
            "[node]\nid = 1\n"
            f"data_dir = {json.dumps(data_dir)}\n"
            f'listen = "127.0.0.1:{port}"\n\n'
            "[recorder]\nsegment_target_ms = 6000\n\n"
            '[storage]\nbackend = "local"\n\n'
            "[cluster]\nbootstrap = true\n\n"
            '[log]\nfilter = "warn"\n')
    log_path = os.path.join(workdir, "node.log")
    node_log = open(log_path, "wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMREC__")}
    proc = spawn([binary, "node", "--config", cfg], node_log, subprocess.STDOUT, env=env)
    pid = proc.pid
    try:
        def dead():
            if proc.poll() is not None:
                raise BenchError(f"camrec node exited ({proc.returncode}); log tail:\n{tail(log_path)}")

        # Ready.
        deadline = time.monotonic() + args.startup_timeout
        while True:
            dead()
            status, _ = http("GET", f"{api}/readyz", timeout=2)
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"camrec node not ready within {args.startup_timeout:.0f}s "
                                 f"(last /readyz: {status}); log tail:\n{tail(log_path)}")
            time.sleep(0.25)
        time.sleep(1.0)  # let startup allocations settle before the baseline
        baseline_rss = status_kib(pid, "VmRSS")
        baseline_hwm = status_kib(pid, "VmHWM")
        log(f"camrec: node ready (pid {pid}), baseline RSS {baseline_rss / 1024:.1f} MiB; "
            f"adding {n} cameras")

        # Register cameras.
        failures = []
        for i, url in enumerate(urls):
            status, body = http("POST", f"{api}/v1/cameras", {"id": f"cam-{i}", "url": url}, timeout=10)
            if status != 201:
                failures.append((i, status, body))
        if failures:
            log(f"camrec: {len(failures)} camera registrations failed, first: {failures[0]}")
        if len(failures) == n:
            raise BenchError(f"no camera could be registered: {failures[0]}")

        # Wait for all to record (bounded).
        wait_s = args.ready_timeout if args.ready_timeout else max(30.0, 0.2 * n)
        deadline = time.monotonic() + wait_s
        recording, states = 0, {}
        while True:
            dead()
            fake.check()
            status, body = http("GET", f"{api}/v1/cameras", timeout=10)
            if status == 200 and isinstance(body, dict):
                states = {}
                for c in body.get("cameras", []):
                    st = (c.get("state") or {}).get("state", "?")
                    states[st] = states.get(st, 0) + 1
                recording = states.get("recording", 0)
                if recording >= n:
                    break
            if time.monotonic() > deadline:
                log(f"camrec: only {recording}/{n} recording after {wait_s:.0f}s: {states}")
                break
            time.sleep(0.5)
        log(f"camrec: {recording}/{n} cameras recording; settling {args.settle:.0f}s")
        time.sleep(args.settle)

        # Measure.
        objects = os.path.join(data_dir, "objects")
        seg_before = count_files(objects)
        sampler = Sampler([pid])
        elapsed = measure(sampler, args.seconds, [fake.sampler], progress=lambda t: log(
            f"camrec: {t:.0f}s, cpu {sampler.cpu_seconds():.1f}s"))
        dead()
        seg_after = count_files(objects)
        peak = status_kib(pid, "VmHWM") or sampler.hwm_kib()
        pss = pss_kib(pid)
        status, body = http("GET", f"{api}/v1/cameras", timeout=10)
        recording_end = None
        if status == 200 and isinstance(body, dict):
            recording_end = sum(1 for c in body.get("cameras", [])
                                if (c.get("state") or {}).get("state") == "recording")
        cpu = sampler.cpu_seconds()
    finally:
        stop([proc], signal.SIGTERM, timeout=args.stop_timeout)
        node_log.close()
    log(f"camrec: node exited with {proc.returncode}")
    return {
        "cameras_registered": n - len(failures),
        "cameras_recording_start": recording,
        "cameras_recording_end": recording_end,
        "window_s": elapsed,
        "cpu_s": cpu,
        "cpu_s_per_camera_hour": cpu / n * 3600.0 / elapsed,
        "baseline_rss_kib": baseline_rss,
        "baseline_hwm_kib": baseline_hwm,
        "peak_rss_kib": peak,
        "peak_rss_per_camera_kib": peak / n,
        "marginal_rss_per_camera_kib": (peak - baseline_rss) / n,
        "pss_end_kib": pss,
        "pss_end_per_camera_kib": pss / n,
        "segments_in_window": seg_after - seg_before,
        "segments_total": count_files(objects),
        "segment_bytes_total": total_bytes(objects),
        "exit_code": proc.returncode,
    }


# ---------------------------------------------------------------- run B: ffmpeg


def run_ffmpeg(args, ffmpeg, urls, workdir, fake):
    n = len(urls)
    out = os.path.join(workdir, "ffmpeg-out")
    os.makedirs(out)
    log_path = os.path.join(workdir, "ffmpeg.log")
    ff_log = open(log_path, "wb")
    procs = []
    try:
        for i, url in enumerate(urls):
            argv = [ffmpeg, "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp",
                    "-i", url, "-c", "copy", "-f", "segment", "-segment_time", "6",
                    "-reset_timestamps", "1", os.path.join(out, f"cam-{i}-%05d.mp4")]
            procs.append(spawn(argv, subprocess.DEVNULL, ff_log))

        # Running = process alive and its first segment file exists (bounded wait).
        wait_s = args.ready_timeout if args.ready_timeout else max(30.0, 0.2 * n)
        deadline = time.monotonic() + wait_s
        while True:
            fake.check()
            files = set(os.listdir(out))
            running = sum(1 for i, p in enumerate(procs)
                          if p.poll() is None and f"cam-{i}-00000.mp4" in files)
            if running >= n:
                break
            if time.monotonic() > deadline:
                exited = sum(1 for p in procs if p.poll() is not None)
                log(f"ffmpeg: only {running}/{n} recording after {wait_s:.0f}s "
                    f"({exited} exited); log tail:\n{tail(log_path, 5)}")
                break
            time.sleep(0.5)
        log(f"ffmpeg: {running}/{n} processes recording; settling {args.settle:.0f}s")
        time.sleep(args.settle)

        seg_before = count_files(out)
        sampler = Sampler([p.pid for p in procs])
        elapsed = measure(sampler, args.seconds, [fake.sampler], progress=lambda t: log(
            f"ffmpeg: {t:.0f}s, cpu {sampler.cpu_seconds():.1f}s"))
        sampler.sample()
        running_end = sum(1 for p in procs if p.poll() is None)
        seg_after = count_files(out)
        cpu = sampler.cpu_seconds()
        peak = sampler.hwm_kib()
        pss = sum(pss_kib(p.pid) for p in procs if p.poll() is None)
    finally:
        stop(procs, signal.SIGTERM, timeout=args.stop_timeout)
        ff_log.close()
    return {
        "cameras_recording_start": running,
        "cameras_recording_end": running_end,
        "window_s": elapsed,
        "cpu_s": cpu,
        "cpu_s_per_camera_hour": cpu / n * 3600.0 / elapsed,
        "peak_rss_kib": peak,
        "peak_rss_per_camera_kib": peak / n,
        "pss_end_kib": pss,
        "pss_end_per_camera_kib": pss / n,
        "segments_in_window": seg_after - seg_before,
        "segments_total": count_files(out),
        "segment_bytes_total": total_bytes(out),
    }


# ---------------------------------------------------------------- driver


def ratio(a, b):
    return a / b if b else float("nan")


def run_size(args, binary, ffmpeg, n):
    workdir = tempfile.mkdtemp(prefix=f"camrec-bench-{n}-")
    log(f"=== N={n}, T={args.seconds:.0f}s, workdir {workdir}")
    fake = None
    try:
        fake = FakeCameras(binary, n, workdir, args.startup_timeout)
        log(f"fake-cameras: pid {fake.proc.pid}, {fake.urls[0]} ..")
        fake_cpu = {}
        a = run_camrec(args, binary, fake.urls, workdir, fake)
        fake_cpu["camrec"] = fake.sampler.cpu_seconds()
        b = run_ffmpeg(args, ffmpeg, fake.urls, workdir, fake)
        fake_cpu["ffmpeg"] = fake.sampler.cpu_seconds()
        fake.check()
    except KeyboardInterrupt:
        if fake:
            fake.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    except BaseException:
        if fake:
            fake.close()
        log(f"logs of the failed run are kept in {workdir}")
        raise
    fake.close()
    result = {
        "cameras": n,
        "seconds": args.seconds,
        "camrec": a,
        "ffmpeg": b,
        "fake_cameras_cpu_s": fake_cpu,
        "ratio_cpu": ratio(a["cpu_s_per_camera_hour"], b["cpu_s_per_camera_hour"]),
        "ratio_rss": ratio(a["peak_rss_per_camera_kib"], b["peak_rss_per_camera_kib"]),
        "ratio_rss_marginal": ratio(a["marginal_rss_per_camera_kib"], b["peak_rss_per_camera_kib"]),
        "workdir": workdir,
    }
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
        result["workdir"] = None
    return result


def print_table(results, goal):
    def mib(kib):
        return f"{kib / 1024:.2f}"

    rows = [
        ("cameras (N)", lambda r: str(r["cameras"])),
        ("window T (s)", lambda r: f"{r['camrec']['window_s']:.1f} / {r['ffmpeg']['window_s']:.1f}"),
        ("camrec CPU-s / camera-hour", lambda r: f"{r['camrec']['cpu_s_per_camera_hour']:.1f}"),
        ("ffmpeg CPU-s / camera-hour", lambda r: f"{r['ffmpeg']['cpu_s_per_camera_hour']:.1f}"),
        (f"CPU ratio camrec/ffmpeg (goal <= {goal})", lambda r: f"{r['ratio_cpu']:.3f}"
         + ("" if r["ratio_cpu"] <= goal else "  (over goal)")),
        ("camrec peak RSS / camera, total/N (MiB)", lambda r: mib(r["camrec"]["peak_rss_per_camera_kib"])),
        ("camrec peak RSS / camera, marginal (MiB)", lambda r: mib(r["camrec"]["marginal_rss_per_camera_kib"])),
        ("  camrec baseline RSS / peak RSS (MiB)", lambda r: f"{mib(r['camrec']['baseline_rss_kib'])} / "
         f"{mib(r['camrec']['peak_rss_kib'])}"),
        ("ffmpeg peak RSS / camera (MiB)", lambda r: mib(r["ffmpeg"]["peak_rss_per_camera_kib"])),
        ("RSS ratio camrec/ffmpeg, total/N", lambda r: f"{r['ratio_rss']:.3f}"),
        ("RSS ratio camrec/ffmpeg, marginal", lambda r: f"{r['ratio_rss_marginal']:.3f}"),
        ("PSS / camera at end, camrec / ffmpeg (MiB)", lambda r: f"{mib(r['camrec']['pss_end_per_camera_kib'])}"
         f" / {mib(r['ffmpeg']['pss_end_per_camera_kib'])}"),
        ("camrec recording (start/end of window)", lambda r: f"{r['camrec']['cameras_recording_start']}"
         f"/{r['camrec']['cameras_recording_end']}"),
        ("ffmpeg recording (start/end of window)", lambda r: f"{r['ffmpeg']['cameras_recording_start']}"
         f"/{r['ffmpeg']['cameras_recording_end']}"),
        ("camrec segments (in window / total)", lambda r: f"{r['camrec']['segments_in_window']}"
         f" / {r['camrec']['segments_total']}"),
        ("ffmpeg segments (in window / total)", lambda r: f"{r['ffmpeg']['segments_in_window']}"
         f" / {r['ffmpeg']['segments_total']}"),
        ("segment MB written, camrec / ffmpeg", lambda r: f"{r['camrec']['segment_bytes_total'] / 1e6:.1f}"
         f" / {r['ffmpeg']['segment_bytes_total'] / 1e6:.1f}"),
        ("fake-cameras CPU-s (camrec / ffmpeg run)", lambda r: f"{r['fake_cameras_cpu_s']['camrec']:.1f}"
         f" / {r['fake_cameras_cpu_s']['ffmpeg']:.1f}"),
        ("camrec node exit code", lambda r: str(r["camrec"]["exit_code"])),
    ]
    label_w = max(len(label) for label, _ in rows)
    cells = [[fmt(r) for r in results] for _, fmt in rows]
    col_w = max(12, *(len(c) for row in cells for c in row))
    print()
    for (label, _), row in zip(rows, cells):
        print(f"{label:<{label_w}}  " + "  ".join(f"{c:>{col_w}}" for c in row))
    print()


def default_binary():
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return os.path.join(target, "release", "camrec")
    return os.path.join("target", "release", "camrec")


def main():
    ap = argparse.ArgumentParser(
        description="CPU and memory cost of recording N test cameras: camrec vs. ffmpeg per camera.")
    ap.add_argument("--camrec", default=None,
                    help="camrec binary (default $CARGO_TARGET_DIR/release/camrec, else target/release/camrec)")
    ap.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg binary (default: ffmpeg on PATH)")
    ap.add_argument("--cameras", type=int, action="append",
                    help="number of cameras; repeat to run several sizes in turn (default 50)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window T (default 60)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to wait after all cameras record, before measuring (default 3)")
    ap.add_argument("--ready-timeout", type=float, default=None,
                    help="max seconds to wait for all cameras to record (default max(30, 0.2*N))")
    ap.add_argument("--startup-timeout", type=float, default=30.0,
                    help="max seconds for fake-cameras / node startup (default 30)")
    ap.add_argument("--stop-timeout", type=float, default=20.0,
                    help="max seconds to wait for graceful exit after SIGTERM before SIGKILL (default 20)")
    ap.add_argument("--goal", type=float, default=0.2, help="CPU ratio goal (default 0.2)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON to FILE")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (recordings, logs)")
    args = ap.parse_args()
    sizes = args.cameras or [50]
    if any(n <= 0 for n in sizes):
        ap.error("--cameras must be positive")
    if args.seconds <= 0:
        ap.error("--seconds must be positive")

    binary = args.camrec or default_binary()
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        sys.exit(f"error: camrec binary not found or not executable: {binary} "
                 "(build with `cargo build --release` or pass --camrec PATH)")
    binary = os.path.abspath(binary)
    ffmpeg = shutil.which(args.ffmpeg)
    if not ffmpeg:
        sys.exit(f"error: ffmpeg not found ({args.ffmpeg}); install it or pass --ffmpeg PATH")
    if not os.path.isdir("/proc/self"):
        sys.exit("error: /proc is required (Linux)")

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicitly, so Ctrl-C / kill work even when started with SIGINT ignored (e.g. `cmd &`).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    results = []
    try:
        for n in sizes:
            results.append(run_size(args, binary, ffmpeg, n))
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; stopping children")
        return 130
    finally:
        kill_all()
        if results:
            print(f"camrec: {binary}\nffmpeg: {ffmpeg}\nCPU: utime+stime over the window; "
                  f"RSS: VmHWM; {os.cpu_count()} CPUs")
            print_table(results, args.goal)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"camrec_binary": binary, "ffmpeg": ffmpeg, "cpus": os.cpu_count(),
                               "results": results}, f, indent=2)
                log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
