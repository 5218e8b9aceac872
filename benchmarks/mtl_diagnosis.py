"""Why MTL-FT loses to ST in a finished study: the study's own options tried one at a time, on dev first.

Issue 10 asks, when MTL-FT loses, to find out why before changing anything, and to try the study's options
(``keep_heads``, temperature sampling, more MTL epochs), reporting what moved the average on dev. This script
reruns **the first seed** of a finished study (``--baseline``, e.g. the ``cpu`` profile's ``runs/blue-public-cpu``)
with one change per variant and nothing else changed (``--variants``):

* ``keep_heads`` — MTL-FT starts from the MTL run's heads instead of fresh ones (the MTL run is reused);
* ``temperature`` — MTL draws each batch's task with p ∝ n^(1/2) (``mtl.sampling: temperature``), so a small
  task such as BIOSSES gets more of the MTL steps;
* ``mtl_epochs`` — MTL trains twice the profile's epochs (``mtl.epochs`` × 2);
* ``st_epochs`` — the control for ``mtl_epochs``: ST trains as many epochs as MTL (×2) and MTL-FT together,
  so that both settings see each example equally often again;
* ``anchor`` (``anchorW``) — the MTL run adds the geometry anchor (``mtl.geometry_anchor: W``, default 10;
  :mod:`biomtl.anchor`): each batch's pairwise cosines of mean-pooled embeddings are held to the untrained
  encoder's, so that the other tasks move the space BIOSSES's cosine reads less;
* ``embanchor`` (``embanchorW``) — the same with ``anchor_measure: embeddings`` (default W 10): each text's
  mean-pooled embedding is held to the untrained encoder's, close pairs as much as unrelated ones;
* ``simanchor`` (``simanchorW``) — the embeddings anchor measured on BIOSSES's training sentences instead of
  each batch's texts (``anchor_texts: biosses``): the space the similarity task scores is held, the other
  tasks' texts are free to move;
* ``biosses_out`` — BIOSSES is left out of the MTL run (``mtl_tasks``); its MTL-FT run still starts from the MTL
  encoder (the bi-encoder has no head to keep), so MTL cannot spend BIOSSES's few steps pulling its encoder;
* ``mtl_lr`` — the MTL run moves the shared encoder at half the profile's LR (``mtl.lr`` / 2; the heads keep
  ``head_lr``), so that MTL moves the embedding space the similarity bi-encoder's cosine relies on less;
* ``biosses_epochs`` — BIOSSES's own budget: 3× the profile's BIOSSES epochs in ST and in MTL-FT alike, the
  epoch still selected on dev (64 pairs: a few more seconds per run);
* ``bioanchor`` (``bioanchorW``) — BIOSSES's ST and MTL-FT runs alike hold each sentence's embedding to the
  **pretrained** encoder's (``geometry_anchor: W``, default 10, ``anchor_measure: embeddings``, ``anchor_to:
  encoder``): the MTL-FT run is pulled back from where MTL moved the space while it learns BIOSSES, the ST
  run (which starts from the pretrained encoder) is held by the same term; no other run changes;
* ``a+b`` — both changes, e.g. ``mtl_epochs+st_epochs``.

Each variant is a copy of the study config with its changes in the profile and its own ``output_dir``. Every
finished run of the baseline or of another variant that the variant would train with identical settings is
copied in (an MTL-FT run only with the MTL run it started from), and ``biomtl study`` skips it after checking
the settings again. Retrained runs skip the test set (``evaluate_test: false``): the variants are compared on
dev, and a change is worth a test evaluation only if it moves the dev average. Without ``--baseline`` the
variants are compared with each other only, e.g. one chosen variant against itself plus one more change::

    python benchmarks/mtl_diagnosis.py --profile cpu --out runs/biosses-diagnosis \\
        --variants keep_heads+mtl_epochs+st_epochs,keep_heads+mtl_epochs+st_epochs+biosses_out

    python benchmarks/mtl_diagnosis.py --baseline runs/blue-public-cpu --profile cpu \\
        --out runs/blue-public-cpu-diagnosis --json-out results/mtl-diagnosis.json

The table: per task and variant, the ST, MTL and MTL-FT dev scores at each run's selected epoch and Δ MTL-FT −
ST; and the share of MTL steps each task gets under each sampling strategy.

``--confirm VARIANT --task T`` confirms a change that concerns one task (``biosses_epochs``) for less: only
T's ST and MTL-FT runs are scored on test, for every seed, with the MTL run they start from trained for its
encoder (dev only); it prints T's test ST, MTL-FT and Δ per seed with the paired bootstrap interval of Δ.

``--confirm VARIANT`` then reruns one variant for **every seed** of the baseline, with the test sets, into
``OUT/VARIANT-confirm``: ``biomtl study`` writes its ``results.md`` (test and dev tables, the bootstrap interval
of MTL-FT − ST against the reused ST runs), as for the baseline.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, machine, machine_line, markdown_table, write_json  # noqa: E402

STUDY = Path(__file__).resolve().parents[1] / "configs" / "studies" / "blue-public.yaml"
VARIANTS = ("keep_heads", "temperature", "mtl_epochs", "st_epochs", "mtl_lr", "anchor", "embanchor", "simanchor",
            "biosses_out", "biosses_epochs", "bioanchor")
ANCHOR = 10.0  # the weight of ``anchor``, ``embanchor``, ``simanchor``, ``bioanchor``; ``anchorW`` etc. name another
SMALL = "biosses"  # the study's smallest task (64 training pairs), which MTL hurts most
SEED = 1  # the variants rerun the baseline's first seed (`biomtl study --seeds 1`)


def variant_changes(name: str, profile: dict[str, Any], tasks: list[str], dev_only: bool = True) -> dict[str, Any]:
    """The profile keys a variant changes (deep-merged over the profile); ``dev_only``: the retrained runs skip
    the test set. ``a+b`` combines variants."""
    from biomtl.config import RunConfig
    from biomtl.experiments.schema import deep_merge

    skip_test = {"evaluate_test": False} if dev_only else {}
    # a changed run skips the test set; a run the variant leaves as it is stays reusable (same settings)
    section = {s: dict(skip_test) for s in ("st", "mtl", "mtl_ft")}
    changes: dict[str, Any] = {}
    default: int = RunConfig.epochs  # what a run uses when the profile names none (the class default)
    epochs = {s: (profile.get(s) or {}).get("epochs") or (profile.get("base") or {}).get("epochs") or default
              for s in ("st", "mtl", "mtl_ft")}
    mtl_lr: float = (profile.get("mtl") or {}).get("lr") or (profile.get("base") or {}).get("lr") or RunConfig.lr
    for part in name.split("+"):
        if part == "keep_heads":
            change: dict[str, Any] = {"keep_heads": True, "mtl_ft": section["mtl_ft"]}
        elif part == "temperature":
            change = {"mtl": {"sampling": "temperature", "temperature": 2.0, **section["mtl"]}, "mtl_ft": section["mtl_ft"]}
        elif part == "mtl_epochs":
            change = {"mtl": {"epochs": 2 * epochs["mtl"], **section["mtl"]}, "mtl_ft": section["mtl_ft"]}
        elif part == "st_epochs":  # the control for mtl_epochs: ST sees each example as often as MTL + MTL-FT
            change = {"st": {"epochs": 2 * epochs["mtl"] + epochs["mtl_ft"], **section["st"]}}
        elif part == "mtl_lr":  # the encoder's LR only: fresh heads still need head_lr to learn in MTL's steps
            change = {"mtl": {"lr": mtl_lr / 2, **section["mtl"]}, "mtl_ft": section["mtl_ft"]}
        elif (kind := _anchor(part)) is not None:
            measure, weight = kind
            change = {"mtl": {"geometry_anchor": weight, **measure, **section["mtl"]}, "mtl_ft": section["mtl_ft"]}
            if "anchor_texts" in measure:  # pair runs read the mtl section too; they have no BIOSSES to hold
                change["pairwise"] = {"geometry_anchor": 0.0, "anchor_texts": None}
        elif (weight := _weight(part, "bioanchor")) is not None:
            held = {"geometry_anchor": weight, "anchor_measure": "embeddings", "anchor_to": "encoder"}
            change = {"task_overrides": {SMALL: {s: {**held, **section[s]} for s in ("st", "mtl_ft")}}}
        elif part == "biosses_out":  # every MTL-FT run starts from the changed MTL run
            change = {"mtl_tasks": [t for t in tasks if t != SMALL], "mtl": section["mtl"], "mtl_ft": section["mtl_ft"]}
        elif part == "biosses_epochs":  # ST and MTL-FT alike, so that neither gets more passes from the change
            own = (profile.get("task_overrides") or {}).get(SMALL) or {}
            change = {"task_overrides": {SMALL: {
                s: {"epochs": 3 * ((own.get(s) or {}).get("epochs") or epochs[s]), **section[s]} for s in ("st", "mtl_ft")}}}
        else:
            raise SystemExit(f"unknown variant '{part}' (choose from {', '.join(VARIANTS)}, or join them with +)")
        changes = deep_merge(changes, change)
    return changes


def _anchor(part: str) -> tuple[dict[str, Any], float] | None:
    """``anchor``/``anchorW``, ``embanchor``/``embanchorW``, ``simanchor``/``simanchorW``: (the MTL run's anchor
    keys other than the weight; the weight); ``None`` for another variant."""
    held = {"anchor_measure": "embeddings"}
    for name, measure in (("anchor", {}), ("embanchor", held), ("simanchor", {**held, "anchor_texts": SMALL})):
        if (weight := _weight(part, name)) is not None:
            return measure, weight
    return None


def _weight(part: str, name: str) -> float | None:
    """The weight ``part`` gives variant ``name``: ``name`` alone :data:`ANCHOR`, ``nameW`` W (``anchor0`` is
    the weight 0); ``None`` when ``part`` is not ``name`` with or without a number."""
    if part == name:
        return ANCHOR
    return _number(part[len(name):]) if part.startswith(name) else None


def _number(text: str) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def write_variant(
    config: dict, profile: str, name: str, out: Path, dev_only: bool = True, extra: dict[str, Any] | None = None,
) -> tuple[Path, dict]:
    """The variant's study config, written into its output directory, and its changes (``extra``: more profile
    keys, merged over the variant's)."""
    from biomtl.experiments.schema import deep_merge

    data = copy.deepcopy(config)
    changes = deep_merge(variant_changes(name, data["profiles"][profile], list(data["tasks"]), dev_only), extra or {})
    data["profiles"][profile] = deep_merge(data["profiles"][profile], {**changes, "output_dir": str(out)})
    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, changes


