"""A hand-off: SavedModel → signature → samples → new version published → loaded → verified, or rolled back.

Refused before any stage (one line, no record): a format the registered serving node's Triton has no
backend for (:func:`hpc.serving.server.check_servable`). Stages (each reported through ``on_stage`` and
timed in the record):

1. ``source``     a run directory (its output_dir/export) or a SavedModel directory
2. ``signature``  read from saved_model.pb without TensorFlow
3. ``samples``    stored samples (assets.extra/hpc-tf-samples.npz) or computed in a TF child process
   ``choose``     only for format ``auto``: ONNX Runtime (onnx where the service has the backend, else
                  python-onnx) or python, whichever passes parity and runs a request faster
                  (:mod:`hpc.serving.choose`); recorded with its reasons as ``choice``
4. ``publish``    version N+1 built under a temp name, renamed into <repository>/<model>/<N+1>; the generated
                  config's dynamic batching decided where it pays (:mod:`hpc.serving.batching`), recorded as
                  ``batching``
5. ``load``       gRPC load against one deadline, then version N+1 ready
6. ``verify``     samples sent to version N+1 explicitly; exact for python/savedmodel, ONNX_TOLERANCE for onnx and
                  python-onnx (both are also checked with onnxruntime in this process before publishing)
   With a router (``<repository>/.hpc-tf/router.json``) stages 5 and 6 run on every healthy replica it
   lists (:func:`service_targets`), and a failure on any rolls back on all.
7. ``record``     version N+1 recorded as what serves (:mod:`hpc.serving.state`): a node that starts
                  later loads it
8. ``rollback``   only on failure: version N+1 removed, previous config restored, model reloaded —
                  the previous version keeps serving throughout (Triton loads N+1 fully before it
                  unloads N, and a failed load leaves N serving); what serves then is recorded

Every hand-off, successful or not, leaves a JSON record under the repository's .hpc-tf/handoffs/<model>/.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpc.atomic import write_text_atomic
from hpc.errors import HpcTfError, ServingError
from hpc.paths import RunPaths
from hpc.records import read_record
from hpc.serving import secret as node_secret
from hpc.serving.batching import decide as decide_batching
from hpc.serving.choose import Choice, choose_format, onnx_serving_format
from hpc.serving.config import AUTO, FORMATS, ONNX_FORMATS, PYTHON_ONNX, FormatChoice, ServingOptions, config_pbtxt
from hpc.serving.control import LOAD_TIMEOUT_S, ModelControl, not_answering
from hpc.serving.formats import ONNX_TOLERANCE, build_version, onnx_parity
from hpc.serving.names import check_model_name
from hpc.serving.repository import Repository
from hpc.serving.samples import SAMPLES_IN_SAVEDMODEL, Samples, compare, compute_samples, load_samples
from hpc.serving.server import check_servable, read_endpoint, registered_node
from hpc.serving.signature import DEFAULT_SIGNATURE, SAVED_MODEL_PB, read_signature
from hpc.serving.state import update_state
from hpc.text import expand_run_time

DEFAULT_EXPORT_SUBDIR = "export"  # spec.handoff.savedmodel default, relative to output_dir

StageCallback = Callable[[str, str], None]


@dataclass
class HandoffRecord:
    model: str
    format: str
    source: str
    savedmodel: str
    repository: str
    started_at: str
    version: int | None = None
    previous_versions: list[int] = field(default_factory=list)
    server: str | None = None
    ok: bool = False
    failed_stage: str | None = None
    error: str | None = None
    parity: dict[str, Any] = field(default_factory=dict)
    choice: dict[str, Any] | None = None  # --format auto: the format chosen and why (hpc.serving.choose)
    batching: dict[str, Any] | None = None  # the generated config's dynamic batching and why (hpc.serving.batching)
    samples: str | None = None  # inputs and the trained model's outputs (.npz): what parity compared
    rolled_back: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)
    record_path: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


class HandoffFailed(ServingError):
    """The hand-off did not put the new version into service; the record says why and what was undone."""

    def __init__(self, record: HandoffRecord, cause: HpcTfError) -> None:
        undone = "; the new version was removed and the previous version keeps serving" if record.rolled_back else ""
        hints = [h for h in (cause.hint, f"record: {record.record_path}" if record.record_path else None) if h]
        super().__init__(
            f"hand-off of '{record.model}' failed at stage '{record.failed_stage}': {record.error}{undone}",
            hint="\n".join(hints) or None)
        self.record = record
        self.exit_code = cause.exit_code  # a bad input (2) stays a usage error, a failed load is 5


def find_savedmodel(source: Path, subdir: str = DEFAULT_EXPORT_SUBDIR) -> Path:
    """``source`` itself when it holds saved_model.pb, else the SavedModel a run directory exported."""
    source = source.expanduser().resolve()
    if (source / SAVED_MODEL_PB).is_file():
        return source
    run = RunPaths.at(source)
    if run.resolved.is_file():
        output_dir = read_record(run.resolved, "the resolved job", parse=lambda job: job.get("output_dir"),
                                 fix="pass the SavedModel directory instead of the run directory")
        try:  # run-time text (hpc.resolve.ResolvedJob): its references are this job's variables too
            output = expand_run_time(output_dir, os.environ) if output_dir else str(source / "output")
        except ValueError as err:
            raise ServingError(f"run {source}: output_dir {err}",
                               hint="set the variable as for the training job") from None
        candidate = Path(output) / subdir
        if (candidate / SAVED_MODEL_PB).is_file():
            return candidate
        raise ServingError(f"run {source} has no SavedModel at {candidate}",
                           hint="the training script must export there (model.export(...)), or pass the SavedModel")
    raise ServingError(f"{source} is neither a SavedModel (no {SAVED_MODEL_PB}) nor a run directory (no resolved.json)")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def handoff(
    source: Path,
    model: str,
    repository: Repository,
    fmt: FormatChoice = "python",
    *,
    grpc_url: str | None = None,
    signature_key: str = DEFAULT_SIGNATURE,
    savedmodel_subdir: str = DEFAULT_EXPORT_SUBDIR,
    options: ServingOptions | None = None,
    load_timeout: float = LOAD_TIMEOUT_S,
    on_stage: StageCallback | None = None,
    canary: dict[str, object] | None = None,
) -> HandoffRecord:
    """Run every stage; return the record of a version now serving, or raise :class:`HandoffFailed`.

    ``canary`` (the router's canary settings, :func:`hpc.serving.canary.canary_request`): the new version is
    loaded beside the one serving, its requests held at 0 % by a split, and after the parity check the
    repository's router rolls it out in steps (:mod:`hpc.serving.canary`) instead of it serving at once."""
    check_model_name(model)
    if fmt != AUTO and fmt not in FORMATS:
        raise ServingError(f"unknown serving format '{fmt}' (use one of: {', '.join(FORMATS)}, {AUTO})")
    node = registered_node(repository) if grpc_url is None else None
    if node is not None:
        check_servable(fmt, node)  # before any work: the load would fail and roll back
    say = on_stage or (lambda stage, detail: None)
    record = HandoffRecord(model=model, format=fmt, source=str(source), savedmodel="",
                           repository=str(repository.root), started_at=_now())
    stage = "source"
    t_stage = time.monotonic()

    def done(name: str, detail: str) -> None:
        nonlocal t_stage
        record.timings_s[name] = round(time.monotonic() - t_stage, 3)
        say(name, detail)
        t_stage = time.monotonic()

    published = False
    failure: HpcTfError | None = None
    previous_config: str | None = None
    held: int | None = None  # with a canary: the version serving, which holds every request meanwhile
    controls: list[ModelControl] = []
    choice: Choice | None = None
    with repository.lock(model), tempfile.TemporaryDirectory(prefix="hpc-tf-handoff-") as scratch:
        try:
            savedmodel = find_savedmodel(source, savedmodel_subdir)
            record.savedmodel = str(savedmodel)
            done("source", str(savedmodel))

            stage = "signature"
            signature = read_signature(savedmodel, signature_key)
            io = ", ".join(f"{t.name}{list(t.shape)}" for t in signature.inputs)
            done("signature", f"{signature.key}: {io} -> {', '.join(t.name for t in signature.outputs)}")

            stage = "samples"
            samples, record.samples = _samples(savedmodel, signature.key, repository, model)
            done("samples", f"{len(samples.inputs)} input(s), {len(samples.outputs)} output(s)")

            if fmt == AUTO:
                stage = "choose"
                choice = choose_format(savedmodel, signature, samples, Path(record.samples), Path(scratch), options,
                                       onnx_format=onnx_serving_format(node))
                served, record.format, record.choice = choice.format, choice.format, choice.record()
                done("choose", f"{choice.format} ({choice.why})")
            else:
                served = fmt

            stage = "connect"
            if canary is not None and (grpc_url or not repository.router_file.is_file()):
                raise ServingError("a canary needs the repository's router: it moves the traffic",
                                   hint="start one (hpc-tf serve router), or hand off without --canary")
            urls = [grpc_url] if grpc_url else service_targets(repository)
            record.server = ", ".join(urls)
            secret = node_secret.load(repository.root)
            for url in urls:
                controls.append(ModelControl(url, secret))
                if not controls[-1].server_ready():
                    raise not_answering(url)
            done("connect", record.server)

            stage = "publish"
            record.previous_versions = repository.versions(model)
            version = repository.next_version(model)
            record.version = version
            previous_config = repository.read_config(model)
            repository.publish(model, version, lambda stage_dir: build_version(stage_dir, savedmodel, signature, served,
                                                                              onnx=choice.onnx if choice else None))
            published = True
            version_dir = repository.version_dir(model, version)
            if served in ONNX_FORMATS:
                record.parity["onnxruntime"] = _onnx_parity(version_dir, samples)
            opts, batching = options or ServingOptions(), None
            if opts.dynamic_batching is None:  # the generated config: batch where it pays
                batching = decide_batching(served, signature.batched and opts.max_batch_size > 0,
                                           version_dir / PYTHON_ONNX, samples, opts.tf_threads)
                record.batching = batching.record()
                opts = replace(opts, dynamic_batching=batching.dynamic)
            text = config_pbtxt(model, signature, served, opts)
            if previous_config != text:
                repository.write_config(model, text)
            done("publish", str(version_dir) + (f" (dynamic batching {'on' if batching.dynamic else 'off'}: "
                                                f"{batching.why})" if batching and batching.worth_saying else ""))

            stage = "load"
            if canary is not None:
                held = _hold(repository, model, version)
            deadline = time.monotonic() + load_timeout
            for control in controls:
                control.load(model, deadline)
                control.wait_ready(model, version, deadline)
            done("load", f"version {version} ready" + (f" on {len(controls)} replicas" if len(controls) > 1 else ""))

            stage = "verify"
            tolerance = ONNX_TOLERANCE if served in ONNX_FORMATS else 0.0
            for control in controls:  # every replica answers for itself: one that differs fails the hand-off
                outputs, answered = control.infer(model, samples.inputs, version=version)
                ok, worst, detail = compare(samples.outputs, outputs, tolerance)
                record.parity["triton" if control is controls[0] else f"triton {control.url}"] = {
                    "ok": ok, "max_abs_diff": worst, "tolerance": tolerance, "answered_version": answered}
                where = f" on {control.url}" if len(controls) > 1 else ""
                if answered != str(version):
                    raise ServingError(f"version {answered} answered a request addressed to version {version}{where}")
                if not ok:
                    raise ServingError(f"outputs of version {version}{where} differ from the trained model's: {detail}")
            done("verify", detail)

            stage = "record"
            if canary is not None:
                from hpc.serving.router.client import start_canary

                started = start_canary(repository, model, {**canary, "version": version})
                done("record", f"the router rolls version {version} out: steps "
                     f"{','.join(map(str, started['steps']))} % (hpc-tf serve status follows it)")
            else:
                _record_serving(repository, model, [version], "handoff")
                done("record", f"version {version} recorded as serving")
            record.ok = True
        except HpcTfError as err:
            failure = err
            record.failed_stage = stage
            record.error = err.message
            if published and record.version is not None:
                _rollback(repository, model, record, previous_config, controls, load_timeout, say)
            if held is not None:  # the new version is gone: the split that held traffic off it too
                with contextlib.suppress(HpcTfError):
                    from hpc.serving.router.client import remove_split

                    remove_split(repository, model)
        finally:
            _write_record(repository, record)
            for control in controls:
                control.close()
    if failure is not None:
        raise HandoffFailed(record, failure)
    return record


def _samples(savedmodel: Path, key: str, repository: Repository, model: str) -> tuple[Samples, str]:
    stored = savedmodel / SAMPLES_IN_SAVEDMODEL
    if stored.is_file():
        return load_samples(stored), str(stored)
    out = repository.records_dir(model) / f"samples-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}.npz"
    return compute_samples(savedmodel, key, out), str(out)


def _onnx_parity(version_dir: Path, samples: Samples) -> dict[str, Any]:
    """Run the converted model with onnxruntime in this process; raise when it misses the tolerance."""
    parity = onnx_parity(version_dir / PYTHON_ONNX, samples)
    if not parity["ok"]:
        raise ServingError(f"the ONNX conversion does not match the SavedModel (onnxruntime): {parity['detail']}")
    return parity


def _rollback(repository: Repository, model: str, record: HandoffRecord, previous_config: str | None,
              controls: list[ModelControl], load_timeout: float, say: StageCallback) -> None:
    """Undo a published version on every replica it may have reached."""
    assert record.version is not None
    t0 = time.monotonic()
    repository.remove_version(model, record.version)
    if previous_config is not None:
        repository.write_config(model, previous_config)
    detail = f"version {record.version} removed"
    if controls and record.previous_versions:
        deadline = time.monotonic() + load_timeout
        for control in controls:
            try:
                control.load(model, deadline)
                detail += f"; version {record.previous_versions[-1]} reloaded" + (
                    f" on {control.url}" if len(controls) > 1 else "")
            except HpcTfError as err:
                detail += f"; reload failed: {err.message}"
                record.error = f"{record.error}; rollback reload failed: {err.message}"
        try:  # what Triton serves now of what the repository holds, whichever way the reload went
            kept = set(map(str, repository.versions(model)))
            serving = sorted(int(m.version) for m in controls[0].index()
                             if m.name == model and m.state == "READY" and m.version in kept)
            _record_serving(repository, model, serving, "rollback")
        except HpcTfError as err:
            record.error = f"{record.error}; {err.message}"
    elif controls:
        with contextlib.suppress(HpcTfError):
            for control in controls:
                control.unload(model)
            _record_serving(repository, model, [], "rollback")
    record.rolled_back = True
    record.timings_s["rollback"] = round(time.monotonic() - t0, 3)
    say("rollback", detail)


def _hold(repository: Repository, model: str, version: int) -> int:
    """Before a canary's version loads beside the serving one: a split keeps every request on the serving
    version (unversioned requests would reach the newest), then both are pinned in the config."""
    from hpc.serving.restore import pin
    from hpc.serving.router.client import set_split
    from hpc.serving.state import ServingState

    served = ServingState.read(repository).models.get(model)
    if served is None or len(served.versions) != 1:
        raise ServingError(f"a canary starts from one serving version of '{model}' (recorded: "
                           f"{', '.join(map(str, served.versions)) if served else 'none'})",
                           hint="hand off without --canary first")
    old = served.versions[0]
    set_split(repository, model, {"variants": [{"model": model, "version": old, "weight": 100}]})
    pin(repository, model, (old, version))
    return old


def service_targets(repository: Repository) -> list[str]:
    """Where a hand-off loads and verifies: with a router registered (router.json), every healthy replica it
    lists, each on its own (the router's own gRPC front refuses model control); else the serving node."""
    if not repository.router_file.is_file():
        return [read_endpoint(repository).grpc_url]
    from hpc.serving.router import client

    replicas = [r for r in client.state(repository)["replicas"] if r["healthy"] and not r["draining"]]
    if not replicas:
        raise ServingError("the repository's router lists no healthy replica to hand the model off to",
                           hint="add one (hpc-tf serve router --replica ...), then hand off again")
    return [f"{r['host']}:{r['grpc_port']}" for r in replicas]


def _record_serving(repository: Repository, model: str, versions: list[int], by: str) -> None:
    try:
        update_state(repository, lambda state: state.with_model(model, versions, by))
    except OSError as err:
        raise ServingError(f"cannot record what serves in {repository.serving_file}: {err.strerror or err}") from None


def _write_record(repository: Repository, record: HandoffRecord) -> None:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    path = repository.records_dir(record.model) / f"{stamp}-v{record.version or 0}.json"
    record.record_path = str(path)
    write_text_atomic(path, record.to_json())
