"""``geometry_anchor``: a term that holds the pairwise cosines of mean-pooled embeddings to those of the
encoder the run started from (:mod:`biomtl.anchor`), so that other tasks' training moves a bi-encoder's
space less."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from biomtl.anchor import MEASURES, GeometryAnchor, embedding_loss, geometry_loss, mean_pooled
from biomtl.checkpoint import CHECKPOINT
from biomtl.config import ANCHOR_MEASURES, RunConfig
from biomtl.errors import ConfigError
from biomtl.model import MultiTaskModel, load_encoder
from biomtl.train import train

TEXTS = ["aspirin lowers the risk", "heparin is given daily", "the cells were lysed", "no change was seen",
         "lithium and naloxone", "a dose of clonidine", "cocaine use was reported", "patients were followed"]


def test_the_loss_is_zero_for_the_same_geometry_and_grows_with_a_change() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert geometry_loss(x, x).item() == pytest.approx(0.0, abs=1e-10)
    assert geometry_loss(3.0 * x @ rotation, x).item() == pytest.approx(0.0, abs=1e-10)  # turned and scaled
    assert geometry_loss(x + 0.5 * torch.randn(6, 16), x).item() > 1e-3
    assert geometry_loss(x[:1], x[:1]).item() == 0.0  # one row has no pairs


def test_the_embedding_measure_is_zero_for_the_same_directions_only() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16))
    assert embedding_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert embedding_loss(3.0 * x, x).item() == pytest.approx(0.0, abs=1e-6)  # scaled: the same directions
    assert embedding_loss(x @ rotation, x).item() > 0.5  # turned: the pairwise measure is 0 here, this is not
    small, large = (embedding_loss(x + s * torch.randn(6, 16), x).item() for s in (0.1, 1.0))
    assert 0 < small < large


def test_the_config_s_measures_are_the_anchor_s() -> None:
    assert tuple(MEASURES) == ANCHOR_MEASURES


def test_an_unknown_measure_is_named(tiny_encoder: str) -> None:
    with pytest.raises(ConfigError, match="anchor_measure: unknown value 'embedding'"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "anchor_measure": "embedding"})


def test_anchor_to_is_start_or_encoder_and_comes_with_a_weight(tiny_encoder: str) -> None:
    with pytest.raises(ConfigError, match="anchor_to: unknown value 'pretrained'"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "geometry_anchor": 1.0, "anchor_to": "pretrained"})
    with pytest.raises(ConfigError, match="anchor_to: needs geometry_anchor > 0"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "anchor_to": "encoder"})


def test_anchor_texts_must_name_a_task_of_the_run_and_come_with_a_weight(tiny_encoder: str) -> None:
    with pytest.raises(ConfigError, match="anchor_texts: 'y' is not one of the run's tasks"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "geometry_anchor": 1.0, "anchor_texts": "y"})
    with pytest.raises(ConfigError, match="anchor_texts: needs geometry_anchor > 0"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "anchor_texts": "x"})


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_a_bad_weight_is_named(value: float, tiny_encoder: str) -> None:
    with pytest.raises(ConfigError, match="geometry_anchor: must be a number >= 0"):
        RunConfig.from_dict({"tasks": ["x"], "encoder": tiny_encoder, "geometry_anchor": value})


def _pooled(encoder: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return mean_pooled(encoder.eval(), tokenizer(texts, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("measure", ["cosines", "embeddings"])
def test_the_anchor_keeps_what_it_measures_that_training_on_other_tasks_moves(run_config, tiny_encoder: str,
                                                                             tmp_path: Path, measure: str) -> None:
    """The same NER + relation run, with and without the anchor: the anchored encoder's embeddings of texts it
    never trained on stay closer to the untrained encoder's, by the anchor's own measure."""
    start, tokenizer = load_encoder(tiny_encoder, 0.0)
    before = _pooled(start, tokenizer, TEXTS)
    drift = {}
    for weight in (0.0, 50.0):
        out = tmp_path / f"anchor-{weight}"
        train(run_config(["toy-ner", "toy-rel"], output_dir=str(out), lr=1e-2, epochs=2, geometry_anchor=weight,
                         anchor_measure=measure, save_predictions=False), progress=False)
        model = MultiTaskModel.load(out / "best")
        model.load_state_dict(load_file(out / CHECKPOINT / "model.safetensors"))  # the last weights, not best/'s
        drift[weight] = MEASURES[measure](_pooled(model.encoder, tokenizer, TEXTS), before).item()
    assert drift[0.0] > 1e-3  # the unanchored run moved the embeddings ...
    assert drift[50.0] < 0.5 * drift[0.0]  # ... the anchored one much less


def test_anchor_texts_holds_the_named_task_s_texts_and_leaves_the_others_free(run_config, tiny_encoder: str,
                                                                              toy_tasks: dict, tmp_path: Path) -> None:
    """``anchor_texts``: the anchor reads the similarity task's training sentences, a batch-size slice per step.
    Against the same run without it, those sentences' embeddings move much less; the run still trains."""
    from biomtl.data.readers import read_split
    from biomtl.tasks import load_dataset_spec

    sts = read_split(load_dataset_spec(str(toy_tasks["toy-sts"])), "train")
    held = [t for e in sts for t in (e.text, e.text_b)]
    start, tokenizer = load_encoder(tiny_encoder, 0.0)
    before = _pooled(start, tokenizer, held)
    drift = {}
    for weight in (0.0, 50.0):
        out = tmp_path / f"anchor-{weight}"
        extra = {"geometry_anchor": weight, "anchor_texts": str(toy_tasks["toy-sts"])} if weight else {}
        train(run_config(["toy-ner", "toy-rel", "toy-sts"], output_dir=str(out), lr=1e-2, epochs=2,
                         anchor_measure="embeddings", save_predictions=False, **extra), progress=False)
        model = MultiTaskModel.load(out / "best")
        model.load_state_dict(load_file(out / CHECKPOINT / "model.safetensors"))  # the last weights
        drift[weight] = embedding_loss(_pooled(model.encoder, tokenizer, held), before).item()
    assert drift[0.0] > 1e-3
    assert drift[50.0] < 0.5 * drift[0.0]


