"""hpc-tf: unmodified TensorFlow training scripts on Slurm clusters.

Importing this package has no side effects: no scheduler call, no TensorFlow import.
"""

__version__ = "0.1.0"
