"""Shared helpers for the dataset and prepare-script tests: tiny datasets whose examples say who they
are, a one-line-error check for the scripts, a spy on what they write."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset import write_dataset  # noqa: E402

SEQ_LEN, VOCAB = 3, 256


def tiny_arrays(groups, num_identifiers=1):
    """Arrays of one set. groups: list of groups, each a list of example counts, one per puzzle.
    Example k has every input token k + 1 (so a batch tells which examples it holds) and the same
    labels except the last position, which is 0, the ignored label."""
    sizes = [n for group in groups for n in group]
    n_examples = sum(sizes)
    assert n_examples < VOCAB - 1
    inputs = np.repeat(np.arange(1, n_examples + 1, dtype=np.uint8)[:, None], SEQ_LEN, axis=1)
    labels = inputs.copy()
    labels[:, -1] = 0
    return {"inputs": inputs, "labels": labels,
            "puzzle_identifiers": (np.arange(len(sizes)) % num_identifiers).astype(np.int32),
            "puzzle_indices": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
            "group_indices": np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int32)}


def tiny_meta(num_identifiers=1):
    return {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": VOCAB,
            "seq_len": SEQ_LEN, "num_puzzle_identifiers": num_identifiers}


def write_tiny(out_dir, train_groups, test_groups=((1,), (2,), (1,)), num_identifiers=1, **kw):
    splits = {"train": (tiny_meta(num_identifiers), {"all": tiny_arrays(train_groups, num_identifiers)}),
              "test": (tiny_meta(num_identifiers), {"all": tiny_arrays(test_groups, num_identifiers)})}
    names = ["<blank>"] + [f"p{i}" for i in range(1, num_identifiers)]
    return write_dataset(out_dir, splits, names, **kw)


def example_ids(batch):
    """Which examples a batch holds (-1 for padding rows)."""
    return batch["inputs"][:, 0].astype(np.int64) - 1


def one_line_error(main, script, argv, *needles):
    """Run a prepare script's main(argv), expect it to exit with one line 'script: ...' holding every needle."""
    import pytest
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = str(info.value.code)
    assert message.startswith(f"{script}: ") and "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def spy_on_metas(monkeypatch):
    """The split meta dicts each build hands to write_dataset (dataset.json keeps train_test_overlap)."""
    import prepare_common
    metas, real = [], prepare_common.write_dataset

    def spy(out, splits, *args, **kwargs):
        metas.append({name: meta for name, (meta, _) in splits.items()})
        return real(out, splits, *args, **kwargs)
    monkeypatch.setattr(prepare_common, "write_dataset", spy)
    return metas