def reuse_runs(study_yaml: Path, profile: str, seeds: list[int], sources: list[Path], data: str | None) -> list[str]:
    """Copy in every finished run of ``sources`` (the baseline, then the other variants) that the variant
    would train with the same settings; an MTL-FT run only together with the MTL run it started from.
    ``biomtl study`` checks the settings again and skips them. Returns what was copied."""
    from biomtl.config import RunConfig
    from biomtl.datadirs import DataDirs
    from biomtl.experiments.execute import RUNTIME_KEYS
    from biomtl.experiments.plan import study_runs
    from biomtl.experiments.schema import load_study

    study = load_study(study_yaml, profile, None, len(seeds), None, DataDirs.from_env(prepared=data))
    mtl_from: dict[int, Path] = {}
    copied = []
    for run in study_runs(study):
        target = study.run_dir(run.seed, run.name)
        if target.exists():  # copied by an earlier, interrupted call: find where from (its result is the same)
            for source in sources if run.setting == "mtl" else []:
                if _same_file(source / f"seed{run.seed}" / run.name / "result.json", target / "result.json"):
                    mtl_from[run.seed] = source
            continue
        wanted = {k: v for k, v in run.config.to_dict().items() if k not in RUNTIME_KEYS}
        for source in sources:
            found = source / f"seed{run.seed}" / run.name
            if not (found / "result.json").is_file() or (run.setting == "mtl_ft" and mtl_from.get(run.seed) != source):
                continue
            # read as --resume reads it: a key the run's biomtl did not have yet takes its default
            saved = RunConfig.from_dict(yaml.safe_load((found / "config.yaml").read_text())).to_dict()
            if all(saved.get(k) == v for k, v in wanted.items()):
                shutil.copytree(found, target)
                mtl_from.update({run.seed: source} if run.setting == "mtl" else {})
                copied.append(f"{run.label} from {source}")
                break
    return copied


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def run_variant(config: dict, args: argparse.Namespace, name: str, out: Path, seeds: list[int], dev_only: bool) -> dict:
    """Write the variant's config, copy in what it can reuse and run ``biomtl study`` on it."""
    path, changes = write_variant(config, args.profile, name, out, dev_only)
    others = sorted(d for d in Path(args.out).iterdir() if d.is_dir() and d != out)
    sources = [Path(args.baseline)] if args.baseline else []
    reused = reuse_runs(path, args.profile, seeds, [*sources, *others], args.data)
    cmd = [sys.executable, "-m", "biomtl", "study", str(path), "--profile", args.profile, "--seeds", str(len(seeds)),
           "--quiet", *(["--data", args.data] if args.data else [])]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return {"changes": changes, "reused": reused, "seeds": seeds, "wall_s": time.perf_counter() - start}


