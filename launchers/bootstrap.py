"""Start one task of an hpc-tf job: set up GPUs, TF_CONFIG and hooks, then exec the command.

Copied into <run_dir>/runtime/ beside the hpc_tf_runtime package (hpc.runtime.install_into)
and run with whatever python3 the job's environment provides; needs only the standard library:

    srun ... python3 <run_dir>/runtime/bootstrap.py --resolved <run_dir>/resolved.json -- CMD ARGS...
"""

import sys
from pathlib import Path

# The runtime package lives beside this file, whatever the current directory or python flags.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hpc_tf_runtime.bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
