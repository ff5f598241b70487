"""Issue 23 on the test cluster: the router's autoscaler with replicas as Slurm jobs of one GPU each
(``serving.replica_gpus=1`` on the gpu partition), short delays set with ``--set serving.autoscale.*``.

A bounded load ramp (2 -> 16 -> 2 clients in flight, gRPC and HTTP, from this host through the router)
takes the service from 1 to 2 replica jobs and back to 1 with no failed request and each decision in the
router's log. Then account ``lab``'s GPU quota is lowered with sacctmgr to the one GPU the replica holds:
under the same high load the scale-up is refused by the quota preflight (not submitted, not retried in a
loop), no request fails, and ``serve status`` names the limit. The quota is restored whatever happens.
With scale to zero and no replica, a request is held until the replica job it brings serves it; idle
again, the service gives that job back.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration._traffic import Traffic
from tests.integration.test_autoscale_local import held_requests
from tests.integration.test_handoff_slurm import Run, project
from tests.integration.test_quota_slurm import account_record, assoc_mgr_text, sacctmgr
from tests.integration.test_serving_replicas_slurm import X, _wait, mlp_handed_off, router_with_replicas

if TYPE_CHECKING:
    from tests.conftest import SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.triton, pytest.mark.tf, pytest.mark.service]
__all__ = ["project"]  # the fixture, shared with test_handoff_slurm

ACCOUNT = "lab"
HOLD_S = 300  # a replica job: queued, started, model restored and checked
QUOTA = 4  # GrpTRES=gres/gpu of account lab (tests/cluster/common.sh)
AUTOSCALE = ["serving.autoscale.min_replicas=1", "serving.autoscale.max_replicas=2",
             "serving.autoscale.target_in_flight=3", "serving.autoscale.window=2", "serving.autoscale.up_delay=2",
             "serving.autoscale.down_delay=20", "serving.replica_gpus=1"]


TO_ZERO = ["serving.autoscale.max_replicas=1", "serving.autoscale.scale_to_zero=true", "serving.autoscale.window=2",
           "serving.autoscale.up_delay=2", "serving.autoscale.down_delay=6", f"serving.autoscale.hold={HOLD_S}"]


def set_quota(gpus: int, user: str) -> None:
    """Account lab's GrpTRES=gres/gpu, once the controller enforces it."""
    sacctmgr("modify", "account", ACCOUNT, "set", f"GrpTRES=gres/gpu={gpus}")
    _wait(lambda: f"gres/gpu={gpus}(" in account_record(assoc_mgr_text(user), ACCOUNT),
          f"slurmctld to apply GrpTRES=gres/gpu={gpus}", 30)


def test_slurm_autoscaler_follows_a_load_ramp_and_stops_at_the_gpu_quota(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    hand_off = mlp_handed_off(researcher_run, project)
    # replicas far from their time limit: no replacement during the test
    with router_with_replicas(researcher_run, project, slurm_cluster, scratch_dir, 1, hand_off, AUTOSCALE,
                              replica_time="30:00") as service:
        def serving() -> int:
            return sum(1 for m in service.managed() if m["state"] == "serving")

        def decisions() -> list[str]:
            return [line for line in service.log.read_text().splitlines() if "hpc-tf router: autoscale:" in line]

        # the ramp: 2 -> 16 -> 2 in flight
        endpoint = service.endpoint
        with Traffic(endpoint, X, model="mlp", max_requests=10**6, max_seconds=60, clients=1) as low:
            time.sleep(10)
            assert len(service.managed()) == 1, decisions()
        with Traffic(endpoint, X, model="mlp", max_requests=10**6, max_seconds=600, clients=8) as high:
            _wait(lambda: serving() == 2, "a second replica job", 400)
        with Traffic(endpoint, X, model="mlp", max_requests=10**6, max_seconds=300, clients=1) as after:
            _wait(lambda: serving() == 1 and len(service.managed()) == 1, "one replica again", 180)
        for traffic in (low, high, after):
            assert traffic.failures == [], traffic.failures[:3]
        lines = decisions()
        assert any("-> 2: up:" in x for x in lines) and any("2 wanted before -> 1: down:" in x for x in lines), lines

        # the quota lowered to the one GPU the replica holds: the scale-up stops there
        set_quota(1, slurm_cluster.user)
        try:
            submitted = len(re.findall(r"replicas: start r-", service.log.read_text()))
            with Traffic(endpoint, X, model="mlp", max_requests=10**6, max_seconds=300, clients=8) as capped:
                _wait(lambda: "start refused by the quota preflight" in service.log.read_text(), "the refusal", 120)
                time.sleep(10)  # several autoscaler and controller cycles: no second try
            assert capped.failures == [], capped.failures[:3]
            text = service.log.read_text()
            assert len(re.findall(r"replicas: start r-", text)) == submitted  # nothing submitted
            assert text.count("start refused by the quota preflight") == 1
            assert len(service.managed()) == 1
            status = service.hpc_tf("serve", "status")
            assert "scale-up to 2 stopped by the GPU quota:" in status.stdout, status.stdout + status.stderr
            assert "gres/gpu" in status.stdout or "GPU" in status.stdout, status.stdout
        finally:
            set_quota(QUOTA, slurm_cluster.user)


def test_slurm_autoscaler_at_zero_holds_a_request_until_the_replica_job_it_brings_serves_it(
    researcher_run: Run, project: Path, slurm_cluster: SlurmCluster, scratch_dir: Path,
) -> None:
    hand_off = mlp_handed_off(researcher_run, project)
    with router_with_replicas(researcher_run, project, slurm_cluster, scratch_dir, 0, hand_off, TO_ZERO,
                              replica_time="30:00") as service:
        time.sleep(8)  # past the down delay: still no replica while nothing is asked
        assert service.managed() == [], service.managed()
        sent = time.monotonic()
        results = held_requests(service.endpoint, "mlp")
        assert results["http"] == "1" and results["grpc"] == "1", results  # answered, not refused
        assert min(results["http_at"], results["grpc_at"]) - sent > 2.0  # held while a replica job started
        assert "a request is held and no replica is wanted: one starts now" in service.log.read_text()
        [replica] = service.managed()
        assert replica["job_id"] and replica["state"] == "serving", replica
        # idle again: the replica job is given back (drained, then cancelled by the router)
        _wait(lambda: not service.managed(), "the idle replica job given back", 180)
        ended = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", replica["job_id"]],
                               capture_output=True, text=True, check=False).stdout
        assert ended.startswith("CANCELLED"), ended
