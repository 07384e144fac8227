"""Common data mistakes are named through the console command: exit status 2, one line naming the file (and line,
column or key), what was found and what was expected, and nothing written; and the fixes the lines suggest work."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_promptmm import cli
from recbole_promptmm.experiments.cli import tune_main

PROG = "recbole-promptmm run"
HEADER = "user_id:token\titem_id:token"
N_ITEMS = 30  # item tokens 1..30: a feature matrix has 31 rows (row k = item token k)
ROWS = [(u, i) for u in range(1, 21) for i in np.random.default_rng(0).permutation(N_ITEMS)[:6] + 1]
ROWS += [(u, i) for u, i in zip(range(1, 31), range(1, 31))]  # every item appears


def write_tiny(root: Path, header: str = HEADER, sep: str = "\t", prefix: str = "", rows=ROWS,
               name: str = "tiny.inter") -> Path:
    """``root/tiny/<name>`` (user, item per line) and a good 31-row ``image.npy``; returns ``root`` (the data path)."""
    folder = root / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    text = prefix + header + "\n" + "".join(f"{u}{sep}{i}\n" for u, i in rows)
    (folder / name).write_text(text, encoding="utf-8")
    np.save(folder / "image.npy", np.ones((N_ITEMS + 1, 4), dtype=np.float32))
    return root


def feature(root: Path, name: str, write) -> list[str]:
    """Write ``root/tiny/<name>`` with ``write(path)``; the run's option naming it as the image modality."""
    write(root / "tiny" / name)
    return [f"--modality_features={{'image': '{name}'}}"]


def run(tmp_path: Path, capsys, *args: str) -> tuple[int, list[str]]:
    """Exit status and stderr lines of ``recbole-promptmm run --model=BPR --dataset=tiny ... --epochs=1``."""
    code = cli.main(["run", "--model=BPR", "--dataset=tiny", "--epochs=1", "--show_progress=False", *args])
    return code, capsys.readouterr().err.strip().splitlines()


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _header(**kwargs):
    return lambda root: (write_tiny(root, **kwargs), [])


def _mmrec_header_only(root: Path):
    folder = root / "tiny"
    folder.mkdir(parents=True)
    (folder / "mm.inter").write_text("userID\titemID\tx_label\n")
    return root, ["--mmrec_inter_file=mm.inter"]


def _mmrec_header_typo(root: Path):
    folder = root / "tiny"
    folder.mkdir(parents=True)
    (folder / "mm.inter").write_text("userID\titemId\tx_label\n" + "".join(f"{u}\t{i}\t0\n" for u, i in ROWS))
    return root, ["--mmrec_inter_file=mm.inter"]


def _benchmark_two_parts(root: Path):
    for part in ("train", "test"):
        write_tiny(root, name=f"tiny.{part}.inter")
    return root, ["--benchmark_filename=['train', 'test']"]


def _feature(name: str, write):
    return lambda root: (write_tiny(root), feature(root, name, write))


def _csv(path: Path) -> None:
    np.savetxt(path, np.ones((N_ITEMS + 1, 4)), delimiter=",")


def _negative_token(root: Path):
    write_tiny(root, rows=[*ROWS, (3, -1)])
    return root, ["--modality_features={'image': 'image.npy'}"]


