"""The CUDA paths: bf16 autocast with torch.compile, and evaluation on the GPU.

Deselected by default (marker `gpu`); on a machine with CUDA run `pytest -m gpu`.
"""

import numpy as np
import pytest
import torch

from scaling.config import load_config
from scaling.results import load
from scaling.train import train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    """s2 trained briefly on the GPU in bf16, compiled, then scored on the GPU."""
    root = tmp_path_factory.mktemp("cuda")
    cfg = load_config(None, ["--model.size=s2", "--train.tokens=600000",
                             "--train.device=cuda", "--train.dtype=bf16", "--train.compile=true",
                             f"--run.dir={root / 'run'}", f"--run.data_root={root / 'data'}",
                             "--data.train_tokens=620000", "--data.val_tokens=8000",
                             "--train.val_tokens=4096", "--run.evaluate=true",
                             "--run.tasks=copy_4,chain_1hop,addition_mc_3d", "--run.eval_n=64"])
    return train(cfg)


def test_bf16_compiled_training_learns(cuda_run):
    val = load(cuda_run).query("task == 'val'").sort_values("step")
    assert val.value.iloc[-1] < val.value.iloc[0] - 1.0, val[["step", "value"]]


def test_gpu_scores_equal_cpu_scores(cuda_run, tmp_path):
    import shutil

    from scaling.evaluate import evaluate_run

    cpu_dir = tmp_path / "cpu"
    shutil.copytree(cuda_run, cpu_dir)
    (cpu_dir / "results.csv").unlink()
    evaluate_run(cpu_dir, tasks="copy_4,chain_1hop,addition_mc_3d", n=64, progress=False,
                 device="cpu")
    key = ["step", "task", "shots", "metric"]
    gpu = load(cuda_run).query("task != 'val'").sort_values(key).reset_index(drop=True)
    cpu = load(cpu_dir).sort_values(key).reset_index(drop=True)
    assert len(gpu) == len(cpu) > 0
    assert (gpu[key].values == cpu[key].values).all()
    # fp32 on both devices, different kernels: equal up to summation order.
    assert np.allclose(gpu.value, cpu.value, atol=2e-3), (gpu.value - cpu.value).abs().max()
