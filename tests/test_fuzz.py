"""Property-based fuzzing of everything that reads user input: the config loader, the override parser, each
data reader (TSV, JSON lines, CoNLL) and ``Predictor.predict``.

The property is the contract of docs/bad-inputs.md: for any input, either a result, or a
:class:`~biomtl.errors.BiomtlError` whose message is one line. Never another exception (a traceback for the
user). Each test is bounded: 50 examples, derandomised so that the default suite stays deterministic (run with
``--hypothesis-seed=N`` and ``derandomize`` off to explore further).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_toy_tasks
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biomtl.config import RunConfig, apply_overrides, load_run_config, read_yaml
from biomtl.errors import BiomtlError

FUZZ = settings(
    max_examples=50, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def one_line_or_result(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(...)``'s result, or ``None`` when it raised a BiomtlError with a one-line message."""
    try:
        return call(*args, **kwargs)
    except BiomtlError as e:
        message = str(e)
        assert message and len(message.splitlines()) == 1 and "\n" not in message and "\r" not in message, repr(message)
        return None


# ----------------------------------------------------------------------------------------------------------
# Strategies

# Text as users (and damaged files) produce it: any code point, surrogates included, plus the characters that
# matter to the parsers.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)
SPECIAL = st.sampled_from(["\t", "\n", "\r", "\r\n", "\x00", "\u2028", '"', "'", ":", "-", "#", "{", "}", "[", "]",
                           ",", "&", "*", "!", "|", ">", "%", "@", "`", "=", ".", " ", "\ufeff", "\ud800", "é"])
PARSER_TEXT = st.lists(st.one_of(SPECIAL, ANY_TEXT, st.sampled_from(
    ["tasks", "epochs", "lr", "output_dir", "B-Chemical", "O", "I-Chemical", "CPR:3", "false", "@CHEMICAL$", "@GENE$",
     "index", "sentence", "label", "score", "text", "text_b", "id", "nan", "1e-3", "-1", "true", "null", "~"]
)), max_size=40).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)
FIELDS = st.sampled_from(["id", "text", "text_b", "entities", "start", "end", "type", "mask"])
ENTITY = st.dictionaries(st.sampled_from(["start", "end", "type", "mask"]), st.integers(-3, 40) | JSON_VALUES, max_size=4)
INPUTS = st.one_of(
    ANY_TEXT,
    PARSER_TEXT,
    JSON_VALUES,
    st.dictionaries(FIELDS, JSON_VALUES, max_size=4),
    st.fixed_dictionaries({"text": ANY_TEXT | PARSER_TEXT}, optional={"id": JSON_VALUES, "text_b": ANY_TEXT | JSON_VALUES,
                                                                       "entities": st.lists(ENTITY, max_size=3) | JSON_VALUES}),
)


def _write(path: Path, text: str) -> None:
    """Generated text, surrogates as the bytes a damaged file would hold."""
    path.write_bytes(text.encode("utf-8", "surrogatepass"))


# ----------------------------------------------------------------------------------------------------------
# Configs and overrides


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(text=st.one_of(PARSER_TEXT, ANY_TEXT, st.binary(max_size=80).map(lambda b: b.decode("latin-1"))))
def test_config_loader(text: str, scratch: Path) -> None:
    path = scratch / "run.yaml"
    _write(path, text)
    data = one_line_or_result(read_yaml, path)
    assert data is None or isinstance(data, dict)
    one_line_or_result(load_run_config, path)


@FUZZ
@given(overrides=st.lists(st.one_of(PARSER_TEXT, ANY_TEXT, st.builds(
    lambda k, v: f"{k}={v}", st.sampled_from(["epochs", "lr", "tasks", "loss_weights.toy", "device", "max_length",
                                              "tasks.x", "foo.bar", "", ".", "a..b", "seed"]), PARSER_TEXT,
)), max_size=4))
def test_override_parser(overrides: list[str]) -> None:
    base = {"tasks": ["toy"], "output_dir": "out", "epochs": 1}
    data = one_line_or_result(apply_overrides, base, overrides)
    if data is not None:
        one_line_or_result(RunConfig.from_dict, data, "run.yaml")


