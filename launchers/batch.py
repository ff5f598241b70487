"""The batch script's driver: start the job step, forward Slurm's warning, requeue by hpc-tf's policy.

Copied into <run_dir>/runtime/ beside the hpc_tf_runtime package (hpc.runtime.install_into) and
exec'd by the batch script after its environment setup; standard library only, hence ``-S``:

    exec python3 -S <run_dir>/runtime/batch.py --resolved <run_dir>/resolved.json --restart-log PATTERN -- STEP...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from hpc_tf_runtime.batch import main

if __name__ == "__main__":
    sys.exit(main())
