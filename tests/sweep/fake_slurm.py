"""Stand-ins for Slurm's commands (sbatch, sacct, srun) and array tasks started the way srun starts them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FAKE_SBATCH = """#!/bin/sh
# Keep the script, answer like sbatch with the next job id.
id=$(cat "$FAKE_SLURM/next_id")
cp "$1" "$FAKE_SLURM/sbatch-$id.sh"
echo $((id + 1)) > "$FAKE_SLURM/next_id"
echo "Submitted batch job $id"
"""
FAKE_SACCT = """#!/bin/sh
cat "$FAKE_SLURM/sacct.txt"
"""


def install(folder: Path, monkeypatch) -> Path:
    """Put stand-in sbatch/sacct/srun first on PATH; sbatch answers job ids from 4242 up, sacct prints sacct.txt."""
    folder.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\nexit 1\n")):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    (folder / "next_id").write_text("4242\n")
    (folder / "sacct.txt").write_text("JobID|State|NodeList\n")
    monkeypatch.setenv("FAKE_SLURM", str(folder))
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


def set_sacct(folder: Path, states: dict[str, str]) -> None:
    lines = ["JobID|State|NodeList"] + [f"{job}|{state}|node1" for job, state in states.items()]
    (folder / "sacct.txt").write_text("\n".join(lines) + "\n")


def slurm_env(job_id: str, index: int | None) -> dict[str, str]:
    """The variables Slurm gives a task of job ``job_id`` (array task ``index``, or a plain job for None)."""
    env = dict(os.environ, SUBMITIT_EXECUTOR="slurm", SLURM_JOB_ID=job_id, SLURM_NTASKS="1", SLURM_JOB_NUM_NODES="1",
               SLURM_NODEID="0", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_JOB_NODELIST="node1")  # fmt: skip
    if index is not None:
        env.update(SLURM_JOB_ID=str(9000 + index), SLURM_ARRAY_JOB_ID=job_id, SLURM_ARRAY_TASK_ID=str(index))
    return env


def run_array_task(sweep_dir: Path, job_id: str, index: int | None) -> int:
    """Start one task as Slurm's srun would: submitit's entry point with the task's SLURM_* variables."""
    command = [sys.executable, "-u", "-m", "submitit.core._submit", str(sweep_dir / "submitit" / "slurm")]
    done = subprocess.run(command, env=slurm_env(job_id, index), capture_output=True, timeout=120, check=False)
    return done.returncode
