from __future__ import annotations

import pytest

from biomtl.corpora import prepare
from biomtl.errors import OutputExistsError


def test_prepare_is_idempotent_and_never_clobbers(corpora_dir, tmp_path):
    first = prepare(corpora_dir, tmp_path, ["biosses"])
    stamp = (tmp_path / "biosses" / "train.tsv").stat().st_mtime_ns
    again = prepare(corpora_dir, tmp_path, ["biosses"])  # same sources, same version: kept as is
    assert again["biosses"]["output_files"] == first["biosses"]["output_files"]
    assert (tmp_path / "biosses" / "train.tsv").stat().st_mtime_ns == stamp

    (tmp_path / "biosses" / "train.tsv").write_text("edited by the user\n")
    with pytest.raises(OutputExistsError, match="biosses exists and was not prepared from these corpora"):
        prepare(corpora_dir, tmp_path, ["biosses"])
    assert (tmp_path / "biosses" / "train.tsv").read_text() == "edited by the user\n"
    prepare(corpora_dir, tmp_path, ["biosses"], overwrite=True)
    assert (tmp_path / "biosses" / "train.tsv").read_text() != "edited by the user\n"
