"""``biomtl`` command line: thin subcommands over the library functions.

Every user error prints one line ``biomtl: error: ...`` and exits with status 2, without a traceback and
without leaving partial output behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from biomtl.atomic import atomic_write_text
from biomtl.datadirs import DataDirs
from biomtl.errors import BiomtlError, ConfigError
from biomtl.lines import numbered_lines

if TYPE_CHECKING:
    from collections.abc import Callable

    from biomtl.data.examples import Example

log = logging.getLogger("biomtl")

EXIT_USAGE = 2


def _data_dirs(args: argparse.Namespace) -> DataDirs:
    """The data directories from ``--corpora``/``--data``, else the environment: resolved here, once."""
    return DataDirs.from_env(getattr(args, "corpora", None), getattr(args, "data", None))


def cmd_prepare(args: argparse.Namespace) -> int:
    from biomtl.corpora import TASKS, default_prepared_dir, headline_count, prepare, resolve_corpora_dir

    corpora = resolve_corpora_dir(args.corpora)
    out = Path(args.out) if args.out else default_prepared_dir()
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    manifests = prepare(corpora, out, tasks, overwrite=args.overwrite, verify=not args.no_verify)
    for task, m in manifests.items():
        summary = ", ".join("{} {} {}".format(split, *headline_count(c)) for split, c in m["counts"].items())
        unverified = "" if m.get("verified") else "  (sources not verified)"
        print(f"{task}: {summary}  → {out / task}{unverified}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from biomtl.corpora import TASKS, default_prepared_dir, prepare
    from biomtl.corpora.download import download, load_catalogue

    catalogue = load_catalogue(Path(args.catalogue) if args.catalogue else None)
    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
    report = download(args.corpora, tasks, catalogue, progress=not args.quiet)
    for line in report.lines():
        print(line)
    prepared = [t for t in report.tasks if t in TASKS]  # the others are read from the corpus directory as is
    if args.prepare and prepared:
        out = Path(args.out) if args.out else default_prepared_dir()
        for task in prepare(report.corpora, out, prepared):
            print(f"{task}: prepared in {out / task}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from biomtl.config import DEFAULT_MAX_LENGTH, apply_overrides, read_yaml
    from biomtl.data.readers import read_dataset
    from biomtl.data.summary import dataset_summary
    from biomtl.experiments.plan import validate_study
    from biomtl.experiments.schema import is_study_config
    from biomtl.tasks import load_dataset_spec

    data_dirs = _data_dirs(args)
    # `validate run.yaml epochs=2`: key=value items are overrides for the run configs, as `train` takes them.
    overrides = [c for c in args.configs if "=" in c and not Path(c).exists()]
    failed = 0
    for path in [c for c in args.configs if c not in overrides]:
        problems: list[str] = []
        summary: list[str] = []  # what was read, for a dataset config
        try:
            data = read_yaml(path)
            if is_study_config(data):
                kind = f"study config, {validate_study(path)}"
            elif "tasks" in data and "type" not in data:
                problems = _run_config_problems(apply_overrides(data, overrides), path, data_dirs.beside(path))
                kind = "run config"
            else:
                spec = load_dataset_spec(path, data_dirs)
                examples = read_dataset(spec, problems)
                kind = f"{spec.type} task {spec.name}"
                if not problems:
                    summary = dataset_summary(spec, examples, *_example_length(), DEFAULT_MAX_LENGTH,
                                              " (the default; a run sets its own)")
        except ConfigError as e:
            problems = e.problems
            kind = ""
        except BiomtlError as e:
            problems = [str(e)]
            kind = ""
        if problems:
            failed += 1
            for p in problems:
                print(f"biomtl: error: {p}", file=sys.stderr)
        else:
            print(f"{path}: ok ({kind})")
            for line in summary:
                print(f"  {line}")
    return EXIT_USAGE if failed else 0


def _example_length() -> tuple[Callable[[Example], int], str]:
    """How ``validate`` measures an example against ``max_length``: sub-word tokens of the default encoder's
    tokenizer, [CLS] and [SEP] included (as ``max_length`` counts them); words when no tokenizer is at hand."""
    from biomtl.data.summary import word_count
    from biomtl.model import configured_encoder, default_encoder_path, load_tokenizer

    try:
        tokenizer = load_tokenizer(default_encoder_path())
    except BiomtlError:
        return word_count, "words (a word count: no tokenizer at hand)"

    def length(ex: Example) -> int:
        if ex.tokens is not None:
            return len(tokenizer(ex.tokens, is_split_into_words=True)["input_ids"])
        return len(tokenizer(ex.text, ex.text_b)["input_ids"])

    return length, f"tokens of the {configured_encoder(None) or 'default encoder'}'s tokenizer"


def _run_config_problems(data: dict, path: str, data_dirs: DataDirs) -> list[str]:
    """Every problem of a run config that ``train`` would stop at before its first step: its values, its
    tasks (each dataset config, statically), the device on this machine, and ``max_length`` against a local
    encoder's positions."""
    from biomtl.config import RunConfig
    from biomtl.inference import resolve_device
    from biomtl.model import check_max_length, default_encoder_path, read_manifest
    from biomtl.tasks import load_dataset_spec

    config = RunConfig.from_dict(data, path)  # raises ConfigError with every problem of the values
    problems: list[str] = []
    from functools import partial

    checks: list[Callable[[], object]] = [partial(load_dataset_spec, task, data_dirs) for task in config.tasks]
    checks.append(lambda: resolve_device(config.device))
    if config.init_from:
        checks.append(partial(read_manifest, Path(config.init_from)))
    encoder = Path(config.init_from) / "encoder" if config.init_from else Path(config.encoder or default_encoder_path())
    if (encoder / "config.json").is_file():
        checks.append(lambda: check_max_length(
            config.max_length, SimpleNamespace(**json.loads((encoder / "config.json").read_text(encoding="utf-8")))
        ))
    for check in checks:
        try:
            check()
        except ConfigError as e:
            problems.extend(e.problems)
        except BiomtlError as e:
            problems.append(str(e))
        except (ValueError, TypeError) as e:  # an encoder config.json that is not a JSON object: train says so
            problems.append(f"{encoder / 'config.json'}: cannot read the encoder config ({e})")
    return problems


