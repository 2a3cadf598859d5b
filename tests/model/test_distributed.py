"""`backdrop train --np 2`: real Horovod and DDP processes (Gloo, CPU) on a tiny prepared set.

Scratch init, so BatchNorm runs in train mode and its statistics are synchronised across ranks
(SyncBatchNorm2d). One DDP run, one Horovod run SIGKILLed after its first checkpoint and resumed
with `--resume`; the two backends must agree (same seed, same sharding, averaged gradients).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from tests.model.test_training import (
    backdrop_train,
    final_state,
    max_abs_diff,
    tiny_project,
    train_until_first_checkpoint_then_sigkill,
    write_params,
)

DIST_TRAIN = {"epochs": 2, "num_threads": 2}  # one thread per process


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return tiny_project(tmp_path_factory)


def _runs_in_experiment(project: Path) -> int:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    exp = client.get_experiment_by_name("tests")
    return 0 if exp is None else len(client.search_runs([exp.experiment_id], max_results=1000))


@pytest.fixture(scope="module")
def ddp_run(project) -> dict:
    runs_before = _runs_in_experiment(project)
    params = write_params(project, "ddp", **DIST_TRAIN)
    proc = backdrop_train(project, params, "--np", "2", "--backend", "ddp")
    out = project / "models/ddp"
    return {"proc": proc, "out": out, "runs_added": _runs_in_experiment(project) - runs_before,
            "result": json.loads((out / "result.json").read_text()),
            "history": json.loads((out / "history.json").read_text())}


@pytest.mark.slow  # `backdrop train --np 2` subprocesses (DDP)
def test_ddp_two_processes_keep_identical_replicas_and_log_once(ddp_run, project):
    result = ddp_run["result"]
    assert result["world_size"] == 2 and result["backend"] == "ddp"
    digests = result["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # parameters AND BatchNorm buffers
    assert [h["epoch"] for h in ddp_run["history"]] == [1, 2]
    assert ddp_run["runs_added"] == 1  # rank 0 alone talks to MLflow

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    assert [m.step for m in client.get_metric_history(result["run_id"], "train_loss")] == [1, 2]
    run = client.get_run(result["run_id"])
    assert run.data.params["world_size"] == "2" and run.data.params["train.processes"] == "2"
    assert run.data.params["autocast"] == "fp32"  # what ran, as asked (TINY_TRAIN: fp32 on every host)
    from backdrop.host import cpu_flags  # channels_last auto, fp32 on the CPU: NHWC only with AVX-512
    assert run.data.params["memory_format"] == ("channels_last" if "avx512f" in cpu_flags() else "contiguous")
    # SyncBatchNorm really ran: the running statistics moved away from their (0, 1) init
    means = [v for k, v in final_state(ddp_run["out"]).items() if k.endswith("running_mean")]
    assert means and max(float(m.abs().max()) for m in means) > 1e-3


def _workers_of(out: Path) -> list[psutil.Process]:
    needle = str(out / "launch-params.yaml")
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if any(needle in part for part in cmd):
            found.append(proc)
    return found


@pytest.mark.slow  # `backdrop train --np 2` subprocesses (horovodrun), SIGKILLed and resumed
def test_horovod_killed_run_resumes_and_matches_ddp(ddp_run, project):
    params = write_params(project, "hvd", backend="horovod", **DIST_TRAIN)
    state = train_until_first_checkpoint_then_sigkill(project, params, "--np", "2")
    out = state["out"]
    assert state["epoch"] == 1 and not state["done"], state["history"]
    deadline = time.monotonic() + 20
    while (alive := _workers_of(out)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"ranks outlived the killed launcher: {[(p.pid, p.info['cmdline']) for p in alive]}"

    proc = backdrop_train(project, params, "--np", "2", "--resume")
    log = proc.stdout + proc.stderr
    assert "continuing with epoch 2" in log, log[-4000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["backend"] == "horovod"
    assert result["resumed_from_epoch"] == 1 and result["epochs_run"] == 2
    digests = result["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]

    # Same seed, same shards, averaged gradients: Horovod's loss curve is DDP's (within noise)
    hvd_losses = [h["train_loss"] for h in json.loads((out / "history.json").read_text())]
    ddp_losses = [h["train_loss"] for h in ddp_run["history"]]
    assert hvd_losses == pytest.approx(ddp_losses, rel=0.02)
    diff = max_abs_diff(final_state(out), final_state(ddp_run["out"]))
    assert diff < 1e-4, f"Horovod (killed + resumed) and DDP weights differ by {diff}"


def test_sync_batchnorm_equals_batchnorm_over_the_union_of_rank_batches():
    """Two ranks holding batches a and b must normalise with the statistics of a ∪ b."""
    import torch

    from backdrop.distributed import Dist, convert_sync_batchnorm

    torch.manual_seed(0)
    a, b = torch.randn(3, 4, 5, 5) * 3 + 1, torch.randn(2, 4, 5, 5) * 0.5 - 2

    class TwoRanks(Dist):
        """Rank 0 of a 2-rank job whose peer holds `b`: the all-reduce adds b's statistics."""

        size = 2

        def stat_allreduce(self, tensor, name):
            c = (tensor.numel() - 1) // 2
            shift = bn.running_mean.view(1, -1, 1, 1)
            peer = torch.cat([(b - shift).sum((0, 2, 3)), ((b - shift) ** 2).sum((0, 2, 3)),
                              torch.tensor([b.numel() / c])])
            return tensor + peer

    plain = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        plain.weight.uniform_(0.5, 2)
        plain.bias.uniform_(-1, 1)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(4))
    model[0].load_state_dict(plain.state_dict())
    convert_sync_batchnorm(model, TwoRanks())
    bn = model[0]
    assert type(bn).__name__ == "SyncBatchNorm2d" and bn.state_dict().keys() == plain.state_dict().keys()

    expected = plain(torch.cat([a, b]))[:3]  # batch statistics of the union
    got = model(a)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_mean, plain.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, plain.running_var, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert bn.weight.grad is not None and torch.isfinite(bn.weight.grad).all()
    bn.eval()
    plain.eval()
    torch.testing.assert_close(model(a), plain(a))


