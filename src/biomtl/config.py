"""Typed, frozen config records, loaded from YAML with ``key=value`` overrides.

Two kinds of config:

* :class:`DatasetSpec` — ``configs/datasets/<task>.yaml``: everything about one task (task type, format,
  files, columns, labels, metric). Adding a dataset in a supported format needs only such a file.
* :class:`RunConfig` — one training run (which tasks, encoder, optimisation, output directory).

Loading never stops at the first problem: every unknown key (with a "did you mean"), wrong type and invalid
value is collected and raised together as one :class:`~biomtl.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from biomtl.datadirs import CORPORA_ENV, DATASETS_ENV, DataDirs
from biomtl.errors import ConfigError, did_you_mean

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SPLITS = ("train", "dev", "test")
FORMATS = ("conll", "tsv", "jsonl")


# ----------------------------------------------------------------------------------------------------------
# Generic typed loading


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is None and isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "null")


def _check_type(value: Any, tp: Any) -> bool:
    """True when ``value`` (parsed YAML) fits the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(_check_type(v, arg) for v in value)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            _check_type(k, key_tp) and _check_type(v, val_tp) for k, v in value.items()
        )
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_bool(v) for v in value)
    return False


def build(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    """Build dataclass ``cls`` from a mapping, appending every problem to ``problems``.

    ``where`` prefixes messages (``"configs/datasets/x.yaml"`` or ``"x.yaml: metric"``). Returns ``None``
    when the record cannot be built at all.
    """
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a mapping, got {type(data).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            problems.append(f"{where}: unknown key '{key}'{did_you_mean(str(key), list(fields))}")
            continue
        tp = hints[key]
        nested = _nested_dataclass(tp)
        if nested is not None and isinstance(value, dict):
            built = build(nested, value, f"{where}: {key}", problems)
            if built is not None:
                kwargs[key] = built
            continue
        if isinstance(value, int) and not isinstance(value, bool) and _check_type(1.0, tp) and not _check_type(1, tp):
            value = float(value)
        if isinstance(value, str) and _check_type(1.0, tp) and not _check_type("", tp):
            # PyYAML reads 1e-3 (no dot) as a string; accept any float literal.
            try:
                value = float(value)
            except ValueError:
                pass
        if not _check_type(value, tp):
            hint = " (quote yes/no/true/false to keep them as text)" if "bool" in repr(value) or _has_bool(value) else ""
            problems.append(
                f"{where}: key '{key}' must be {_type_name(tp)}, got {type(value).__name__} {value!r}{hint}"
            )
            continue
        kwargs[key] = value
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    for name in missing:
        problems.append(f"{where}: missing required key '{name}'")
    if any(name not in kwargs for name in missing) or any(k in data and k not in kwargs for k in fields):
        return None
    return cls(**kwargs)


def _nested_dataclass(tp: Any) -> type | None:
    if dataclasses.is_dataclass(tp):
        return tp  # type: ignore[return-value]
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen})", key_node.start_mark
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """The top-level mapping of a YAML file; a file that is missing, not UTF-8, not YAML or has a key twice in
    one mapping raises :class:`ConfigError` naming ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[e.start]:02x})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str], where: str = "override") -> dict:
    """Apply ``key=value`` (or ``a.b=value``) overrides; values are parsed as YAML scalars/lists."""
    data = dict(data)
    problems = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"{where} '{item}': expected key=value")
            continue
        key, raw = item.split("=", 1)
        try:
            value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw != "" else None
        except (yaml.YAMLError, ValueError, RecursionError):  # ValueError: a date such as 2024-02-30
            value = raw
        *parents, leaf = names = key.strip().split(".")
        if not all(names):
            problems.append(f"{where} '{item}': expected key=value (a key such as epochs or loss_weights.bc2gm)")
            continue
        target = data
        for depth, p in enumerate(parents):
            inner = target.get(p)
            if inner is not None and not isinstance(inner, dict):
                path = ".".join(names[: depth + 1])
                problems.append(f"{where} '{item}': {path} has no keys ({type(inner).__name__} value); set it whole ({path}=...)")
                break
            target[p] = dict(inner or {})
            target = target[p]
        else:
            target[leaf] = value
    if problems:
        raise ConfigError(problems)
    return data


# ----------------------------------------------------------------------------------------------------------
# Dataset specs


@dataclass(frozen=True)
class MetricSpec:
    """Which metric scores a task, and its arguments (``exclude: ["false"]``)."""

    name: str
    """The metric's name; the table below lists each one with its arguments and scores. Example: `micro_f1`"""
    args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the metric, checked against its signature. Example: `{exclude: ["false"]}`"""


@dataclass(frozen=True)
class SplitFile:
    """One split's file, found when its dataset config is loaded (:func:`resolve_files`)."""

    template: str  # as the config gives it
    path: Path | None  # absolute; None when the template cannot be resolved (``problem`` says why)
    header: bool
    columns: dict[str, str | int]
    problem: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """One task: a configured dataset. Labels are listed here and nowhere else.

    For ``tagging`` tasks ``labels`` are entity types (``[Chemical]``); the tag set ``O``/``B-*``/``I-*`` is
    derived. For ``regression`` there are no labels; ``score_range`` bounds the gold scores.
    """

    name: str
    """The task's name: its head's key in a model, the name `predict --task` takes, and what a run's
    `tasks:` may name (a name is looked up beside the run file, then in `BIOMTL_DATASETS`, then among the
    shipped configs). Example: `my-ner`"""
    type: str
    """The task type: `tagging` (NER), `classification` (sentences, pairs, relations), `multilabel`
    (document labels) or `regression` (similarity scores). Example: `tagging`"""
    format: str
    """The files' format: `conll` (one token per line, a blank line between sentences), `tsv` (one example
    per line, tab-separated, taken literally) or `jsonl` (one JSON object per line). Example: `tsv`"""
    files: dict[str, str | dict[str, Any]]
    """One file per split (`train`, `dev`, `test`; `train` is required, and `dev` unless
    `dev_from_train`). A path may start with `{corpora}` (the corpus directory: `--corpora` or
    `BIOMTL_CORPORA`) or `{prepared}` (`--data`, `BIOMTL_DATA` or `~/.cache/biomtl/tasks`); any other
    relative path is relative to this YAML file. An entry may be a mapping `{path: ..., header: ...,
    columns: ...}` that overrides `header` and `columns` for that file. Example: `{train: data/train.tsv,
    dev: data/dev.tsv, test: {path: data/test.tsv, header: false, columns: {text: 0, label: 1}}}`"""
    metric: MetricSpec
    """How the task is scored: `{name: ..., args: {...}}` (see the metrics table below). Example: `{name:
    classification_f1, args: {exclude: ["false"]}}`"""
    main_metric: str
    """The score (one of the metric's scores) that model selection reads on dev; a run selects on the mean
    of its tasks' main metrics. Example: `micro_f1`"""
    labels: list[str] = field(default_factory=list)
    """The only place labels are listed: class labels (classification, multilabel) or entity types
    (tagging: `B-`/`I-`/`O` tags are derived). Every label in the data must be declared here. YAML
    integers are taken in their string form (`[0, 1]` is `["0", "1"]`); quote yes/no/true/false, which
    YAML reads as booleans. Regression has none. Example: `["CPR:3", "CPR:4", "false"]`"""
    columns: dict[str, str | int] = field(default_factory=dict)
    """Where each role is in a row: header names (with `header: true`), 0-based column numbers, or JSON
    field names. Roles: `text` and `label` (required for tsv/jsonl), `text_b` (the second text of a pair),
    `id`, `doc_id` (the document an example belongs to), `entities` (span_relation: the two argument spans); conll reads `token` (default 0) and `tag`
    (default the last column). Example: `{id: index, text: sentence, label: label}`"""
    header: bool = True
    """Whether a tsv file's first line names its columns. Example: `false`"""
    label_separator: str = ","
    """Multilabel: what separates one example's labels in the label column. Example: `";"`"""
    bare_tag_type: str | None = None
    """Tagging: the entity type of a bare `B`/`I` tag (files that tag without a type). Example: `Disorder`"""
    markers: list[list[str]] = field(default_factory=list)
    """Relation tasks: the entity masks a sentence carries, as alternative combinations. Every row is
    checked to carry all masks of one combination (`file:line` names a row that does not), and `predict`
    checks its inputs the same way. Example: `[["@CHEMICAL$", "@GENE$"], ["@CHEM-GENE$"]]`"""
    # Relation tasks, for `biomtl annotate`: the argument types, in the order of markers' first combination
    # ([Chemical, Gene]), and which entity types (NER heads' labels, or the input's annotation types) are
    # mentions of which argument type ({GENE: Gene, Chemical: Chemical}).
    arguments: list[str] = field(default_factory=list)
    """Relation tasks, for `biomtl annotate`: the argument types, one per mask of the first `markers`
    combination and in its order. Example: `[Chemical, Gene]`"""
    entity_types: dict[str, str] = field(default_factory=dict)
    """Relation tasks, for `biomtl annotate`: which entity types (NER heads' labels, or the input's
    annotation types) are mentions of which argument type. Example: `{Chemical: Chemical, GENE: Gene,
    Gene: Gene}`"""
    score_range: list[float] | None = None
    """Regression: `[low, high]`; every gold score must lie in it. Example: `[0, 4]`"""
    negative_label: str | None = None
    """Relation tasks: the label that means "no relation" (one of `labels`); `biomtl annotate` reports no
    relation for it. Example: `"false"`"""
    description: str = ""
    """What the task is, for people (saved in model directories). Example: `Gene-disease associations from
    our lab.`"""
    citation: str = ""
    """Where the data comes from, for people. Example: `Smith et al. 2024`"""
    dev_from_train: float | None = None
    """With no `dev` file: the fraction of train held out as dev (seeded, the same rows in every run;
    `validate` counts them). Example: `0.1`"""
    unique_ids: bool = True
    """Whether an `id` may appear only once per file; `false` lets an id repeat with another label (never
    the same one), as BLUE's ChemProt lists a pair once per relation group. Example: `false`"""
    restricted: bool = False
    """The data needs a data-use agreement and is never shipped or downloaded. Example: `true`"""
    config_path: str | None = None
    # Each split's file with its path resolved, set when the config is loaded (resolve_files).
    _files: dict[str, SplitFile] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        """A JSON-able description (saved inside model directories)."""
        data = dataclasses.asdict(self)
        data.pop("config_path")
        data.pop("_files")
        return data

    def file(self, split: str) -> SplitFile:
        """Where ``split``'s rows are, as resolved when the config was loaded. A spec that was not loaded from
        a config file (a saved model's) is resolved against the environment's directories."""
        if split not in self.files:
            raise ConfigError(f"{self.config_path}: files: no '{split}' split")
        found = (self._files or resolve_files(self, DataDirs.from_env()))[split]
        if found.path is None:
            raise ConfigError(str(found.problem))
        return found

    @classmethod
    def from_dict(cls, data: dict, where: str = "task spec") -> DatasetSpec:
        problems: list[str] = []
        spec = build(cls, data, where, problems)
        if problems:
            raise ConfigError(problems)
        return spec


