"""Training benchmark: the stock HF recipe and biomtl, one after the other on this machine, with one set of flags.

Each side runs in its own child process (``hf_recipe.py``, then ``biomtl_train.py``), so that the CPU's
peak-RSS figure belongs to that side alone; both get the same flags, plus ``--hf-flags`` / ``--biomtl-flags``
for one side only (e.g. the stock recipe at fp32 batch 32 against biomtl at bf16 and a larger batch: same
model, data and epochs). Prints one Markdown table with the ratios, the machine and the exact command, and
writes every number to ``--json-out``.

Without ``--tasks`` this is the NER benchmark of BENCHMARKS.md section 3: bc5cdr-chemical, the HF side tested
on its last epoch. ``--tasks all`` (or a comma-separated list) runs every BLUE task of the study, one after the
other, under these rules, the same for both sides:

* **Data**: the same seeded subset of at most ``--max-train-examples`` training examples, read by biomtl's
  reader for both sides (HoC keeps whole abstracts, so "about"); dev and test in full unless
  ``--max-eval-examples`` caps them. Every score is biomtl's scorer for the task on every example: exact-span
  entity F1 (NER), micro-F1 over the positive classes (ChemProt, DDI), BLUE's per-abstract example-based F1
  (HoC), Pearson (BIOSSES).
* **Settings**: epochs, batch size, LR, warm-up, weight decay and max length come from the task's run config
  (``--run-configs``, default ``configs/runs/<task>.yaml``) for both sides; a flag given here overrides them
  for every task. No setting is tuned on test.
* **Selection**: both sides evaluate dev after every epoch and test the best epoch by the task's main dev
  metric (HF: ``load_best_model_at_end`` with that metric). biomtl also scores dev before the first step
  (epoch 0 is a candidate); the stock ``Trainer`` has no such candidate.
* **What only biomtl has**: the run config's ``head_lr``, ``pooling`` and ``similarity`` (biomtl's model
  settings; the stock recipe has one LR and the BERT pooler). HoC: the HF side predicts a label at sigmoid ≥ 0.5
  (stock); biomtl uses per-label thresholds chosen on dev. BIOSSES: the HF side is the stock cross-encoder
  (``num_labels=1``, MSE on the pair); biomtl uses its default for this encoder, the bi-encoder. The BIOSSES
  zero-shot score (``biomtl evaluate default --task biosses``, no training) is reported beside them.
* **Cost**: train s counts training steps only (each side's per-epoch clock, without evaluation and
  checkpoints), examples/s = training examples × epochs ÷ train s, peak RSS per process.

Results are written to ``--json-out`` after every task; ``--skip-done`` keeps the tasks already there, so an
interrupted run goes on where it stopped.

    python benchmarks/compare_training.py --epochs 1 --max-train-examples 1000 --json-out /tmp/training.json
    python benchmarks/compare_training.py --tasks all --threads 2 --max-train-examples 2000 --json-out /tmp/all.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

ALL_TASKS = ("bc5cdr-chemical", "bc5cdr-disease", "chemprot", "ddi", "hoc", "biosses")
SHARED_KEYS = ("epochs", "batch_size", "lr", "warmup", "weight_decay", "max_length")  # run-config keys both sides get
BIOMTL_KEYS = ("head_lr", "pooling", "similarity", "group_by_length", "pack")  # the stock recipe has no counterpart
NEGATABLE = ("group_by_length",)  # biomtl_train.py's --x / --no-x flags (default on)
RUN_KEYS_NOT_USED = ("tasks", "output_dir", "max_train_examples", "max_eval_examples")  # the caps are this script's flags
OWN_FLAGS = ("json_out", "compile", "save_model", "hf_flags", "biomtl_flags", "tasks", "run_configs", "skip_done")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(parser)
    parser.add_argument("--compile", action="store_true", help="also torch.compile biomtl's model")
    parser.add_argument("--save-model", default=None, help="keep biomtl's trained model here (for cpu_inference.py)")
    parser.add_argument("--hf-flags", default="", help="extra flags for the HF side only, e.g. '--bf16'")
    parser.add_argument("--biomtl-flags", default="",
                        help="extra flags for the biomtl side only (they override the shared ones), "
                             "e.g. '--bf16 --batch-size 128 --lr 2e-4'")
    parser.add_argument("--tasks", default=None,
                        help=f"'all' ({', '.join(ALL_TASKS)}) or a comma-separated list: every task under the "
                             "rules above, with its run config's settings (default: the NER benchmark alone)")
    parser.add_argument("--run-configs", default=str(HERE.parent / "configs" / "runs"),
                        help="folder of <task>.yaml run configs (with --tasks)")
    parser.add_argument("--skip-done", action="store_true", help="with --tasks: keep the tasks already in --json-out")
    return parser


def given_flags(argv: list[str] | None) -> set[str]:
    """The options named on the command line (``dest`` names): they override the run configs."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_known_args(argv)[0]))