CASES = {
    # id: (writes the data under the data path, returns (data path, extra options); what the line must say)
    "header_typo": (_header(header="user_id:token\titme_id:token"),
                    ["tiny.inter line 1, column 2", "expected the fields user_id and item_id", "'itme_id:token'",
                     "did you mean item_id?"]),
    "misspelt_load_col_field": (lambda root: (write_tiny(root, header=HEADER + "\tratng:float",
                                                         rows=[(u, f"{i}\t4") for u, i in ROWS]),
                                              ["--load_col={'inter': ['user_id', 'item_id', 'rating']}"]),
                                ["tiny.inter line 1, column 3", "expected the fields user_id, item_id and rating",
                                 "'ratng:float'", "did you mean rating?"]),
    "byte_order_mark": (_header(prefix="\ufeff"), ["tiny.inter line 1", "found a UTF-8 byte-order mark",
                                                    "encoding: utf-8-sig"]),
    "comma_separated": (_header(header="user_id:token,item_id:token", sep=","),
                        ["tiny.inter line 1", "expected tab-separated fields", "holds commas",
                         "field_separator: ','"]),
    "space_separated": (_header(header="user_id:token item_id:token", sep=" "),
                        ["tiny.inter line 1", "expected tab-separated fields", "holds spaces"]),
    "header_without_types": (_header(header="user_id\titem_id"),
                             ["tiny.inter line 1, column 1", "expected name:type", "'user_id' without a type"]),
    "unknown_type": (_header(header="user_id:token\titem_id:tokn"),
                     ["tiny.inter line 1, column 2", "expected a type one of token", "'item_id:tokn'",
                      "did you mean item_id:token?"]),
    "atomic_header_only": (_header(rows=[]), ["tiny.inter: expected one data line or more", "found only the header"]),
    "mmrec_header_only": (_mmrec_header_only, ["mm.inter: expected one data line or more", "found only the header"]),
    "mmrec_header_typo": (_mmrec_header_typo, ["mm.inter line 1", "expected MMRec's header", "missing itemID",
                                               "did you mean itemID for 'itemId'?"]),
    "benchmark_two_parts": (_benchmark_two_parts, ["benchmark_filename=['train', 'test']",
                                                   "expected 3 parts (train, valid, test", "found 2"]),
    "rs_two_parts": (lambda root: (write_tiny(root), ["--eval_args={'split': {'RS': [0.8, 0.2]}}"]),
                     ["eval_args split {RS: [0.8, 0.2]}", "expected 3 ratios (train, valid, test)", "found 2"]),
    "csv_renamed_npy": (_feature("feat.npy", _csv), ["feat.npy: expected a numeric .npy array", "found text",
                                                     "np.loadtxt("]),
    "negative_item_token": (_negative_token, ["image.npy: expected item tokens that are row numbers",
                                              "found item token '-1' in", "tiny.inter line 152, column 2",
                                              "(1 such item)", "id_map"]),
    "torch_file": (_feature("feat.pt", lambda p: torch.save(torch.ones(N_ITEMS + 1, 4), p)),
                   ["feat.pt: expected a numeric .npy array", "found a torch.save file", "torch.load("]),
    "npz_file": (_feature("feat.npz", lambda p: np.savez(p, np.ones((N_ITEMS + 1, 4)))),
                 ["feat.npz: expected a numeric .npy array", "found an .npz archive (np.savez) holding arr_0",
                  "['arr_0']"]),
    "empty_npy": (_feature("feat.npy", lambda p: p.write_bytes(b"")),
                  ["feat.npy: expected a numeric .npy array", "found an empty file (0 bytes)"]),
    "extra_feature_rows": (_feature("feat.npy", lambda p: np.save(p, np.ones((60, 4), dtype=np.float32))),
                           ["feat.npy: expected at most 31 rows", "the largest item token is 30", "found 60 rows",
                            "id_map"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_data_mistake_is_named_in_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    make, expected = CASES[case]
    data, extra = make(tmp_path / "data")
    before = files(tmp_path)
    code, lines = run(tmp_path, capsys, f"--data_path={data}", *extra)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: "), lines
    for part in expected:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert files(tmp_path) == before  # no log, checkpoint or TensorBoard folder, nothing converted


@pytest.mark.parametrize("case", ["torch_file", "npz_file"])
def test_tune_names_a_feature_file_in_another_format_before_anything_starts(case, tmp_path, capsys):
    make, expected = CASES[case]
    data, option = make(tmp_path / "data")
    code = tune_main(["--model=BPR", "--dataset=tiny", f"--data_path={data}", *option, f"--out={tmp_path / 'out'}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and all(part in lines[0] for part in expected), lines
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------- the suggested fixes work
def _convert(line: str) -> None:
    """Run the ``convert it: np.save(...)`` of an error line."""
    code = re.search(r"convert it: (np\.save\(.*?\))(, then name|$)", line).group(1)
    exec(code, {"np": np, "torch": torch})  # noqa: S102 - our own message, on files this test wrote


@pytest.mark.parametrize("name, write", [
    ("feat.pt", lambda p: torch.save(torch.ones(N_ITEMS + 1, 4), p)),
    ("feat.npz", lambda p: np.savez(p, np.ones((N_ITEMS + 1, 4)))),
    ("feat.csv", _csv),
    ("renamed.npy", _csv),
], ids=["torch", "npz", "csv", "csv_renamed"])
def test_the_suggested_conversion_gives_a_file_that_loads(name, write, tmp_path, capsys):
    data = write_tiny(tmp_path / "data")
    from recbole_promptmm import Config, create_dataset

    code, lines = run(tmp_path, capsys, f"--data_path={data}", *feature(data, name, write))
    assert code == 2
    _convert(lines[0])
    converted = (data / "tiny" / name).with_suffix(".npy")
    dataset = create_dataset(Config("BPR", "tiny", config_dict={"data_path": str(data),
                                                                "modality_features": {"image": str(converted)}}))
    assert dataset.modality_features["image"].shape == (N_ITEMS + 1, 4)


def test_the_suggested_separator_and_encoding_load(tmp_path, capsys):
    from recbole_promptmm import Config, create_dataset

    bom = write_tiny(tmp_path / "bom", prefix="\ufeff")
    comma = write_tiny(tmp_path / "comma", header="user_id:token,item_id:token", sep=",")
    for data, option in ((bom, {"encoding": "utf-8-sig"}), (comma, {"field_separator": ","})):
        dataset = create_dataset(Config("BPR", "tiny", config_dict={"data_path": str(data), **option}))
        assert (dataset.user_num, dataset.item_num) == (31, N_ITEMS + 1)


def test_an_absent_load_col_field_with_no_close_name_is_skipped_as_recbole_does(tmp_path):
    from recbole_promptmm import Config, create_dataset

    data = write_tiny(tmp_path / "data")
    dataset = create_dataset(Config("BPR", "tiny", config_dict={
        "data_path": str(data), "load_col": {"inter": ["user_id", "item_id", "timestamp"]}}))
    assert "timestamp" not in dataset.inter_feat.columns and len(dataset.inter_feat) == len(ROWS)


def test_extra_rows_named_by_an_id_map_are_accepted(tmp_path):
    from recbole_promptmm import Config, create_dataset

    data = write_tiny(tmp_path / "data")
    folder = data / "tiny"
    np.save(folder / "catalogue.npy", np.arange(60 * 2, dtype=np.float32).reshape(60, 2))
    (folder / "catalogue.txt").write_text("".join(f"{t}\n" for t in range(60)))
    dataset = create_dataset(Config("BPR", "tiny", config_dict={
        "data_path": str(data), "modality_features": {"image": {"path": "catalogue.npy", "id_map": "catalogue.txt"}}}))
    tokens = dataset.field2id_token["item_id"]
    assert dataset.modality_features["image"][1].tolist() == [2.0 * int(tokens[1]), 2.0 * int(tokens[1]) + 1]


def test_rows_of_items_that_filtering_drops_are_no_extra_rows(tmp_path):
    """Item 30 is in the data but RecBole's filtering drops it: row 30 still belongs to an item."""
    from recbole_promptmm import Config, create_dataset

    rows = [(u, i) for u in range(1, 21) for i in range(1, 11)] + [(1, 30)]
    data = write_tiny(tmp_path / "data", rows=rows)
    dataset = create_dataset(Config("BPR", "tiny", config_dict={
        "data_path": str(data), "modality_features": {"image": "image.npy"}, "item_inter_num_interval": "[2,inf)"}))
    assert dataset.item_num == 11 and dataset.modality_features["image"].shape == (11, 4)