SHIPPED_DATASETS = REPO_CONFIGS / "datasets"


def labels_as_text(data: dict) -> dict:
    """A dataset config's mapping with YAML integers among ``labels`` (and as ``negative_label``) in their string
    form: ``labels: [0, 1]`` means the labels "0" and "1", as the data files spell them. Booleans are left for
    the type check to refuse (YAML reads yes/no/on/off/true/false alike, so the spelling is lost); its message
    says to quote them."""

    def text(value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    data = dict(data)
    if isinstance(data.get("labels"), list):
        data["labels"] = [text(v) for v in data["labels"]]
    if "negative_label" in data:
        data["negative_label"] = text(data["negative_label"])
    return data


def find_dataset_config(name_or_path: str, data_dirs: DataDirs | None = None) -> Path:
    """The dataset config a run or study names. A path (``*.yaml``) that is relative resolves against the
    naming file's directory (``data_dirs.base``; without one, the working directory). A name, ``my-ner``, is
    ``my-ner.yaml`` beside that file, else in a ``BIOMTL_DATASETS`` directory, else a shipped config
    (``configs/datasets/``, with its subfolders such as ``clinical/``).
    """
    data_dirs = data_dirs or DataDirs.from_env()
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        return candidate if candidate.is_absolute() or data_dirs.base is None else data_dirs.base / candidate
    searched = [*([data_dirs.base] if data_dirs.base else []), *data_dirs.datasets]
    for path in [d / f"{name_or_path}.yaml" for d in searched] + [
        SHIPPED_DATASETS / f"{name_or_path}.yaml", *sorted(SHIPPED_DATASETS.glob(f"*/{name_or_path}.yaml"))
    ]:
        if path.is_file() and not _names_tasks(path):
            return path
    known = sorted({p.stem for d in data_dirs.datasets for p in d.glob("*.yaml")} | {p.stem for p in SHIPPED_DATASETS.rglob("*.yaml")})
    nearby = [p.stem for p in data_dirs.base.glob("*.yaml")] if data_dirs.base else []
    hint = did_you_mean(name_or_path, nearby + known, None) or did_you_mean(name_or_path, known, "tasks")
    looked = [f"{data_dirs.base} (beside the config)"] if data_dirs.base else []
    looked += [f"{d} ({DATASETS_ENV})" for d in data_dirs.datasets] + [f"{SHIPPED_DATASETS} (shipped)"]
    raise ConfigError(f"tasks: no dataset config found for '{name_or_path}'{hint} (looked in {', '.join(looked)})")


def _names_tasks(path: Path) -> bool:
    """Whether a YAML file is a run or study config (it names ``tasks``, it has no ``type``): not a dataset config,
    even where its name is a task's (``configs/runs/hoc.yaml`` beside which ``tasks: [hoc]`` is looked up)."""
    data = read_yaml(path)
    return "tasks" in data and "type" not in data


def check_dataset_spec(spec: DatasetSpec, where: str, task_types: list[str]) -> list[str]:
    """Static checks that need no data files and no task type's knowledge: the type is one of
    ``task_types``; format, metric, splits and labels are well-formed. Each task type adds its own checks
    (:func:`biomtl.tasks.spec_problems`, which :func:`biomtl.tasks.load_dataset_spec` runs)."""
    from biomtl import metrics

    problems = []
    if spec.type not in task_types:
        problems.append(f"{where}: type: unknown task type '{spec.type}'{did_you_mean(spec.type, task_types)}")
    if spec.format not in FORMATS:
        problems.append(f"{where}: format: unknown format '{spec.format}'{did_you_mean(spec.format, list(FORMATS))}")
    for split in spec.files:
        if split not in SPLITS:
            problems.append(f"{where}: files: unknown split '{split}'{did_you_mean(split, list(SPLITS))}")
    if "train" not in spec.files:
        problems.append(f"{where}: files: the 'train' split is required")
    if "dev" not in spec.files and not spec.dev_from_train:
        problems.append(f"{where}: files: a 'dev' split is required (or set dev_from_train: 0.1)")
    if spec.dev_from_train is not None and not 0 < spec.dev_from_train < 1:
        problems.append(f"{where}: dev_from_train: a fraction in (0, 1), got {spec.dev_from_train}")
    for split, entry in spec.files.items():
        template = entry.get("path") if isinstance(entry, dict) else entry
        if isinstance(template, str) and (problem := placeholder_problem(template)):
            problems.append(f"{where}: files.{split}: {problem}")
        if isinstance(entry, dict):
            unknown = [k for k in entry if k not in ("path", "header", "columns")]
            for k in unknown:
                problems.append(f"{where}: files.{split}: unknown key '{k}'{did_you_mean(k, ['path', 'header', 'columns'])}")
            if not isinstance(entry.get("path"), str):
                problems.append(f"{where}: files.{split}: 'path' is required")
    if spec.metric.name not in metrics.METRICS:
        problems.append(
            f"{where}: metric.name: unknown metric '{spec.metric.name}'"
            f"{did_you_mean(spec.metric.name, list(metrics.METRICS))}"
        )
    else:
        problems.extend(f"{where}: {p}" for p in metrics.metric_problems(spec.metric.name, spec.metric.args))
        keys = metrics.SCORE_KEYS[spec.metric.name]
        if spec.main_metric not in keys:
            problems.append(
                f"{where}: main_metric: '{spec.main_metric}' is not a score of metric '{spec.metric.name}'"
                f"{did_you_mean(spec.main_metric, list(keys), 'scores')}"
            )
    if len(set(spec.labels)) != len(spec.labels):
        dup = sorted({x for x in spec.labels if spec.labels.count(x) > 1})
        problems.append(f"{where}: labels: duplicate label(s) {', '.join(dup)}")
    if spec.negative_label is not None and spec.negative_label not in spec.labels:
        problems.append(f"{where}: negative_label: '{spec.negative_label}' is not in labels")
    problems.extend(f"{where}: {p}" for p in argument_problems(spec))
    if spec.score_range is not None and (len(spec.score_range) != 2 or spec.score_range[0] >= spec.score_range[1]):
        problems.append(f"{where}: score_range: expected [low, high] with low < high")
    return problems


def argument_problems(spec: DatasetSpec) -> list[str]:
    """Problems of a relation task's ``arguments`` and ``entity_types``: one argument type per mask of the
    first ``markers`` combination, every entity type mapped to a declared argument type, and every argument
    type reachable from some entity type."""
    if not spec.arguments and not spec.entity_types:
        return []
    problems = []
    if not spec.markers and "entities" not in spec.columns:
        problems.append("arguments: only relation tasks (with markers: or columns.entities) declare argument types")
    elif spec.markers and len(spec.arguments) != len(spec.markers[0]):
        problems.append(
            f"arguments: {len(spec.arguments)} argument type(s) for the {len(spec.markers[0])} masks of "
            f"markers' first combination ({', '.join(spec.markers[0])})"
        )
    elif not spec.markers and len(spec.arguments) != 2:
        problems.append(f"arguments: {len(spec.arguments)} argument type(s) for the two entities of a row")
    for entity_type, argument in spec.entity_types.items():
        if argument not in spec.arguments:
            hint = did_you_mean(argument, spec.arguments, "argument types") if spec.arguments else " (declare arguments:)"
            problems.append(f"entity_types.{entity_type}: unknown argument type '{argument}'{hint}")
    for argument in dict.fromkeys(spec.arguments):
        if argument not in spec.entity_types.values():
            problems.append(f"entity_types: no entity type is mapped to argument type '{argument}'")
    return problems


PLACEHOLDERS = ("corpora", "prepared")


def placeholder_problem(template: str) -> str | None:
    """What is wrong with the ``{...}`` placeholders of a ``files`` path, or ``None``: only ``{corpora}`` and
    ``{prepared}`` are known, and a brace must open or close one (``{{``/``}}`` for a literal brace)."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
        bad = [name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
               for name, spec, conv in fields if name not in PLACEHOLDERS or spec or conv]
    except ValueError as e:
        return f"'{template}': {e} (a {{...}} placeholder is {{corpora}} or {{prepared}})"
    if bad:
        return f"'{template}': unknown placeholder {{{bad[0]}}} (known: {{corpora}}, {{prepared}})"
    return None


def resolve_files(spec: DatasetSpec, data_dirs: DataDirs) -> dict[str, SplitFile]:
    """Each split's file: ``{corpora}``/``{prepared}`` expanded from ``data_dirs`` (whose directories are absolute),
    any other relative path taken relative to the config file. A template that cannot be resolved keeps its
    reason, raised when that split is read (so a config validates statically without a corpus directory)."""
    resolved = {}
    for split, entry in spec.files.items():
        options = entry if isinstance(entry, dict) else {}
        template = options.get("path") if isinstance(entry, dict) else entry
        header, columns = options.get("header", spec.header), options.get("columns", spec.columns)
        if not isinstance(template, str):
            problem: str | None = f"{split}: 'path' is required"
        elif "{corpora}" in template and data_dirs.corpora is None:
            problem = f"'{template}' needs the corpus directory: pass --corpora DIR or set {CORPORA_ENV}"
        else:
            problem = placeholder_problem(template)
        if problem is not None or not isinstance(template, str):
            resolved[split] = SplitFile(str(template), None, header, columns, f"{spec.config_path}: files: {problem}")
            continue
        path = Path(template.format(corpora=data_dirs.corpora, prepared=data_dirs.prepared))
        if not path.is_absolute() and spec.config_path:
            path = Path(spec.config_path).parent / path
        resolved[split] = SplitFile(template, path.absolute(), header, columns)
    return resolved


def with_files(spec: DatasetSpec, data_dirs: DataDirs) -> DatasetSpec:
    """``spec`` with its files resolved against ``data_dirs`` (for a spec that was not loaded from its config, such
    as a saved model's)."""
    return dataclasses.replace(spec, _files=resolve_files(spec, data_dirs))


# ----------------------------------------------------------------------------------------------------------
# Run configs

SAMPLING = ("proportional", "temperature", "round_robin")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
POOLING = ("cls", "mean")
ANCHOR_MEASURES = ("cosines", "embeddings")  # the keys of biomtl.anchor.MEASURES (no torch here)
ANCHOR_TO = ("start", "encoder")  # what the anchor holds to: the run's starting encoder, or its `encoder` untrained
SIMILARITY = ("cross", "biencoder")  # text-pair similarity strategies (biomtl.tasks.regression); a run may say auto
DEFAULT_MAX_LENGTH = 128  # sub-words per sequence, [CLS] and [SEP] included
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")  # whether it is available: biomtl.inference


@dataclass(frozen=True)
class RunConfig:
    """One training run. Single-task, multi-task and fine-tune runs differ only in these values.

    >>> RunConfig(tasks=["biosses"], output_dir="runs/biosses").epochs
    3
    """

    tasks: list[str]
    output_dir: str = ""  # required by train; `biomtl train --output-dir` may give it instead
    encoder: str | None = None
    init_from: str | None = None
    keep_heads: bool = False
    seed: int = 42
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 128
    lr: float = 5e-5
    head_lr: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.1
    max_length: int = DEFAULT_MAX_LENGTH
    pooling: str = "cls"
    similarity: str = "auto"
    sampling: str = "proportional"
    temperature: float = 2.0
    loss_weights: dict[str, float] = field(default_factory=dict)
    geometry_anchor: float = 0.0  # > 0: hold the pairwise cosines of pooled embeddings (biomtl.anchor)
    anchor_measure: str = "cosines"  # or embeddings: hold each text's pooled embedding (biomtl.anchor)
    anchor_texts: str | None = None  # a task: the anchor reads its training texts, not each batch's
    anchor_to: str = "start"  # or encoder: a fine-tune (init_from) is held to `encoder` as pretrained, not its start
    max_train_examples: int | None = None
    max_eval_examples: int | None = None  # caps dev and, with cap_test, test
    cap_test: bool = True  # false: max_eval_examples caps dev only and every test example is scored
    checkpoint_every: int = 0
    log_every: int = 20
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    num_threads: int | None = None
    group_by_length: bool = True
    pack: bool = False  # the encoder reads each batch's texts packed into one row, without padding (biomtl.packing)
    save_predictions: bool = True
    evaluate_test: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> list[str]:
        """Every problem with the values, each naming its key."""
        p = []
        if not self.tasks:
            p.append("tasks: at least one task is required")
        if len(set(self.tasks)) != len(self.tasks):
            p.append("tasks: a task is listed twice")
        for key in ("epochs", "batch_size", "eval_batch_size", "max_length"):
            if getattr(self, key) < 1:
                p.append(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.max_length < 8:
            p.append(f"max_length: must be >= 8, got {self.max_length}")
        for key in ("lr", "grad_clip", "temperature"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                p.append(f"{key}: must be a positive number, got {value}")
        if self.head_lr is not None and not self.head_lr > 0:
            p.append(f"head_lr: must be a positive number, got {self.head_lr}")
        if not 0 <= self.warmup < 1:
            p.append(f"warmup: a fraction of the steps in [0, 1), got {self.warmup}")
        if not 0 <= self.dropout < 1:
            p.append(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.weight_decay < 0:
            p.append(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not (self.geometry_anchor >= 0 and math.isfinite(self.geometry_anchor)):
            p.append(f"geometry_anchor: must be a number >= 0, got {self.geometry_anchor}")
        for key, options in (
            ("sampling", SAMPLING), ("precision", PRECISIONS), ("pooling", POOLING), ("similarity", ("auto", *SIMILARITY)),
            ("anchor_measure", ANCHOR_MEASURES), ("anchor_to", ANCHOR_TO),
        ):
            value = getattr(self, key)
            if value not in options:
                p.append(f"{key}: unknown value '{value}'{did_you_mean(value, list(options), 'values')}")
        if self.anchor_texts is not None and self.anchor_texts not in self.tasks:
            p.append(f"anchor_texts: '{self.anchor_texts}' is not one of the run's tasks ({', '.join(self.tasks)})")
        for key, default in (("anchor_texts", None), ("anchor_to", "start")):
            if getattr(self, key) != default and not self.geometry_anchor > 0:
                p.append(f"{key}: needs geometry_anchor > 0 (the anchor's weight)")
        for task in self.loss_weights:
            if task not in self.tasks:
                p.append(f"loss_weights: '{task}' is not one of the run's tasks ({', '.join(self.tasks)})")
        for task, w in self.loss_weights.items():
            if not w >= 0:
                p.append(f"loss_weights.{task}: must be >= 0, got {w}")
        for key in ("max_train_examples", "max_eval_examples", "num_threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                p.append(f"{key}: must be >= 1 or null, got {value}")
        if self.checkpoint_every < 0 or self.log_every < 1:
            p.append("checkpoint_every: must be >= 0 and log_every >= 1")
        if self.keep_heads and not self.init_from:
            p.append("keep_heads: needs init_from (a model directory to take the heads from)")
        if not DEVICE_NAME.fullmatch(self.device):
            p.append(f"device: unknown device '{self.device}'; use auto, cpu, cuda, cuda:N or mps")
        if self.pack and self.compile:
            p.append("pack: packed texts change shape every batch, which compile: true cannot follow; choose one")
        return p

    @classmethod
    def from_dict(cls, data: dict, where: str = "run config") -> RunConfig:
        problems: list[str] = []
        config = build(cls, data, where, problems)
        if config is not None:
            problems.extend(f"{where}: {msg}" for msg in config.validate())
        if problems:
            raise ConfigError(problems)
        return config

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """``biomtl train CONFIG key=value ...``"""
    data = apply_overrides(read_yaml(path), overrides or [])
    return RunConfig.from_dict(data, str(path))
