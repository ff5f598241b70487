"""Hand-off of trained SavedModels to a Triton Inference Server.

One concern per module, none imports TensorFlow (the CLI process must stay light):

- :mod:`~hpc.serving.names`      model names Triton and the filesystem both accept
- :mod:`~hpc.serving.signature`  a SavedModel's serving signature, read from saved_model.pb
- :mod:`~hpc.serving.config`     config.pbtxt through Triton's ModelConfig protobuf schema
- :mod:`~hpc.serving.repository` <repository>/<model>/<version>/ publish (temp name + rename), rollback
- :mod:`~hpc.serving.formats`    what a version directory holds for onnx / savedmodel / python
- :mod:`~hpc.serving.server`     the local serving node (the tritonserver bundled in nvidia-pytriton)
- :mod:`~hpc.serving.control`    gRPC model control, readiness, versioned inference
- :mod:`~hpc.serving.handoff`    export → publish → load → verify → rollback, with a record

Everything that needs the serving extra (protobuf, tritonclient) is imported inside functions.
"""
