"""``srun`` for the local launcher's emulated allocation: start every task of one job step locally.

Copied into <run_dir>/runtime/ beside the hpc_tf_runtime package (hpc.runtime.install_into) and
run, in place of srun, by the batch scripts of ``hpc-tf launch --site local``; standard library only:

    python3 <run_dir>/runtime/local_step.py --output=<run_dir>/logs/task-%j-%t.out -- COMMAND ARGS...
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hpc_tf_runtime.local_step import main

if __name__ == "__main__":
    sys.exit(main())