def test_bf16_autocast_only_where_asked_and_supported(caplog):
    import torch

    from backdrop.config import TrainParams
    from backdrop.training.loop import autocast_dtype, cpu_has_native_bf16

    cpu = torch.device("cpu")
    native = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert autocast_dtype(TrainParams(precision="fp32"), cpu) is None
    # auto: bf16 only where the CPU computes it in hardware (AMX / AVX512-BF16), fp32 where oneDNN emulates it
    auto = torch.bfloat16 if native and cpu_has_native_bf16() else None
    assert autocast_dtype(TrainParams(precision="auto"), cpu) is auto
    assert autocast_dtype(TrainParams(), cpu) is auto
    with caplog.at_level("WARNING"):
        asked = autocast_dtype(TrainParams(precision="bf16"), cpu)
    assert asked is (torch.bfloat16 if native else None)
    assert native or "not supported natively" in caplog.text


@pytest.mark.parametrize("flags", [{"avx2", "fma"}, {"avx2", "avx512f"}])
def test_channels_last_auto_is_nchw_only_for_fp32_on_a_cpu_without_avx512(monkeypatch, flags):
    import torch

    import backdrop.host
    from backdrop.config import TrainParams
    from backdrop.training.loop import uses_channels_last

    monkeypatch.setattr(backdrop.host, "cpu_flags", lambda: flags)  # the host's /proc/cpuinfo, as read
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    auto = TrainParams()
    assert auto.channels_last == "auto"
    assert uses_channels_last(auto, cpu, None) is ("avx512f" in flags)  # fp32 on the CPU: by the flags
    assert uses_channels_last(auto, cpu, torch.bfloat16) is True  # native bf16 runs NHWC kernels
    assert uses_channels_last(auto, cuda, None) is True
    for asked in (True, False):  # an explicit setting wins everywhere
        tp = TrainParams(channels_last=asked)
        assert {uses_channels_last(tp, d, a) for d in (cpu, cuda) for a in (None, torch.bfloat16)} == {asked}