def as_flags(values: dict[str, Any]) -> list[str]:
    """``{"batch_size": 32, "bf16": True, "seed": None, "group_by_length": False}`` → ``["--batch-size", "32",
    "--bf16", "--no-group-by-length"]``."""
    out = []
    for key, value in values.items():
        if value is False and key in NEGATABLE:
            out.append("--no-" + key.replace("_", "-"))
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out


def child_args(args: argparse.Namespace) -> list[str]:
    """The shared training flags, as given, for both child scripts."""
    return as_flags({k: v for k, v in vars(args).items() if k not in OWN_FLAGS})


def run_side(script: str, flags: list[str], json_path: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / script), *flags, "--json-out", str(json_path)]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(json_path.read_text())["result"]


# ----------------------------------------------------------------------------------------------------------
# NER alone (section 3's first table)


def compare_ner(args: argparse.Namespace) -> None:
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
        "test_f1_difference": ours["test_main"] - hf["test_main"],
    }
    info = machine()
    keys = [k for k, _ in COLUMNS]
    ratio_row: list[Any] = ["**biomtl / HF**"] + [""] * (len(keys) - 1)
    ratio_row[keys.index("examples_per_s")] = f"**{ratio['examples_per_s']:.2f}×**"
    ratio_row[keys.index("real_tokens_per_s")] = f"{ratio['real_tokens_per_s']:.2f}×"
    ratio_row[keys.index("peak_memory_mib")] = f"{ratio['peak_memory_mib']:.2f}×"
    ratio_row[keys.index("test_main")] = f"{ratio['test_f1_difference']:+.4f}"
    rows = [[r[k] for k in keys] for r in (hf, ours)] + [ratio_row]
    print(markdown_table([h for _, h in COLUMNS], rows))
    print(
        f"\nPeak memory: {hf['peak_memory_kind']} (MiB). Train s covers the training steps only; "
        f"test main is entity F1 on {hf['test_examples']} test sentences."
    )
    print(f"machine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args),
                               "hf_recipe": hf, "biomtl": ours, "ratio": ratio})


# ----------------------------------------------------------------------------------------------------------
# Every task