def test_the_anchor_s_reference_rows_are_the_task_s_texts_in_order_and_follow_the_step(run_config, toy_tasks: dict) -> None:
    """The targets are the starting encoder's embeddings of the task's training texts in the split's order;
    step k reads rows k × batch_size onwards, wrapping round: a target changed in row r shows in the steps
    that read row r, and only there."""
    from biomtl.data.readers import read_split
    from biomtl.model import build_model
    from biomtl.tasks import load_dataset_spec
    from biomtl.train import examples_of, load_task_data

    sts = str(toy_tasks["toy-sts"])
    config = run_config(["toy-ner", "toy-sts"], geometry_anchor=1.0, anchor_texts=sts, anchor_measure="embeddings",
                        batch_size=5)
    model = build_model(config).eval()
    data = load_task_data(model, config)
    anchor = GeometryAnchor.for_run(model, config, examples_of(data, "train"))
    held = [t for e in read_split(load_dataset_spec(sts), "train") for t in (e.text, e.text_b)]
    n, b = len(held), config.batch_size
    assert anchor is not None and anchor.targets.shape[0] == n and n % b != 0  # so that a slice wraps round
    torch.testing.assert_close(anchor.targets, _pooled(model.encoder, model.tokenizer, held), atol=1e-5, rtol=1e-4)
    anchor.targets[n - 1] = -anchor.targets[n - 1]  # only the last row's target differs from the encoder now
    batch = model.tasks["toy-ner"].collate(data["toy-ner"].features["train"][:2], model.tokenizer.pad_token_id)
    with torch.no_grad():
        seen = [anchor.forward(model, model, "toy-ner", batch, step)[1].item() > 0.1 for step in range(2 * n)]
    assert seen == [(n - 1) in {(step * b + i) % n for i in range(b)} for step in range(2 * n)]


