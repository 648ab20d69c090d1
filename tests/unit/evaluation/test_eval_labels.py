"""Truth labels from folder names: built-in names (incl. the Kaggle release's), user maps, folder lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from allbatch import CLASS_NAMES
from allbatch.core.errors import UserInputError
from allbatch.evaluation.labels import assign_labels, default_class_for, folder_of, parse_class_map


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("Benign", "Benign"),
        ("benign", "Benign"),
        ("BENIGN", "Benign"),
        ("hematogones", "Benign"),
        ("Hematogone", "Benign"),
        ("Early", "Early"),
        ("Pre", "Pre"),
        ("Pro", "Pro"),
        ("[Malignant] early Pre-B", "Early"),
        ("[Malignant] Pre-B", "Pre"),
        ("[Malignant] Pro-B", "Pro"),
        ("Malignant early Pre B", "Early"),
        ("pro_b", "Pro"),
        ("Early Pre-B ALL", "Early"),
    ],
)
def test_built_in_folder_names(folder: str, expected: str) -> None:
    assert default_class_for(folder) == expected


@pytest.mark.parametrize("folder", ["Other", "Malignant", "", "preprocessed", "Segmented", "Pre-T", "Benign2"])
def test_unknown_folder_names_are_not_guessed(folder: str) -> None:
    assert default_class_for(folder) is None


def test_folder_is_the_immediate_parent() -> None:
    assert folder_of("Original/[Malignant] Pro-B/img 1.jpg") == "[Malignant] Pro-B"
    assert folder_of("a/b/Benign/x.jpg", "/data") == "Benign"


def test_images_in_the_root_take_the_root_folder_name() -> None:
    assert folder_of("x.jpg", "/data/all/Pre") == "Pre"
    assert folder_of("x.jpg", "/data/all/Early/x.jpg") == "Early"  # a run on one file
    assert folder_of("x.jpg") == ""


def test_parse_class_map_pairs_and_case() -> None:
    out = parse_class_map(["Normal=benign", " Blasts type 2 = PRO ", "a=b=Early"], CLASS_NAMES)
    assert out == {"normal": "Benign", "blasts type 2": "Pro", "a=b": "Early"}


def test_parse_class_map_json_file_and_later_entries_win(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Hema": "Benign", "T1": "Pre"}), encoding="utf-8")
    assert parse_class_map([str(path), "T1=Pro"], CLASS_NAMES) == {"hema": "Benign", "t1": "Pro"}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "neither FOLDER=Class nor an existing JSON file"), ("{not json", "cannot read class map"), ('["a"]', "JSON object")],
)
def test_parse_class_map_bad_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "map.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserInputError, match=message):
        parse_class_map([str(path)], CLASS_NAMES)


def test_parse_class_map_rejects_unknown_class_and_empty_folder() -> None:
    with pytest.raises(UserInputError, match="unknown class 'Malignant'"):
        parse_class_map(["X=Malignant"], CLASS_NAMES)
    with pytest.raises(UserInputError, match="empty folder name"):
        parse_class_map([" =Pre"], CLASS_NAMES)


def test_assign_labels_kaggle_layout_user_map_and_unknown() -> None:
    paths = [
        "Original/Benign/a.jpg",
        "Original/[Malignant] early Pre-B/b.jpg",
        "Original/[Malignant] Pre-B/c.jpg",
        "Original/[Malignant] Pro-B/d.jpg",
        "Original/Mystery/e.jpg",
        "Original/Normal/f.jpg",
    ]
    plain = assign_labels(paths, CLASS_NAMES)
    assert plain.truth.tolist() == [0, 1, 2, 3, -1, -1]
    assert plain.folder_classes["Mystery"] is None
    mapped = assign_labels(paths, CLASS_NAMES, user_map=parse_class_map(["normal=Benign", "[MALIGNANT] PRO-B=Pre"], CLASS_NAMES))
    assert mapped.truth.tolist() == [0, 1, 2, 2, -1, 0]  # the user map overrides a built-in name
    assert mapped.folders[5] == "Normal" and mapped.folder_classes["Normal"] == "Benign"


def test_assign_labels_without_built_in_names_uses_only_the_user_map() -> None:
    out = assign_labels(["Benign/a.jpg", "X/b.jpg"], CLASS_NAMES, user_map={"x": "Pro"}, use_defaults=False)
    assert out.truth.tolist() == [-1, 3]


def test_a_built_in_class_the_model_lacks_is_unknown() -> None:
    out = assign_labels(["Pro/a.jpg", "Benign/b.jpg"], ["Benign", "Malignant"])
    assert out.truth.tolist() == [-1, 0]