def confirm_task(config: dict, args: argparse.Namespace, name: str, task: str, seeds: list[int]) -> dict:
    """``--confirm NAME --task TASK``: the variant's ``st-TASK`` and ``mtlft-TASK`` runs of every seed scored on
    test (and the MTL run they start from, dev only), reusing what other variants in ``--out`` trained with
    the same settings; TASK's test ST, MTL-FT and Δ per seed, and the paired bootstrap interval of Δ."""
    import logging

    from transformers.utils import logging as hf_logging

    from biomtl.datadirs import DataDirs
    from biomtl.experiments import bootstrap
    from biomtl.experiments.execute import execute_all
    from biomtl.experiments.plan import study_runs
    from biomtl.experiments.report import format_stat, main_score, summarize, zero_shot_scores
    from biomtl.experiments.schema import MTL, load_study, mtl_ft_name, st_name

    logging.basicConfig(level=logging.INFO, format="biomtl: %(message)s", stream=sys.stderr)  # as `biomtl study`
    hf_logging.set_verbosity_error()  # the load report about the encoder's unused pooler weights
    hf_logging.disable_progress_bar()
    out = Path(args.out) / f"{name}-confirm-{task}"
    # the MTL run is trained for its encoder only: no test scoring
    path, changes = write_variant(config, args.profile, name, out, dev_only=False, extra={"mtl": {"evaluate_test": False}})
    others = sorted(d for d in Path(args.out).iterdir() if d.is_dir() and d != out)
    reused = reuse_runs(path, args.profile, seeds, others, args.data)
    study = load_study(path, args.profile, None, len(seeds), None, DataDirs.from_env(prepared=args.data))
    wanted = {st_name(task), MTL, mtl_ft_name(task)}
    start = time.perf_counter()
    results = execute_all(study, [r for r in study_runs(study) if r.name in wanted], "confirm", progress=False)
    wall = time.perf_counter() - start
    per_seed = {setting: [main_score(results[(seed, run)], "test", task) for seed in study.seeds]
                for setting, run in (("st", st_name(task)), ("mtl_ft", mtl_ft_name(task)))}
    deltas = [ft - st for st, ft in zip(per_seed["st"], per_seed["mtl_ft"], strict=True)]  # type: ignore[operator]
    interval = bootstrap.paired_interval({task: bootstrap.paired_task(study, results, task)})["tasks"][task]
    zero_shot = zero_shot_scores(study).get(task)
    stats = {"st": summarize(per_seed["st"]), "mtl_ft": summarize(per_seed["mtl_ft"]), "delta": summarize(deltas)}

    header = ["task", "zero-shot", "ST", "MTL-FT", "Δ MTL-FT − ST", *[f"Δ seed {k}" for k in study.seeds], "95 % interval"]
    row = [task, "—" if zero_shot is None else f"{100 * zero_shot:.1f}", format_stat(stats["st"]),
           format_stat(stats["mtl_ft"]), format_stat(stats["delta"], signed=True), *[f"{100 * d:+.1f}" for d in deltas],
           f"[{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}]"]
    table = markdown_table(header, [row]) + f"\n\n{name}, {len(seeds)} seeds, test, ×100; machine: {machine_line(machine())}"
    return {"changes": changes, "reused": reused, "seeds": seeds, "wall_s": wall, "task": task, "test": per_seed,
            "summary": stats, "interval": interval, "zero_shot": zero_shot, "table": table}