def cmd_train(args: argparse.Namespace) -> int:
    from biomtl.config import RunConfig, apply_overrides, read_yaml
    from biomtl.train import train

    data = apply_overrides(read_yaml(args.config), args.overrides)
    if args.output_dir:
        data["output_dir"] = args.output_dir
    config = RunConfig.from_dict(data, args.config)
    if not config.output_dir:
        raise ConfigError(f"{args.config}: output_dir: give it in the run config or as --output-dir")
    result = train(config, _data_dirs(args).beside(args.config), resume=args.resume, overwrite=args.overwrite,
                   progress=not args.quiet)
    _print_result(result)
    return 0


def _print_result(result: dict) -> None:
    for split in ("dev", "test"):
        if split in result:
            scores = {t: round(s[result["main_metric"][t]], 4) for t, s in result[split].items()}
            print(f"{split} (best epoch {result['best_epoch']}): {json.dumps(scores)}  mean {result[f'{split}_mean_main']:.4f}")
    print(f"model: {Path(result['output_dir']) / 'best'}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from biomtl.evaluate import evaluate

    for result in evaluate(args.source, args.task, args.split, _data_dirs(args), args.batch_size, args.device,
                           precision=args.precision, max_length=args.max_length):
        print(json.dumps(result.to_json()))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from biomtl.predict import Predictor

    if args.batch_size < 1:
        raise BiomtlError(f"--batch-size: must be >= 1, got {args.batch_size}")
    out = _output_file(args.output, args.overwrite)  # the file itself is written only at the end
    predictor = Predictor.load(args.model, device=args.device, batch_size=args.batch_size, precision=args.precision)
    task = args.task
    if task is None:
        if len(predictor.tasks) != 1:
            raise BiomtlError(f"--task: the model has several tasks; choose one of {', '.join(predictor.tasks)} or 'all'")
        task = predictor.tasks[0]
    if task != "all":
        predictor._check_task(task)
    source = args.input if args.input != "-" else "<stdin>"
    raw = sys.stdin.buffer.read() if args.input == "-" else _read_bytes(args.input)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise BiomtlError(f"{source}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    fmt = args.format or ("jsonl" if str(args.input).endswith(".jsonl") else "text")
    inputs: list = []
    numbers: list[int] = []  # each input's line, for messages
    if fmt == "jsonl":
        for number, line in numbered_lines(text):
            try:
                inputs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise BiomtlError(f"{source}:{number}: invalid JSON ({e.msg})") from None
            except RecursionError:
                raise BiomtlError(f"{source}:{number}: invalid JSON (nested too deeply)") from None
            numbers.append(number)
    elif args.lines:  # one record per non-empty line, its offsets within the line
        numbers, inputs = [n for n, _ in numbered_lines(text)], [line for _, line in numbered_lines(text)]
    elif task == "all":
        inputs, numbers = [text], [1]  # the whole input is one document; offsets index into it
    else:  # the task's type says how: one input per line, or the whole text as one document
        pieces = predictor.model.tasks[task].plain_text_inputs(text)
        numbers, inputs = [n for n, _ in pieces], [piece for _, piece in pieces]
    if task == "all":
        texts = []
        for number, item in zip(numbers, inputs, strict=True):
            value = item.get("text") if isinstance(item, dict) else item
            if not isinstance(value, str):
                raise BiomtlError(f"{source}:{number}: expected a JSON object with a string field 'text'")
            texts.append(value)
        predictions = predictor.annotate(texts)
        for item, pred, number in zip(inputs, predictions, numbers, strict=True):
            if isinstance(item, dict) and "id" in item:
                pred["id"] = str(item["id"])
            elif args.lines:
                pred["id"] = str(number)
    else:
        predictions = predictor.predict(task, inputs, source=source, lines=numbers)
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    if out is not None:
        atomic_write_text(out, lines)
    else:
        sys.stdout.write(lines)
    return 0


def _read_bytes(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise BiomtlError(f"{p}: input file not found")
    return p.read_bytes()


def _output_file(value: str | None, overwrite: bool) -> Path | None:
    """``--output``, checked before any work (the file itself is written, atomically, only at the end)."""
    out = Path(value) if value else None
    if out is not None:
        if out.is_dir():
            raise BiomtlError(f"--output: {out} is a directory; name the file to write")
        if out.exists() and not overwrite:
            raise BiomtlError(f"{out} exists; pass --overwrite to replace it")
        parent = out.absolute().parent
        if not parent.is_dir():
            problem = "is a file, not a directory" if parent.exists() else "does not exist"
            raise BiomtlError(f"--output: {parent} {problem}")
    return out


def cmd_annotate(args: argparse.Namespace) -> int:
    from biomtl.annotate import annotate
    from biomtl.formats import read_documents, write_documents
    from biomtl.predict import Predictor

    if args.batch_size < 1:
        raise BiomtlError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if args.output_dir or args.engine or args.shard or Path(args.input).is_dir():
        return _annotate_directory(args)
    out = _output_file(args.output, args.overwrite)
    source = Path("<stdin>") if args.input == "-" else Path(args.input)
    raw = sys.stdin.buffer.read() if args.input == "-" else None
    collection, fmt = read_documents(source, args.input_format, raw)
    predictor = Predictor.load(args.model, device=args.device, batch_size=args.batch_size, precision=args.precision)
    keep, tasks = _annotate_options(args)
    annotate(predictor, collection, str(source), tasks, keep)
    text = write_documents(collection, args.format or fmt)
    if out is not None:
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)
    return 0


def _annotate_options(args: argparse.Namespace) -> tuple[set[str], list[str] | None]:
    """``--keep-input-entities`` and ``--tasks`` as :func:`biomtl.annotate.annotate` takes them."""
    from biomtl.annotate import ALL

    keep = {ALL} if args.keep_input_entities == ALL else {t for t in (args.keep_input_entities or "").split(",") if t}
    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
    return keep, tasks


def _annotate_directory(args: argparse.Namespace) -> int:
    """``biomtl annotate MODEL INPUT_DIR --output-dir OUT [--engine ray] [--shard K/N]`` (:mod:`biomtl.scale`)."""
    from biomtl.scale import ShardJob, annotate_directory, parse_shard

    shard = parse_shard(args.shard) if args.shard else None
    if not args.output_dir:
        flag = "--engine" if args.engine else "--shard" if args.shard else None
        need = f"{flag} needs a directory of shards as INPUT and --output-dir" if flag else (
            f"{args.input} is a directory: name the directory for the output shards with --output-dir")
        raise BiomtlError(need)
    if args.output:
        raise BiomtlError("--output: a directory of shards is written with --output-dir, not --output")
    if not Path(args.input).is_dir():
        raise BiomtlError(f"--output-dir: INPUT must be a directory of shards; {args.input} is not a directory")
    if (args.workers is not None or args.ray_address) and args.engine != "ray":
        raise BiomtlError(f"{'--workers' if args.workers is not None else '--ray-address'}: only with --engine ray")
    keep, tasks = _annotate_options(args)
    job = ShardJob(args.model, args.input_format, args.format, tuple(tasks) if tasks else None, frozenset(keep),
                   args.device, args.batch_size, args.precision)
    report = annotate_directory(Path(args.input), Path(args.output_dir), job, args.engine or "local", shard,
                                args.overwrite, args.workers, args.ray_address)
    which = f"shard {args.shard.strip()}: " if shard else ""
    print(f"{which}{len(report.annotated)} shard(s) annotated ({report.documents} documents), "
          f"{len(report.skipped)} already done → {args.output_dir}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from biomtl.export import export_model

    for line in export_model(args.model, args.format, args.output, overwrite=args.overwrite):
        print(line)
    print(f"written: {args.output}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # Before torch first runs: MKL's strict reproducibility, so that a micro-batched text's numbers do not
    # depend on how many texts share its matrix products (docs/serve.md).
    os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
    try:
        import uvicorn  # noqa: F401

        from biomtl.serve import ServeOptions, serve
    except ImportError as e:
        raise BiomtlError(f"biomtl serve needs the serve extra ({e.name} is missing): pip install 'biomtl[serve]'") from None

    if args.batch_size < 1:
        raise BiomtlError(f"--batch-size: must be >= 1, got {args.batch_size}")
    options = ServeOptions(
        max_body_bytes=args.max_body_bytes, max_texts=args.max_texts, max_chars=args.max_chars,
        batching=not args.no_batching, max_wait_ms=args.max_wait_ms, max_batch_texts=args.max_batch_texts,
        model_processes=args.model_processes,
    )
    serve(args.model, args.host, args.port, options, device=args.device, batch_size=args.batch_size,
          precision=args.precision)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from biomtl.experiments.study import run_study

    run_study(args.config, profile=args.profile, seeds=args.seeds, output_dir=args.output_dir,
              data_dirs=_data_dirs(args), overrides=args.overrides, progress=not args.quiet, plan=args.plan)
    return 0


def cmd_pairwise(args: argparse.Namespace) -> int:
    from biomtl.experiments.pairwise import run_pairwise

    run_pairwise(args.config, profile=args.profile, seeds=args.seeds, output_dir=args.output_dir,
                 data_dirs=_data_dirs(args), overrides=args.overrides, progress=not args.quiet,
                 plan=args.plan)
    return 0


def _data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpora", help="directory of the official corpora (else $BIOMTL_CORPORA)")
    p.add_argument("--data", help="directory of prepared task files (else $BIOMTL_DATA or ~/.cache/biomtl/tasks)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biomtl", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_training_commands(sub)
    _add_model_commands(sub)
    return parser


def _predictor_flags(p: argparse.ArgumentParser) -> None:
    """Where and how a loaded model runs (predict, annotate, serve)."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 where the CPU/GPU computes it natively, else fp32")


def _add_data_commands(sub: Any) -> None:
    """``data prepare`` and ``data download``."""
    data = sub.add_parser("data", help="corpus preparation").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("prepare", help="official corpora → BLUE task files with manifests")
    p.add_argument("--corpora", help="directory of the official corpora (else $BIOMTL_CORPORA)")
    p.add_argument("--out", help="output directory (else $BIOMTL_DATA or ~/.cache/biomtl/tasks)")
    p.add_argument("--tasks", help="comma-separated subset of tasks")
    p.add_argument("--overwrite", action="store_true", help="replace existing task directories")
    p.add_argument("--no-verify", action="store_true",
                   help="convert source files that are not the official release's (the manifest says verified: false)")
    p.set_defaults(func=cmd_prepare)

    p = data.add_parser("download", help="fetch the public corpora: sha256-checked, resumable")
    p.add_argument("--corpora", help="directory to download into (else $BIOMTL_CORPORA); created if missing")
    p.add_argument("--tasks", help="comma-separated subset of tasks (default: every public one)")
    p.add_argument("--prepare", action="store_true", help="then run `data prepare` on the directory")
    p.add_argument("--out", help="with --prepare: output directory (else $BIOMTL_DATA or ~/.cache/biomtl/tasks)")
    p.add_argument("--catalogue", help="catalogue JSON to use instead of the shipped one (same format)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_download)


def _add_training_commands(sub: Any) -> None:
    """``validate``, ``train``, ``study`` and ``pairwise``."""
    p = sub.add_parser("validate", help="check dataset, run or study configs (and dataset files); report every problem")
    p.add_argument("configs", nargs="+")
    _data_flags(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("train", help="train one run (single-task, multi-task or fine-tune)")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=1 lr=3e-5")
    p.add_argument("--output-dir")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _data_flags(p)
    p.set_defaults(func=cmd_train)

    for name, func, help_ in (
        ("study", cmd_study, "ST / MTL / MTL-FT over seeds → results.md"),
        ("pairwise", cmd_pairwise, "train every pair of tasks → n×n table and heatmap"),
    ):
        p = sub.add_parser(name, help=help_)
        p.add_argument("config")
        p.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
        p.add_argument("--profile", default="quick", help="a profile of the study config (blue-public.yaml: quick, cpu, cpu-b16, full, paper)")
        p.add_argument("--seeds", type=int, help="number of seeds (default: the profile's)")
        p.add_argument("--output-dir")
        p.add_argument("--quiet", action="store_true")
        p.add_argument("--plan", action="store_true", help="print the runs and their optimizer steps; train nothing")
        _data_flags(p)
        p.set_defaults(func=func)


def _add_model_commands(sub: Any) -> None:
    """What runs a trained model or an encoder: ``evaluate``, ``predict``, ``annotate``, ``serve``, ``export``."""
    for add in (_add_evaluate, _add_predict, _add_annotate, _add_serve, _add_export):
        add(sub)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model directory on dev/test, or an encoder zero-shot (similarity) → one JSON line per task",
        description="Score a saved model directory's tasks on dev or test with the decision rules it stores, or "
        "a pretrained encoder with no training where a zero-shot score is defined (sentence similarity: cosine "
        "of mean-pooled embeddings); other tasks are refused with one line and exit status 2.",
    )
    p.add_argument("source", metavar="MODEL_OR_ENCODER",
                   help="a model directory (runs/x/best), an encoder (HF name or path), or 'default' (the embedded encoder)")
    p.add_argument("--task", help="the task to score (required for an encoder; default for a model: all its tasks)")
    p.add_argument("--split", default="dev", help="dev (default) or test")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", default="auto",
                   help="auto (default: bf16 where the device computes it natively, else fp32), fp32, bf16, fp16")
    p.add_argument("--max-length", type=int, default=None,
                   help="an encoder's max input length in sub-words (default 128); a model directory keeps its own")
    _data_flags(p)
    p.set_defaults(func=cmd_evaluate)


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict", help="raw text or JSONL → JSONL predictions",
        description="Plain text: for a tagging (NER) head and for --task all the whole input is ONE document, "
        "whose entity offsets run across its lines; a sentence or pair head reads one input per line. --lines makes "
        "every non-empty line one record for every head (offsets within the line; id = line number). JSONL is always "
        "one record per line.",
    )
    p.add_argument("model", help="a saved model directory (e.g. runs/x/best)")
    p.add_argument("--task", help="task (head) to use, or 'all' to annotate with every plain-text head in one encoder pass; optional for single-task models")
    p.add_argument("--input", default="-", help="input file, '-' for stdin (default)")
    p.add_argument("--format", choices=["text", "jsonl"], help="input format (default: by file extension, else text)")
    p.add_argument("--lines", action="store_true",
                   help="plain text: one record per line (default: a tagging head and --task all read the whole text "
                   "as one document)")
    p.add_argument("--output", help="output JSONL file (default stdout)")
    p.add_argument("--overwrite", action="store_true")
    _predictor_flags(p)
    p.set_defaults(func=cmd_predict)


def _add_annotate(sub: Any) -> None:
    p = sub.add_parser("annotate", help="documents → entities, relations between them, document labels (all heads)")
    p.add_argument("model", help="a saved model directory (e.g. runs/x/best)")
    p.add_argument("input", help="input file, '-' for stdin")
    p.add_argument("--input-format", choices=["text", "jsonl", "bioc-xml", "bioc-json", "pubtator"],
                   help="default: by file extension (.xml .json .jsonl .pubtator), else by content")
    p.add_argument("--format", choices=["text", "jsonl", "bioc-xml", "bioc-json", "pubtator"],
                   help="output format (default: the input's)")
    p.add_argument("--output", help="output file (default stdout)")
    p.add_argument("--output-dir", help="INPUT is a directory of shards: one output shard per input shard here (docs/scale.md)")
    p.add_argument("--engine", choices=["local", "ray"],
                   help="with --output-dir: this process (local, the default) or a Ray cluster (ray; the ray extra)")
    p.add_argument("--shard", metavar="K/N", help="with --output-dir: only every N-th shard from the K-th (K from 0), e.g. a Slurm array's task")
    p.add_argument("--workers", type=int, help="--engine ray: model actors (default: one per CPU, or per GPU with --device cuda)")
    p.add_argument("--ray-address", help="--engine ray: the cluster (default: $RAY_ADDRESS, a cluster started here, else a new local one)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--tasks", help="comma-separated heads to run (default: every head that reads documents)")
    p.add_argument("--keep-input-entities", nargs="?", const="*", metavar="TYPES",
                   help="use the input's mentions instead of predicting them: of every type, or of these comma-separated types")
    _predictor_flags(p)
    p.set_defaults(func=cmd_annotate)


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="HTTP service and web page for a model (needs the serve extra)")
    p.add_argument("model", help="a saved model directory (e.g. runs/x/best)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, help="largest request body (413 above)")
    p.add_argument("--max-texts", type=int, default=100, help="texts (documents, inputs, pairs) per request")
    p.add_argument("--max-chars", type=int, default=100_000, help="characters of text per request")
    p.add_argument("--no-batching", action="store_true", help="run each request alone, never combined (one at a time per model copy)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long to wait for more requests to batch while some are on their way (a lone one runs at once)")
    p.add_argument("--max-batch-texts", type=int, default=256, help="texts in one combined model call")
    p.add_argument("--model-processes", type=int,
                   help="copies of the model, each in its own process with its share of the CPU threads (a lone "
                        "request gets them all), each taking the next batch when free (default: 2 on a CPU with "
                        "2 cores or more, else 1; docs/serve.md)")
    _predictor_flags(p)
    p.set_defaults(func=cmd_serve)


def _add_export(sub: Any) -> None:
    p = sub.add_parser("export", help="a model as Hugging Face checkpoints (one per task) or one ONNX graph")
    p.add_argument("model", help="a saved model directory (e.g. runs/x/best)")
    p.add_argument("--format", required=True, choices=["hf", "onnx"])
    p.add_argument("--output", required=True, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options (`train run.yaml --quiet epochs=1`).
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    # Under torchrun (docs/scale.md) every rank runs this; rank 0 alone logs, prints results and errors.
    main_rank = os.environ.get("RANK", "0") == "0"
    if not main_rank:
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    logging.basicConfig(
        level=(logging.DEBUG if args.verbose else logging.INFO) if main_rank else logging.WARNING,
        format="biomtl: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("transformers", "httpx", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()  # e.g. the load report about the unused pooler weights
    except ImportError:
        pass
    succeeded = False
    try:
        code = args.func(args)
        succeeded = code == 0
        return code
    except ConfigError as e:
        for p in e.problems if main_rank else []:
            print(f"biomtl: error: {p}", file=sys.stderr)
        return EXIT_USAGE
    except BiomtlError as e:
        if main_rank:
            print(f"biomtl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"biomtl: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    finally:
        if "biomtl.distributed" in sys.modules:  # a torchrun rank leaves its process group
            sys.modules["biomtl.distributed"].teardown(synchronize=succeeded)


def _resume_hint(args: argparse.Namespace) -> str:
    """For an interrupted ``train``: the command line that continues it (from its last checkpoint, or from
    scratch when it had none yet)."""
    if args.command != "train":
        return ""
    argv = ["biomtl", "train", args.config, *args.overrides]
    for flag in ("output_dir", "corpora", "data"):
        if getattr(args, flag, None):
            argv += [f"--{flag.replace('_', '-')}", getattr(args, flag)]
    return f"; continue it with: {shlex.join([*argv, '--resume'])}"


if __name__ == "__main__":
    sys.exit(main())
