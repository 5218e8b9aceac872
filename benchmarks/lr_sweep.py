"""Dev-set learning-rate sweep of a study profile's single-task runs (test is never evaluated).

For each task and each LR, one ST run with the profile's settings plus the given ``key=value`` overrides and
``lr=…``, ``evaluate_test=false``. Prints the best dev main metric per (task, LR) and its epoch; this is how the
study's LRs for a new encoder can be chosen without looking at test.

    python benchmarks/lr_sweep.py --profile full --tasks bc5cdr-chemical,chemprot --lrs 5e-5,1e-4,2e-4 \\
        max_train_examples=2000 max_eval_examples=1000 epochs=2
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, machine_line, markdown_table, write_json  # noqa: E402

STUDY = Path(__file__).resolve().parents[1] / "configs" / "studies" / "blue-public.yaml"


def main(argv: list[str] | None = None) -> None:
    from biomtl.experiments.study import load_study
    from biomtl.train import train

    logging.basicConfig(level=logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(STUDY))
    p.add_argument("--profile", default="full")
    p.add_argument("--tasks", required=True, help="comma-separated tasks of the study")
    p.add_argument("--lrs", required=True, help="comma-separated encoder learning rates")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--output-dir", default="runs/lr-sweep")
    p.add_argument("--json-out", default=None)
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. epochs=2)")
    args = p.parse_args(argv)

    rows, records = [], []
    for task in args.tasks.split(","):
        for lr in args.lrs.split(","):
            study = load_study(args.config, args.profile, [*args.overrides, f"lr={lr}", "evaluate_test=false"],
                               seeds=1, output_dir=args.output_dir)
            run = study.run("st", [task], args.seed, f"st-{task}-lr{lr}")
            start = time.perf_counter()
            result = train(run.config, resume=Path(run.config.output_dir).exists(), progress=False)
            seconds = time.perf_counter() - start
            metric = result["main_metric"][task]
            score = result["dev"][task][metric]
            assert "test" not in result
            records.append({"task": task, "lr": float(lr), "metric": metric, "dev": score,
                            "best_epoch": result["best_epoch"], "epochs": run.config.epochs, "wall_s": seconds,
                            "config": run.config.to_dict()})
            rows.append([task, lr, metric, f"{100 * score:.1f}", f"{result['best_epoch']}/{run.config.epochs}", f"{seconds:.0f}"])
            print(f"{task} lr={lr}: dev {metric} {100 * score:.1f} (epoch {result['best_epoch']})", file=sys.stderr, flush=True)

    info = machine()
    print(markdown_table(["task", "lr", "metric", "best dev ×100", "best epoch", "wall s"], rows))
    print(f"\nmachine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args), "runs": records})


if __name__ == "__main__":
    main()