def dev_scores(run_dir: Path) -> dict[str, float]:
    result = json.loads((run_dir / "result.json").read_text())
    return {t: 100 * result["dev"][t][result["main_metric"][t]] for t in result["tasks"]}


def study_dev(root: Path, seed: int, tasks: list[str]) -> dict[str, dict[str, float]]:
    """``{setting: {task: dev main metric ×100}}`` for ST, MTL and MTL-FT of one seed."""
    base = root / f"seed{seed}"
    return {
        "st": {t: dev_scores(base / f"st-{t}")[t] for t in tasks},
        "mtl": dev_scores(base / "mtl"),
        "mtl_ft": {t: dev_scores(base / f"mtlft-{t}")[t] for t in tasks},
    }


def sampling_share(tasks: list[str], data: str | None, limit: int | None, batch_size: int) -> dict[str, dict[str, Any]]:
    """The share of one MTL epoch's steps each task gets, per strategy, from the tasks' training example
    counts (as :class:`biomtl.data.sampler.TaskBatchSampler` schedules them; lengths do not matter)."""
    from biomtl.data.readers import read_split
    from biomtl.data.sampler import TaskBatchSampler
    from biomtl.datadirs import DataDirs
    from biomtl.tasks import load_dataset_spec

    dirs = DataDirs.from_env(prepared=data)
    counts = {t: len(read_split(load_dataset_spec(t, dirs), "train", limit=limit)) for t in tasks}
    share: dict[str, dict[str, Any]] = {}
    for strategy in ("proportional", "temperature"):
        schedule = TaskBatchSampler({t: [1] * n for t, n in counts.items()}, batch_size, strategy, seed=1).epoch(0)
        share[strategy] = {t: 100 * sum(1 for task, _ in schedule if task == t) / len(schedule) for t in tasks}
    return {"examples": counts, **share}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(STUDY))
    p.add_argument("--profile", default="cpu")
    p.add_argument("--baseline", default=None,
                   help="the finished study's output directory (its seed is reused; a row of the table)")
    p.add_argument("--out", required=True, help="a directory of its own; each variant is a subdirectory")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated; a+b combines two")
    p.add_argument("--confirm", default=None, metavar="VARIANT",
                   help="rerun this variant for every seed of the baseline, test sets included")
    p.add_argument("--task", default=None,
                   help="with --confirm: only this task's ST and MTL-FT runs (and their MTL run, dev only)")
    p.add_argument("--data", default=None, help="prepared task files (else $BIOMTL_DATA)")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)

    config = yaml.safe_load(Path(args.config).read_text())
    profile = config["profiles"][args.profile]
    tasks = list(config["tasks"])
    out = Path(args.out)
    if args.confirm:
        if args.baseline:
            baseline = Path(args.baseline)
            seeds = sorted(int(d.name[4:]) for d in baseline.glob("seed*") if d.name[4:].isdigit())
            if seeds != list(range(1, len(seeds) + 1)):
                raise SystemExit(f"{baseline}: expected seed1..seedN, found {', '.join(f'seed{k}' for k in seeds)}")
        else:  # the profile's seeds
            count = profile.get("seeds", config.get("seeds", 3))
            seeds = list(range(1, count + 1)) if isinstance(count, int) else list(count)
        if args.task:
            if args.task not in tasks:
                raise SystemExit(f"--task: '{args.task}' is not one of the study's tasks ({', '.join(tasks)})")
            row = confirm_task(config, args, args.confirm, args.task, seeds)
            print(row["table"])
            write_json(args.json_out, {"command": command_line(), "machine": machine(), "args": vars(args), "result": row})
            return
        vdir = out / f"{args.confirm}-confirm"
        row = run_variant(config, args, args.confirm, vdir, seeds, dev_only=False)
        print((vdir / "results.md").read_text())
        write_json(args.json_out, {"command": command_line(), "machine": machine(), "args": vars(args), "result": row})
        return
    rows: dict[str, Any] = {"baseline": {"dev": study_dev(Path(args.baseline), SEED, tasks)}} if args.baseline else {}
    for name in args.variants.split(","):
        vdir = out / name
        rows[name] = {**run_variant(config, args, name, vdir, [SEED], dev_only=True), "dev": study_dev(vdir, SEED, tasks)}

    base = profile.get("base") or {}
    share = sampling_share(tasks, args.data, base.get("max_train_examples"), base.get("batch_size", 32))
    print(report(rows, tasks, share))
    info = machine()
    print(f"\nmachine: {machine_line(info)}\ncommand: {command_line()}")
    write_json(args.json_out, {"command": command_line(), "machine": info, "args": vars(args),
                               "result": {"variants": rows, "sampling_share": share}})


