"""Start one task of an hpc-tf job: set up GPUs, TF_CONFIG and hooks, then exec the command.

Copied into <run_dir>/runtime/ beside the hpc_tf_runtime package (hpc.runtime.install_into)
and run with whatever python3 the job's environment provides; needs only the standard library,
hence ``-S`` (no site-packages or .pth files to process; the command it execs starts normally):

    srun ... python3 -S <run_dir>/runtime/bootstrap.py --resolved <run_dir>/resolved.json -- CMD ARGS...
"""

import os
import sys

# The runtime package lives beside this file, whatever the current directory or python flags.
sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))

from hpc_tf_runtime.bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
