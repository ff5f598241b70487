"""hpc-tf's benchmarks: each figure a ratio against the bare tool, measured side by side (BENCHMARKS.md)."""