# ----------------------------------------------------------------------------------------------------------
# Data readers


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("fuzz-tasks")
    return root, write_toy_tasks(root, n_train=4)


def _lines(draw_text: st.SearchStrategy[str], sep: str) -> st.SearchStrategy[str]:
    """File contents: lines of fields joined by ``sep``, with the odd stray character."""
    return st.lists(st.lists(draw_text, min_size=1, max_size=5).map(sep.join), max_size=8).map("\n".join)


FIELD = st.one_of(PARSER_TEXT, st.sampled_from(["train0", "@CHEMICAL$ binds @GENE$ .", "false", "aspirin", "B-Chemical", "3"]))
READER_INPUTS = {
    "toy-rel": st.one_of(_lines(FIELD, "\t").map(lambda body: "index\tsentence\tlabel\n" + body), PARSER_TEXT),
    "toy-sts": st.one_of(_lines(FIELD, "\t").map(lambda body: "index\tsentence1\tsentence2\tscore\n" + body), PARSER_TEXT),
    "toy-hoc": st.one_of(_lines(FIELD, "\t").map(lambda body: "index\tdoc_id\tsentence\tlabels\n" + body), PARSER_TEXT),
    "toy-ner": st.one_of(_lines(FIELD, "\t"), _lines(FIELD, " "), PARSER_TEXT),
    "toy-pairs": st.one_of(
        st.lists(st.one_of(JSON_VALUES.map(json.dumps), st.dictionaries(
            st.sampled_from(["id", "text", "text_b", "score"]), JSON_VALUES).map(json.dumps), PARSER_TEXT), max_size=5).map("\n".join),
    ),
}


def _pairs_task(root: Path) -> Path:
    path = root / "toy-pairs.yaml"
    path.write_text(
        f"name: toy-pairs\ntype: regression\nformat: jsonl\nfiles:\n  train: {root / 'pairs.train.jsonl'}\n"
        f"  dev: {root / 'pairs.train.jsonl'}\ncolumns: {{id: id, text: text, text_b: text_b, label: score}}\n"
        "score_range: [0, 5]\nmetric: {name: pearson}\nmain_metric: pearson\n"
    )
    return path


@pytest.mark.parametrize("task", list(READER_INPUTS))
def test_readers(task: str, toy_dir: tuple[Path, dict[str, Path]]) -> None:
    from biomtl.data.readers import read_split
    from biomtl.tasks import load_dataset_spec

    root, configs = toy_dir
    config = _pairs_task(root) if task == "toy-pairs" else configs[task]
    spec = load_dataset_spec(config)
    train = {"toy-ner": "ner", "toy-rel": "rel", "toy-sts": "sts", "toy-hoc": "hoc"}
    path = root / ("pairs.train.jsonl" if task == "toy-pairs" else f"{train[task]}.train.{spec.format}")

    @FUZZ
    @given(content=READER_INPUTS[task])
    def check(content: str) -> None:
        _write(path, content)
        examples = one_line_or_result(read_split, spec, "train")
        assert examples is None or isinstance(examples, list)

    check()


# ----------------------------------------------------------------------------------------------------------
# Predictor.predict


@pytest.fixture(scope="module")
def predictor(tiny_encoder: str, toy_tasks: dict[str, Path]):
    """A tiny untrained model with one head per task type (predictions need not be good, only well-formed)."""
    from biomtl.model import MultiTaskModel
    from biomtl.predict import Predictor
    from biomtl.tasks import load_dataset_spec

    specs = {name: load_dataset_spec(path) for name, path in toy_tasks.items()}
    model = MultiTaskModel.from_encoder(tiny_encoder, specs, max_length=32, similarity="cross")
    return Predictor(model, batch_size=4, precision="fp32")


@pytest.mark.parametrize("task", ["toy-ner", "toy-rel", "toy-sts", "toy-hoc"])
def test_predictor(task: str, predictor) -> None:
    @FUZZ
    @given(inputs=st.lists(INPUTS, min_size=1, max_size=3))
    def check(inputs: list[Any]) -> None:
        results = one_line_or_result(predictor.predict, task, inputs, source="input.jsonl")
        if results is not None:
            assert len(results) == len(inputs)
            json.dumps(results, ensure_ascii=False).encode("utf-8")  # what predict --output writes

    check()