@pytest.mark.parametrize("texts", [False, True], ids=["each-batch", "anchor-texts"])
def test_the_anchor_refuses_a_torchrun_run_before_it_writes_anything(run_config, toy_tasks: dict, tmp_path: Path,
                                                                     texts: bool) -> None:
    """Each rank would measure its own rows (and ``anchor_texts`` run a pass outside DDP's wrapper), so under
    a process group the run stops with a named error, and nothing is left behind."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    out = tmp_path / "refused"
    extra = {"anchor_texts": str(toy_tasks["toy-sts"])} if texts else {}
    try:
        with pytest.raises(ConfigError, match="geometry_anchor: not supported under torchrun"):
            train(run_config(output_dir=str(out), geometry_anchor=1.0, **extra), progress=False)
    finally:
        dist.destroy_process_group()
    assert not out.exists()


def _moved_model(run_config, tmp_path: Path) -> Path:
    """A model directory whose encoder training moved away from the tiny encoder's weights."""
    out = tmp_path / "moved"
    train(run_config(["toy-ner", "toy-rel"], output_dir=str(out), lr=1e-2, epochs=2, save_predictions=False),
          progress=False)
    return out / "best"


@pytest.mark.parametrize("texts", [False, True])
def test_anchor_to_encoder_holds_a_fine_tune_to_the_pretrained_encoder_not_its_start(
        run_config, tiny_encoder: str, toy_tasks: dict, tmp_path: Path, texts: bool) -> None:
    """In a fine-tune (``init_from``) ``anchor_to: start`` compares with the model it starts from and
    ``anchor_to: encoder`` with the run's encoder as pretrained, on each batch or on the reference texts."""
    from biomtl.model import build_model
    from biomtl.train import examples_of, load_task_data

    moved = _moved_model(run_config, tmp_path)
    sts = str(toy_tasks["toy-sts"])
    pretrained, tokenizer = load_encoder(tiny_encoder, 0.0)
    extra = {"anchor_texts": sts} if texts else {}
    held = {}
    for to in ("start", "encoder"):
        config = run_config(["toy-sts"], init_from=str(moved), geometry_anchor=1.0, anchor_measure="embeddings",
                            anchor_to=to, **extra)
        model = build_model(config).eval()
        anchor = GeometryAnchor.for_run(model, config, examples_of(load_task_data(model, config), "train"))
        assert anchor is not None
        if texts:
            held[to] = anchor.targets
            now = _pooled(model.encoder, tokenizer, anchor_texts_of(sts))
            then = _pooled(pretrained, tokenizer, anchor_texts_of(sts))
        else:
            held[to] = _pooled(anchor.teacher, tokenizer, TEXTS)
            now, then = _pooled(model.encoder, tokenizer, TEXTS), _pooled(pretrained, tokenizer, TEXTS)
            assert not any(p.requires_grad for p in anchor.teacher.parameters())
        assert embedding_loss(now, then).item() > 1e-3  # the start is not the pretrained encoder
    torch.testing.assert_close(held["start"], now, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(held["encoder"], then, atol=1e-5, rtol=1e-4)


def anchor_texts_of(task: str) -> list[str]:
    from biomtl.data.readers import read_split
    from biomtl.tasks import load_dataset_spec

    return [t for e in read_split(load_dataset_spec(task), "train") for t in (e.text, e.text_b)]


def test_anchor_to_encoder_refuses_an_encoder_the_start_was_not_trained_from(run_config, tmp_path: Path) -> None:
    """The pretrained encoder must read the model's tokens: another vocabulary or width is a named error, before the run's
    output directory exists."""
    from transformers import BertConfig, BertModel

    moved = _moved_model(run_config, tmp_path)
    other = tmp_path / "wider"
    BertModel(BertConfig(vocab_size=200, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64), add_pooling_layer=False).save_pretrained(other)
    tokenizer = MultiTaskModel.load(moved).tokenizer
    tokenizer.save_pretrained(other)
    out = tmp_path / "refused"
    with pytest.raises(ConfigError, match="anchor_to: encoder: the encoder .* has vocab_size 200"):
        train(run_config(["toy-sts"], output_dir=str(out), init_from=str(moved), encoder=str(other),
                         geometry_anchor=1.0, anchor_to="encoder"), progress=False)
    assert not out.exists()
