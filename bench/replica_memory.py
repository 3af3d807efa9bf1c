"""Resident memory of each replica of the CPU profile, without Ray: ``python -m bench.replica_memory``.

Each deployment gets a fresh interpreter that reads the args of ``serve_config.cpu.yaml``, imports the
deployment's module and builds what its replica builds where that needs no Ray (the board, the scene
writer, the narrator, the encoder, the painter under `fallback: always`; the ingress and the job runner
validate their AppConfig, and with the animator they are only imported: their constructors want Ray
handles and a running cluster). It prints VmRSS from /proc/self/status
and whether torch was imported. A Ray worker adds its own share (the core worker, about 100 MB) to
every replica alike, so these figures are below a replica's, and their differences are the point.

``--root PATH`` measures another checkout of the code (e.g. an older commit unpacked with `git archive`)
with this script, for a before/after comparison on the same machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_PROFILE = "serve_config.cpu.yaml"

# What each replica's process does before it serves: import its deployment and build it with the arguments
# Ray hands it (`args` is the profile's application args). A replica imports the modules of the objects it
# is given, so the ingress and the runner read the whole AppConfig and the others only their own section.
REPLICAS: dict[str, str] = {
    "VideoAPI": "import serve_app.api.ingress\nfrom serve_app.config import AppConfig\n"
    "AppConfig.model_validate(args)",
    "JobRunner": "import serve_app.jobs.runner\nfrom serve_app.config import AppConfig\nAppConfig.model_validate(args)",
    "JobBoard": "from deployments.board import JobBoard\nJobBoard.func_or_class()",
    "Encoder": "from deployments.encoder import Encoder\nfrom engines.media import VideoProcessingConfig\n"
    "Encoder.func_or_class(VideoProcessingConfig.model_validate(args['video_processing']), storage())",
    "SceneWriter": "from deployments.writer import SceneWriter\nfrom engines.writer import WriterConfig\n"
    "SceneWriter.func_or_class(WriterConfig.model_validate(args['writer']), args['fallback'])",
    "Narrator": "from deployments.narrator import Narrator\nfrom engines.narrator import NarrationConfig\n"
    "Narrator.func_or_class(NarrationConfig.model_validate(args['narration']), storage(), args['fallback'])",
    "KeyframePainter": "from deployments.painter import KeyframePainter\nfrom engines.painter import PainterConfig\n"
    "KeyframePainter.func_or_class(PainterConfig.model_validate(args.get('painter', {})), args['fallback'])",
    # Its constructor asks Ray for the replica's GPU share; under `fallback: always` it builds no engine.
    "VideoAnimator": "import deployments.animator",
}

_PROBE = """
import sys, tempfile
import yaml
args = yaml.safe_load(open({profile!r}))["applications"][0]["args"]

def storage():
    from core.storage import open_storage
    return open_storage(tempfile.mkdtemp())

{build}
rss_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print(rss_kb, "torch" in sys.modules)
"""


def measure(name: str, root: Path = ROOT) -> tuple[float, bool]:
    """(resident MB, whether torch was imported) of a fresh interpreter that does what replica ``name`` does,
    with the code under ``root``."""
    code = _PROBE.format(profile=str(ROOT / CPU_PROFILE), build=REPLICAS[name])
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rss_kb, torch = done.stdout.split()[-2:]
    return int(rss_kb) / 1024, torch == "True"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    print(f"{'replica':<16} {'RSS MB':>8}  torch")
    for name in REPLICAS:
        rss_mb, torch = measure(name, args.root)
        print(f"{name:<16} {rss_mb:>8.0f}  {'yes' if torch else 'no'}")


if __name__ == "__main__":
    main()
