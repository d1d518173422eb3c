"""Problem categories of every task source (docs/curricula.md): procedural tasks (a category per
generator setting), the mixed arithmetic task, JSONL (an optional field) and tfds (a feature)."""
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxrl_self.config import build_config
from jaxrl_self.tasks.arithmetic import ArithmeticTask, MixedArithmeticTask
from jaxrl_self.tasks.base import task_categories
from jaxrl_self.tasks.countdown import CountdownTask
from jaxrl_self.tasks.errors import DataError
from jaxrl_self.tasks.jsonl import JsonlTask
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.tasks.tfds_source import TfdsTask

import tiny_job


def operand_digits(prompt: str) -> int:
    a, b = prompt.rstrip("=").split("+")
    assert len(a) == len(b)
    return len(a)


def test_mixed_arithmetic_has_one_category_per_operand_size():
    task = MixedArithmeticTask(digits=5, test_size=50)
    assert task.category_names == ("1-digit", "2-digit", "3-digit", "4-digit", "5-digit")
    for split in ("train", "test"):
        examples, categories = task.examples(split), task.categories(split)
        assert categories.dtype == np.int32 and len(categories) == len(examples)
        for index in range(20):
            example = examples[index]
            assert example.category == categories[index] == index % 5
            assert operand_digits(example.prompt) == example.category + 1
            assert task.score(example.solution, example.reference)["correct"] == 1.0
    train = {e.prompt for e in task.examples("train")[:500]}
    assert not train & {e.prompt for e in task.examples("test")}  # disjoint splits, even for 1 digit


def test_single_setting_procedural_tasks_are_one_category():
    for task, name in ((ArithmeticTask(digits=3), "3-digit"), (CountdownTask(num_numbers=4), "4 numbers")):
        assert task.category_names == (name,)
        assert not task.categories("train").any() and task.examples("train")[3].category == 0


def test_configs_build_the_mixed_task():
    config = build_config(tiny_job.REPO / "configs" / "arithmetic_sec.py")
    task = build_task(config.task)  # every prompt and worked solution fits the config's lengths
    assert isinstance(task, MixedArithmeticTask) and len(task.category_names) == 5


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_categories_from_an_optional_field(tmp_path):
    answer = "1+1=2 #### 2"
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"question": "a", "answer": answer, "category": "geometry"},
        {"question": "b", "answer": answer, "category": 3},
        {"question": "c", "answer": answer},
        {"question": "d", "answer": answer, "category": "geometry"}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"question": "e", "answer": answer, "category": "algebra"}])
    task = JsonlTask("t", {"train": train, "test": test})
    assert task.category_names == ("3", "algebra", "all", "geometry")
    np.testing.assert_array_equal(task.categories("train"), [3, 0, 2, 3])
    assert [e.category for e in task.examples("train")] == [3, 0, 2, 3]
    np.testing.assert_array_equal(task.categories("test"), [1])
    assert task_categories(task, "test") == (task.category_names, task.categories("test"))
    # no category field: one category
    plain = JsonlTask("t", {"train": train}, category_field="")
    assert plain.category_names == ("all",) and not plain.categories("train").any()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "answer": answer, "category": [1]}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'category' \(the category\) must be a string or an integer"):
        JsonlTask("t", {"train": bad})


with tfds.core.registered.skip_registration():

    class JaxrlTinyLevels(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {"question": tfds.features.Text(), "answer": tfds.features.Text(), "level": np.int64})
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(6), "test": self._generate_examples(2)}

        def _generate_examples(self, count):
            for i in range(count):
                yield i, {"question": f"What is {i} + {i}?", "answer": f"#### {2 * i}", "level": 1 + i % 3}


def test_tfds_categories_from_a_feature_or_one_category(tmp_path):
    JaxrlTinyLevels(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    task = TfdsTask("levels", "jaxrl_tiny_levels", tmp_path, category_field="level")
    assert task.category_names == ("1", "2", "3")
    for split in ("train", "test"):
        examples, categories = task.examples(split), task.categories(split)
        for index in range(len(examples)):
            number = int(examples[index].prompt.split()[2])
            assert examples[index].category == categories[index] == number % 3
    single = TfdsTask("levels", "jaxrl_tiny_levels", tmp_path)  # no "category" feature
    assert single.category_names == ("all",) and not single.categories("train").any()
    assert single.examples("train")[1].category == 0


def test_a_task_without_categories_is_one_category():
    class Plain:
        name = "plain"

        def examples(self, split):
            return ["x", "y"]

    names, categories = task_categories(Plain(), "train")
    assert names == ("all",) and categories.tolist() == [0, 0]
