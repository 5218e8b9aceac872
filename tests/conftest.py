from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpora_dir() -> Path:
    """The public corpora: ``BIOMTL_CORPORA`` (CI sets it), else ``../shared/data`` beside the repo."""
    value = os.environ.get("BIOMTL_CORPORA")
    path = Path(value) if value else REPO.parent / "shared" / "data"
    if not path.is_dir():
        if value:
            pytest.fail(f"BIOMTL_CORPORA={value} does not exist")
        pytest.skip("public corpora not found; set BIOMTL_CORPORA")
    return path


# ----------------------------------------------------------------------------------------------------------
# A tiny random-weight BERT and four toy tasks, built offline once per session.

WORDS = (
    "the of and in to a with is was for by on that as at from be were this are patients cells "
    "aspirin naloxone clonidine cocaine heparin lithium drug dose effect induced toxicity cancer tumor "
    "disease pain failure renal acute receptor protein gene binding inhibits inhibitor increased reduced"
).split()


def _tiny_vocab() -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("@$-.,;:()[]/%+'\"")
    return special + chars + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + WORDS


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Path of a 2-layer, hidden-32 BERT with random weights and a small word-piece vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    (path / "vocab.txt").write_text("\n".join(_tiny_vocab()) + "\n")
    tokenizer = BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(_tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(path, safe_serialization=True)
    return str(path)


def _toy_sentence(rng, n: int = 8) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def write_toy_tasks(root: Path, n_train: int = 24, seed: int = 0) -> dict[str, Path]:
    """Four small tasks (one per task type) with learnable signal; returns ``{task: config path}``."""
    import random

    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    chem = {"aspirin", "naloxone", "clonidine", "cocaine", "heparin", "lithium"}
    configs = {}
    for split, n in (("train", n_train), ("dev", 8), ("test", 8)):
        # tagging: chemicals are entities
        with open(root / f"ner.{split}.conll", "w") as f:
            for _ in range(n):
                words = _toy_sentence(rng, rng.randint(3, 12))
                prev = "O"
                for w in words:
                    tag = ("I-Chemical" if prev != "O" else "B-Chemical") if w in chem else "O"
                    f.write(f"{w}\t{tag}\n")
                    prev = tag
                f.write("\n")
        # classification with masks: label depends on a cue word
        with open(root / f"rel.{split}.tsv", "w") as f:
            f.write("index\tsentence\tlabel\n")
            for i in range(n):
                cue = rng.choice(["inhibits", "binding", "increased"])
                label = {"inhibits": "CPR:4", "binding": "CPR:3", "increased": "false"}[cue]
                words = _toy_sentence(rng, 4)
                f.write(f"{split}{i}\t@CHEMICAL$ {cue} {' '.join(words)} @GENE$ .\t{label}\n")
        # regression: similarity = number of shared words
        with open(root / f"sts.{split}.tsv", "w") as f:
            f.write("index\tsentence1\tsentence2\tscore\n")
            for i in range(n):
                a = _toy_sentence(rng, 5)
                k = rng.randint(0, 4)
                b = a[:k] + _toy_sentence(rng, 5 - k)
                f.write(f"{split}{i}\t{' '.join(a)}\t{' '.join(b)}\t{k}\n")
        # multilabel with documents
        with open(root / f"hoc.{split}.tsv", "w") as f:
            f.write("index\tdoc_id\tsentence\tlabels\n")
            for i in range(n):
                words = _toy_sentence(rng, 6)
                labels = [name for name, cue in (("cancer", "cancer"), ("pain", "pain")) if cue in words]
                if not labels:
                    labels = ["cancer"]
                    words[0] = "cancer"
                f.write(f"d{i // 2}_s{i % 2}\td{i // 2}\t{' '.join(words)}\t{','.join(labels)}\n")
    specs = {
        "toy-ner": dict(type="tagging", format="conll", ext="conll", prefix="ner",
                        extra="columns: {token: 0, tag: 1}\nlabels: [Chemical]\nmetric: {name: entity_f1}\nmain_metric: f1\n"),
        "toy-rel": dict(type="classification", format="tsv", ext="tsv", prefix="rel",
                        extra='columns: {id: index, text: sentence, label: label}\nlabels: ["CPR:3", "CPR:4", "false"]\n'
                              'markers: [["@CHEMICAL$", "@GENE$"]]\nmetric: {name: classification_f1, args: {exclude: ["false"]}}\nmain_metric: micro_f1\n'),
        "toy-sts": dict(type="regression", format="tsv", ext="tsv", prefix="sts",
                        extra="columns: {id: index, text: sentence1, text_b: sentence2, label: score}\nscore_range: [0, 5]\nmetric: {name: pearson}\nmain_metric: pearson\n"),
        "toy-hoc": dict(type="multilabel", format="tsv", ext="tsv", prefix="hoc",
                        extra="columns: {id: index, doc_id: doc_id, text: sentence, label: labels}\nlabels: [cancer, pain]\nmetric: {name: hoc_f1}\nmain_metric: f1\n"),
    }
    for name, s in specs.items():
        files = "".join(f"  {split}: {root / (s['prefix'] + '.' + split + '.' + s['ext'])}\n" for split in ("train", "dev", "test"))
        path = root / f"{name}.yaml"
        path.write_text(f"name: {name}\ntype: {s['type']}\nformat: {s['format']}\nfiles:\n{files}{s['extra']}")
        configs[name] = path
    return configs


TOY_SPAN_CUES = {"inhibits": "CPR:4", "binding": "CPR:3", "and": "false"}
TOY_SPAN_YAML = """name: {name}
type: span_relation
format: jsonl
files: {{train: {root}/{name}.train.jsonl, dev: {root}/{name}.dev.jsonl, test: {root}/{name}.test.jsonl}}
columns: {{id: id, text: text, entities: entities, label: label}}
labels: ["CPR:3", "CPR:4", "false"]
negative_label: "false"
arguments: [Chemical, Gene]
entity_types: {{Chemical: Chemical, Gene: Gene}}
metric: {{name: classification_f1, args: {{exclude: ["false"]}}}}
main_metric: micro_f1
"""


TOY_CHEMICALS = ["aspirin", "naloxone", "clonidine", "heparin"]
TOY_GENES = ["receptor", "protein"]


def write_toy_entities(root: Path, rng: Any, split: str, n: int, filler: list[str]) -> None:
    """One split of two NER tasks over the same ``n`` random sentences: ``chem.{split}.conll`` tags
    :data:`TOY_CHEMICALS` (Chemical), ``gene.{split}.conll`` tags :data:`TOY_GENES` (Gene)."""
    with open(root / f"chem.{split}.conll", "w") as chem, open(root / f"gene.{split}.conll", "w") as gene:
        for _ in range(n):
            words = [rng.choice(filler + TOY_CHEMICALS + TOY_GENES) for _ in range(rng.randint(4, 10))]
            for w in words:
                chem.write(f"{w}\t{'B-Chemical' if w in TOY_CHEMICALS else 'O'}\n")
                gene.write(f"{w}\t{'B-Gene' if w in TOY_GENES else 'O'}\n")
            chem.write("\n")
            gene.write("\n")


def write_toy_cue_relations(root: Path, rng: Any, split: str, n: int) -> None:
    """One split of a masked relation task, ``rel.{split}.tsv``: ``@CHEMICAL$ cue the @GENE$ .`` labelled by
    its cue word (inhibits: CPR:4, binding: CPR:3, and: false)."""
    with open(root / f"rel.{split}.tsv", "w") as f:
        f.write("index\tsentence\tlabel\n")
        for i in range(n):
            cue = rng.choice(["inhibits", "binding", "and"])
            label = {"inhibits": "CPR:4", "binding": "CPR:3", "and": "false"}[cue]
            f.write(f"{split}{i}\t@CHEMICAL$ {cue} the @GENE$ .\t{label}\n")


def toy_ner_yaml(root: Path, name: str, prefix: str, label: str) -> str:
    """The config of the NER task ``name`` over ``{prefix}.{split}.conll`` (:func:`write_toy_entities`)."""
    files = ", ".join(f"{s}: {root}/{prefix}.{s}.conll" for s in ("train", "dev", "test"))
    return (
        f"name: {name}\ntype: tagging\nformat: conll\nfiles: {{{files}}}\ncolumns: {{token: 0, tag: 1}}\n"
        f"labels: [{label}]\nmetric: {{name: entity_f1}}\nmain_metric: f1\n"
    )


def train_toy_model(tasks: list[Path], encoder: str, out: Path, epochs: int) -> Path:
    """A tiny model trained quickly on toy tasks (batch 8, LR 3e-3, max length 32, one thread); its ``best``."""
    from biomtl.config import RunConfig
    from biomtl.train import train

    config = RunConfig(
        tasks=[str(p) for p in tasks], output_dir=str(out), encoder=encoder, epochs=epochs, batch_size=8, lr=3e-3,
        max_length=32, num_threads=1, device="cpu", save_predictions=False,
    )
    train(config, progress=False)
    return out / "best"


def write_toy_span_relation(root: Path, name: str, chemicals: list[str], genes: list[str], filler: list[str],
                            sizes: tuple[int, int, int] = (48, 12, 12), seed: int = 0) -> Path:
    """A ``span_relation`` task (jsonl rows with two argument spans): ``<filler> chemical cue the gene <filler> .``
    labelled by its cue word; returns its config's path."""
    import json
    import random

    rng = random.Random(seed)
    for split, n in zip(("train", "dev", "test"), sizes, strict=True):
        with open(root / f"{name}.{split}.jsonl", "w") as f:
            for i in range(n):
                cue = rng.choice(list(TOY_SPAN_CUES))
                before = " ".join(rng.choice(filler) for _ in range(rng.randint(0, 3)))
                chem, gene = rng.choice(chemicals), rng.choice(genes)
                prefix = f"{before} " if before else ""
                text = f"{prefix}{chem} {cue} the {gene} {rng.choice(filler)} ."
                c, g = len(prefix), text.index(f" the {gene}") + 5
                entities = [{"start": c, "end": c + len(chem)}, {"start": g, "end": g + len(gene)}]
                f.write(json.dumps({"id": f"{split}{i}", "text": text, "entities": entities, "label": TOY_SPAN_CUES[cue]}) + "\n")
    path = root / f"{name}.yaml"
    path.write_text(TOY_SPAN_YAML.format(name=name, root=root))
    return path


@pytest.fixture(scope="session")
def toy_tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_toy_tasks(tmp_path_factory.mktemp("toy-tasks"))


@pytest.fixture(scope="session")
def long_sts(toy_tasks: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """toy-sts with every test sentence said twice (12 sub-words with [CLS] and [SEP]): a max length of 8
    cuts them."""
    root = tmp_path_factory.mktemp("long-sts")
    source = toy_tasks["toy-sts"]
    test = next(line.split(": ", 1)[1] for line in source.read_text().splitlines() if line.startswith("  test: "))
    header, *rows = Path(test).read_text().splitlines()
    doubled = []
    for row in rows:
        index, a, b, score = row.split("\t")
        doubled.append(f"{index}\t{a} {a}\t{b} {b}\t{score}")
    (root / "sts.test.tsv").write_text("\n".join([header, *doubled]) + "\n")
    config = root / "toy-sts.yaml"
    config.write_text(source.read_text().replace(test, str(root / "sts.test.tsv")))
    return config


@pytest.fixture
def run_config(tiny_encoder: str, toy_tasks: dict[str, Path], tmp_path: Path):
    """A factory for fast RunConfigs on the tiny encoder."""
    from biomtl.config import RunConfig

    def make(tasks: list[str] | None = None, **changes):
        values = dict(
            tasks=[str(toy_tasks[t]) for t in (tasks or list(toy_tasks))],
            output_dir=str(tmp_path / "run"), encoder=tiny_encoder, epochs=2, batch_size=4,
            eval_batch_size=16, lr=1e-3, max_length=32, log_every=2, num_threads=1,
            device="cpu",  # also on a GPU machine: tests/test_accelerated_paths.py asks for CUDA by name
        )
        values.update(changes)
        return RunConfig(**values)

    return make


@pytest.fixture(scope="session")
def prepared_dir(corpora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every preparable task directory (the six BLUE tasks and their -spans forms), prepared once per session
    from the real corpora."""
    from biomtl.corpora import PREPARERS, prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(corpora_dir, out, list(PREPARERS))
    return out
