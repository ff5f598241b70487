"""Run inside one allocation by bench/bootstrap.py (copied into its work directory):

    python _bootstrap_driver.py RESOLVED_JSON BOOTSTRAP REPS OUT_JSON

Times ``srun`` job steps, the variants interleaved (order reversed every other repetition, one
warm-up repetition dropped): a trivial command alone, and the same command through hpc-tf's
bootstrap exactly as the rendered batch script starts it. Then, inside ONE step (``--inner``), the
same commands as plain child processes, to split the bootstrap's own cost from what srun adds
around it. Writes {variant: [ms, ...]} to OUT_JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO


def main() -> None:
    args = sys.argv[1:]
    inner = args[:1] == ["--inner"]
    resolved, bootstrap, reps, out = args[inner], args[inner + 1], int(args[inner + 2]), Path(args[inner + 3])
    python = json.loads(Path(resolved).read_text())["python"]
    logs = out.parent
    via = [python, "-S", bootstrap, "--resolved", resolved, "--"]  # as job.sbatch.j2 starts it
    commands = {
        "true": ["true"],
        "bootstrap true": [*via, "true"],
        "python -c pass": [python, "-c", "pass"],
        "bootstrap python -c pass": [*via, python, "-c", "pass"],
    }
    if inner:  # already inside a step: plain child processes, stderr to a file
        with (logs / "inner.err").open("ab") as err:
            times = _interleave(reps, {f"in-step {name}": argv for name, argv in commands.items()}, stderr=err)
        out.write_text(json.dumps(times))
        return
    steps = {}
    for name, argv in commands.items():
        log = logs / f"step-{name.replace(' ', '_')}.out"
        steps[name] = ["srun", "--kill-on-bad-exit=1", "--open-mode=append", f"--output={log}", *argv]
    times = _interleave(reps, steps, stderr=None)
    inner_out = out.with_name("inner.json")
    subprocess.run(["srun", "--output", str(logs / "inner.out"), python, __file__, "--inner", resolved, bootstrap,
                    str(reps), str(inner_out)], check=True, timeout=600)
    times.update(json.loads(inner_out.read_text()))
    out.write_text(json.dumps(times))


def _interleave(reps: int, commands: dict[str, list[str]], stderr: IO[bytes] | None) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for rep in range(-1, reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            t0 = time.perf_counter()
            _run(commands[name], stderr)
            if rep >= 0:
                times[name].append((time.perf_counter() - t0) * 1000)
    return times


def _run(argv: list[str], stderr: IO[bytes] | None, timeout_s: float = 120) -> None:
    """Run argv and wait in waitpid. Not subprocess.run(timeout=...): its wait polls with sleeps
    that double from 0.5 to 50 ms, which rounds every time up to 15.5, 31.5, 63.5, 113.5 ms...
    (the quantized figures of earlier runs); a watchdog kills a command that hangs instead."""
    process = subprocess.Popen(argv, stderr=stderr)
    watchdog = threading.Timer(timeout_s, process.kill)
    watchdog.start()
    try:
        returncode = process.wait()
    finally:
        watchdog.cancel()
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, argv)


if __name__ == "__main__":
    main()
