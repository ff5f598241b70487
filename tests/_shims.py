"""Count the Slurm commands a command runs: PATH shims that log each call, then run the real tool.

    shims = CallLog.create(directory)                  # directory must be writable by whoever runs them
    run(argv, env={"PATH": f"{shims.bin}:..."})
    assert shims.counts() == {"scontrol": 1, "sbatch": 1}
"""

from __future__ import annotations

import shlex
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# the submit side's tools (not srun: a running job inherits PATH and would log its own steps)
SLURM_TOOLS = ("sbatch", "scontrol", "squeue", "sacct", "sacctmgr", "sshare", "sinfo", "scancel")


@dataclass(frozen=True)
class CallLog:
    bin: Path
    log: Path

    @classmethod
    def create(cls, directory: Path, tools: tuple[str, ...] = SLURM_TOOLS) -> CallLog:
        shims = cls(directory / "bin", directory / "calls.log")
        shims.bin.mkdir(parents=True)
        shims.log.touch(mode=0o666)
        shims.log.chmod(0o666)  # the cluster user appends to it
        for tool in tools:
            real = shutil.which(tool)
            assert real is not None, f"{tool} is not installed"
            shim = shims.bin / tool
            shim.write_text(f'#!/bin/sh\necho "{tool}" >> {shlex.quote(str(shims.log))}\n'
                            f'exec {shlex.quote(real)} "$@"\n')
            shim.chmod(0o755)
        return shims

    def counts(self) -> Counter[str]:
        """Calls per tool since the last reset."""
        return Counter(self.log.read_text().split())

    def reset(self) -> None:
        self.log.write_text("")
