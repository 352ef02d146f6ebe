"""The fuzz workers' engine: classify items in bounded child processes, surviving hangs and crashes.

`run_items` starts `python -m MODULE ADDRESS_SPACE_GB` and feeds it one item per line;
the child (`serve`) limits its address space, arms an alarm per item and writes one JSON
line per item. When the child dies (interpreter crash) or stops answering (hang), the item
it was on is recorded as such for every reader and a new child goes on with the next one.
Used by `nifti_fuzz_worker` and `dicom_fuzz_worker`, which supply what one item is.
"""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_items(module, items, readers, *, address_space_gb, timeout, timeout_env, failed_extra=None):
    """Classify `items` with `python -m module` children; one result dict per item, in order."""
    items = [str(p) for p in items]
    results = []
    while len(results) < len(items):
        todo = items[len(results):]
        command = [sys.executable, "-m", module, str(address_space_gb)]
        env = {**os.environ, timeout_env: str(timeout)}
        try:
            # The child's own alarm catches a hang in Python; this one a hang in C code.
            proc = subprocess.run(command, input="\n".join(todo), capture_output=True,
                                  text=True, cwd=ROOT, env=env,
                                  timeout=30 + 2 * timeout + 5 * len(todo))
            stdout, stderr, code = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stdout, stderr, code = _text(e.stdout), "TIMEOUT " + _text(e.stderr), -9
        done = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        results.extend(done)
        if len(done) < len(todo):  # the child died on the next item
            kind = "hang" if "TIMEOUT" in stderr else "crash"
            failed = {"path": todo[len(done)], "seconds": None, "maxrss_mb": None,
                      **(failed_extra or {}), "detail": {"all": f"exit {code}: {stderr[-300:]}"}}
            failed.update({reader: kind for reader in readers})
            results.append(failed)
    return results


def serve(classify, address_space_gb, timeout_env, default_timeout):
    """The child: classify each item read from stdin under an address-space limit and an alarm."""
    limit = int(address_space_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    timeout = float(os.environ.get(timeout_env, str(default_timeout)))

    def on_alarm(signum, frame):
        sys.stderr.write("TIMEOUT\n")
        sys.stderr.flush()
        os._exit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    for line in sys.stdin:
        item = line.strip()
        if not item:
            continue
        signal.setitimer(signal.ITIMER_REAL, timeout)
        result = classify(item)
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def _text(output):
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""