def report(rows: dict[str, Any], tasks: list[str], share: dict[str, dict]) -> str:
    """Dev table, per variant: ST, MTL, MTL-FT and Δ MTL-FT − ST (its own ST: the baseline's unless it changes
    ST); and the MTL sampling shares."""

    def value(name: str, setting: str, task: str) -> float | None:
        scores = rows[name]["dev"][setting]  # the MTL run has no score for a task it left out (mtl_tasks)
        if task != "average":
            return scores.get(task)
        return None if any(t not in scores for t in tasks) else sum(scores[t] for t in tasks) / len(tasks)

    header = ["task"]
    for name in rows:
        header += [f"{name} ST", f"{name} MTL", f"{name} MTL-FT", f"{name} Δ"]
    lines = []
    for task in [*tasks, "average"]:
        row: list[Any] = [task]
        for name in rows:
            st, mtl, mtl_ft = (value(name, setting, task) for setting in ("st", "mtl", "mtl_ft"))
            assert st is not None and mtl_ft is not None
            row += [f"{st:.1f}", "—" if mtl is None else f"{mtl:.1f}", f"{mtl_ft:.1f}", f"{mtl_ft - st:+.1f}"]
        lines.append(row)
    shares = [[t, share["examples"][t], f"{share['proportional'][t]:.1f} %", f"{share['temperature'][t]:.1f} %"]
              for t in tasks]
    return (markdown_table(header, lines) + "\n\n"
            + markdown_table(["task", "training examples", "MTL steps, proportional", "temperature (T=2)"], shares))


if __name__ == "__main__":
    main()
