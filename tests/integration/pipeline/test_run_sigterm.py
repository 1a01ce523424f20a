"""``streamproc run`` stops cleanly on SIGTERM (how Kubernetes ends a pod): summary printed, exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamproc.sources.synth import write_pattern_video

pytestmark = pytest.mark.integration
FRAMES = 3000  # far more than the run gets through before the signal


def test_sigterm_ends_the_run_like_ctrl_c(
    tmp_path: Path, mtcnn_weights_dir: Path, facenet_keras_h5: Path
) -> None:
    video = write_pattern_video(tmp_path / "long.mp4", width=320, height=240, n_frames=FRAMES, fps=25)
    env = {**os.environ, "STREAMPROC_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "streamproc.cli", "run", "--runner", "local", "--source", str(video)]
    cmd += ["--set", "embedder.threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        time.sleep(12)  # models load, the gallery server starts, frames flow
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    summary = next(line for line in out.splitlines() if line.startswith("local runner:"))
    frames = int(summary.split(" from ")[1].split()[0])
    assert 0 < frames < FRAMES, summary
