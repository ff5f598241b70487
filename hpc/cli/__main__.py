"""``python -m hpc.cli``: the same as the ``hpc-tf`` command."""

from hpc.cli.app import main

main()
