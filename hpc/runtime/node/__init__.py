"""The part of hpc-tf that runs on compute nodes, inside the user's environment.

Standard library only, relative imports only: ``hpc.runtime.install_into`` copies this
package into every run directory as ``hpc_tf_runtime`` (beside ``bootstrap.py``), so it
works where hpc-tf is not installed. It never imports TensorFlow; the hooks that touch
TensorFlow or Keras run inside the user's process and only once the user imports them.
"""
