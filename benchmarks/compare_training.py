"""Training benchmark: the stock HF recipe and biomtl, one after the other on this machine, with one set of flags.

Each side runs in its own child process (``hf_recipe.py``, then ``biomtl_train.py``), so that the CPU's
peak-RSS figure belongs to that side alone; both get the same flags, plus ``--hf-flags`` / ``--biomtl-flags``
for one side only (e.g. the stock recipe at fp32 batch 32 against biomtl at bf16 and a larger batch: same
model, data and epochs). Prints one Markdown table with the
ratios, the machine and the exact command, and writes every number to ``--json-out``.

    python benchmarks/compare_training.py --epochs 1 --max-train-examples 1000 --json-out /tmp/training.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_training_args, command_line, machine, machine_line, markdown_table, write_json  # noqa: E402
from hf_recipe import COLUMNS  # noqa: E402


def child_args(args: argparse.Namespace) -> list[str]:
    """The shared training flags, as given, for both child scripts."""
    out = []
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if key in ("json_out", "compile", "save_model", "hf_flags", "biomtl_flags") or value is None or value is False:
            continue
        out += [flag] if value is True else [flag, str(value)]
    return out


def run_side(script: str, flags: list[str], json_path: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / script), *flags, "--json-out", str(json_path)]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(json_path.read_text())["result"]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(parser)
    parser.add_argument("--compile", action="store_true", help="also torch.compile biomtl's model")
    parser.add_argument("--save-model", default=None, help="keep biomtl's trained model here (for cpu_inference.py)")
    parser.add_argument("--hf-flags", default="", help="extra flags for the HF side only, e.g. '--bf16'")
    parser.add_argument("--biomtl-flags", default="",
                        help="extra flags for the biomtl side only (they override the shared ones), "
                             "e.g. '--bf16 --batch-size 128 --lr 2e-4'")
    args = parser.parse_args(argv)
    flags = child_args(args)
    biomtl_flags = flags + (["--compile"] if args.compile else []) + (["--save-model", args.save_model] if args.save_model else [])
    hf_flags = flags + shlex.split(args.hf_flags)
    biomtl_flags += shlex.split(args.biomtl_flags)

    with tempfile.TemporaryDirectory(prefix="compare-training-") as tmp:
        hf = run_side("hf_recipe.py", hf_flags, Path(tmp) / "hf.json")
        ours = run_side("biomtl_train.py", biomtl_flags, Path(tmp) / "biomtl.json")

    ratio = {
        "examples_per_s": ours["examples_per_s"] / hf["examples_per_s"],
        "real_tokens_per_s": ours["real_tokens_per_s"] / hf["real_tokens_per_s"],
        "peak_memory_mib": ours["peak_memory_mib"] / hf["peak_memory_mib"],
        "test_f1_difference": ours["test_f1"] - hf["test_f1"],
    }
    info = machine()
    keys = [k for k, _ in COLUMNS]
    ratio_row: list[Any] = ["**biomtl / HF**"] + [""] * (len(keys) - 1)
    ratio_row[keys.index("examples_per_s")] = f"**{ratio['examples_per_s']:.2f}×**"
    ratio_row[keys.index("real_tokens_per_s")] = f"{ratio['real_tokens_per_s']:.2f}×"
    ratio_row[keys.index("peak_memory_mib")] = f"{ratio['peak_memory_mib']:.2f}×"
    ratio_row[keys.index("test_f1")] = f"{ratio['test_f1_difference']:+.4f}"
    rows = [[r[k] for k in keys] for r in (hf, ours)] + [ratio_row]
    print(markdown_table([h for _, h in COLUMNS], rows))
    print(
        f"\nPeak memory: {hf['peak_memory_kind']} (MiB). Train s covers the training steps only; "
        f"test F1 is entity F1 on {hf['test_examples']} test sentences."
    )
    print(f"machine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args),
                               "hf_recipe": hf, "biomtl": ours, "ratio": ratio})


if __name__ == "__main__":
    main()