def task_list(value: str) -> list[str]:
    tasks = list(ALL_TASKS) if value == "all" else [t.strip() for t in value.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown or not tasks:
        sys.exit(f"--tasks: expected 'all' or some of {', '.join(ALL_TASKS)}; got {value!r}")
    return tasks


def run_config_settings(folder: Path, task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The task's run config as (settings both sides get, biomtl-only settings); any other training key is
    refused, since one side would silently lack it."""
    from biomtl.config import read_yaml

    path = folder / f"{task}.yaml"
    data = read_yaml(path)
    other = sorted(set(data) - set(SHARED_KEYS) - set(BIOMTL_KEYS) - set(RUN_KEYS_NOT_USED))
    if other:
        sys.exit(f"{path}: key(s) {', '.join(other)} have no flag in this comparison")
    return {k: data[k] for k in SHARED_KEYS if k in data}, {k: data[k] for k in BIOMTL_KEYS if k in data}


def compare_task(task: str, args: argparse.Namespace, given: set[str], tmp: Path) -> dict[str, Any]:
    shared, biomtl_only = run_config_settings(Path(args.run_configs), task)
    values = {k: v for k, v in vars(args).items() if k not in OWN_FLAGS}
    values.update({k: v for k, v in shared.items() if k not in given})
    flags = as_flags({"task": task, **values})
    hf_flags = flags + ["--select", "best-dev"] + shlex.split(args.hf_flags)
    biomtl_flags = flags + as_flags(biomtl_only) + (["--compile"] if args.compile else []) + shlex.split(args.biomtl_flags)
    hf = run_side("hf_recipe.py", hf_flags, tmp / f"hf-{task}.json")
    ours = run_side("biomtl_train.py", biomtl_flags, tmp / f"biomtl-{task}.json")
    return {"settings": {**{k: values[k] for k in SHARED_KEYS}, "biomtl_only": biomtl_only},
            "hf_recipe": hf, "biomtl": ours, "hf_flags": hf_flags, "biomtl_flags": biomtl_flags}


def zero_shot(task: str, prepared: str | None) -> dict[str, Any]:
    """``biomtl evaluate default --task TASK`` on dev and test: the encoder with no training."""
    env = {**os.environ, **({"BIOMTL_DATA": prepared} if prepared else {})}
    out = {}
    for split in ("dev", "test"):
        cmd = [sys.executable, "-m", "biomtl", "evaluate", "default", "--task", task, "--split", split]
        print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
        out[split] = result["scores"][result["main_metric"]]
    return out


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def all_tasks_table(results: dict[str, Any], tasks: list[str], zero: dict[str, Any] | None) -> str:
    header = ["task (main metric)", "HF test", "biomtl test", "Δ test", "HF dev", "biomtl dev", "epoch HF / biomtl",
              "train s HF / biomtl", "examples/s HF / biomtl", "speed-up", "peak RSS MiB HF / biomtl"]
    rows: list[list[Any]] = []
    for task in tasks:
        if task not in results:
            rows.append([task, "not yet measured", *[""] * (len(header) - 2)])
            continue
        hf, ours = results[task]["hf_recipe"], results[task]["biomtl"]
        delta = ours["test_main"] - hf["test_main"]
        rows.append([
            f"{task} ({hf['main_metric']})", pct(hf["test_main"]), pct(ours["test_main"]),
            f"**{100 * delta:+.1f}**" if delta < 0 else f"{100 * delta:+.1f}",
            pct(hf["dev_main"]), pct(ours["dev_main"]), f"{hf['best_epoch']} / {ours['best_epoch']}",
            f"{hf['train_s']:,.0f} / {ours['train_s']:,.0f}", f"{hf['examples_per_s']:.1f} / {ours['examples_per_s']:.1f}",
            f"{ours['examples_per_s'] / hf['examples_per_s']:.2f}×",
            f"{hf['peak_memory_mib']:,.0f} / {ours['peak_memory_mib']:,.0f}",
        ])
    if zero is not None:
        rows.append(["biosses, zero-shot (no training)", "", pct(zero["test"]), "", "", pct(zero["dev"]), "", "", "", "", ""])
    return markdown_table(header, rows)


def settings_table(results: dict[str, Any], tasks: list[str]) -> str:
    header = ["task", "train ex.", "dev / test ex.", "epochs", "batch", "LR", "biomtl only"]
    rows = []
    for task in tasks:
        if task in results:
            s, hf, ours = results[task]["settings"], results[task]["hf_recipe"], results[task]["biomtl"]
            used = {k: ours["settings"][k] for k in s["biomtl_only"]}  # similarity: auto resolved
            extra = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in used.items()) or "–"
            rows.append([task, f"{hf['train_examples']:,}", f"{hf['dev_examples']:,} / {hf['test_examples']:,}",
                         s["epochs"], s["batch_size"], f"{s['lr']:g}", extra])
    return markdown_table(header, rows)


def compare_all(args: argparse.Namespace, argv: list[str] | None) -> None:
    tasks = task_list(args.tasks)
    given = given_flags(argv)
    done: dict[str, Any] = {}
    if args.skip_done and args.json_out and Path(args.json_out).is_file():
        done = json.loads(Path(args.json_out).read_text()).get("tasks", {})
    results = dict(done)  # every finished task stays in --json-out, also one that --tasks does not name
    zero = json.loads(Path(args.json_out).read_text()).get("biosses_zero_shot") if done else None
    info = machine()

    def save() -> None:
        write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args),
                                   "tasks": results, "biosses_zero_shot": zero})

    if "biosses" in tasks and zero is None:
        zero = zero_shot("biosses", args.prepared)
        save()
    with tempfile.TemporaryDirectory(prefix="compare-training-") as tmp:
        for task in tasks:
            if task in results:
                print(f"{task}: kept from {args.json_out}", file=sys.stderr)
                continue
            results[task] = compare_task(task, args, given, Path(tmp))
            save()
            print(all_tasks_table(results, tasks, zero), file=sys.stderr, flush=True)
    shown = [t for t in ALL_TASKS if t in tasks]  # the tasks run in the order given, shown in the study's
    print(all_tasks_table(results, shown, zero if "biosses" in tasks else None))
    print()
    print(settings_table(results, shown))
    print(f"\nmachine: {machine_line(info)}\ncommand: {command_line()}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    if args.tasks:
        compare_all(args, argv)
    else:
        compare_ner(args)


if __name__ == "__main__":
    main()
