"""Wall time of a whole study (``biomtl study``), e.g. the full BLUE profile: 6 tasks, 3 seeds.

Runs ``biomtl study CONFIG --profile PROFILE`` in a child process into a fresh output directory and times it
from start to finish (data loading, every ST / MTL / MTL-FT run, evaluation, the report). ``key=value``
overrides and ``--seeds`` go to ``biomtl study`` unchanged.

    python benchmarks/study_time.py --profile full --json-out /tmp/study.json          # GPU
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, machine_line, markdown_table, write_json  # noqa: E402

STUDY = Path(__file__).resolve().parents[1] / "configs" / "studies" / "blue-public.yaml"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(STUDY))
    p.add_argument("--profile", default="full")
    p.add_argument("--output-dir", default=None, help="kept when given; a temporary directory otherwise")
    p.add_argument("--data", default=None, help="prepared task files (else $BIOMTL_DATA)")
    p.add_argument("--json-out", default=None)
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the profile's)")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run, passed to `biomtl study`")
    args = p.parse_args(argv)

    tmp = None
    out = Path(args.output_dir) if args.output_dir else Path(tmp := tempfile.mkdtemp(prefix="study-time-")) / "study"
    cmd = [sys.executable, "-m", "biomtl", "study", args.config, *args.overrides,
           "--profile", args.profile, "--output-dir", str(out), "--quiet",
           *(["--seeds", str(args.seeds)] if args.seeds else []), *(["--data", args.data] if args.data else [])]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        start = time.perf_counter()
        subprocess.run(cmd, check=True)
        seconds = time.perf_counter() - start
        runs = len(list(out.rglob("result.json")))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    info = machine()
    print(markdown_table(["config", "profile", "seeds", "overrides", "finished runs", "wall time"],
                         [[Path(args.config).name, args.profile, args.seeds or "profile's", " ".join(args.overrides) or "–", runs,
                           f"**{seconds / 60:.1f} min** ({seconds:.0f} s)"]]))
    print(f"\nmachine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args),
                               "result": {"wall_s": seconds, "finished_runs": runs, "study_command": cmd}})


if __name__ == "__main__":
    main()
