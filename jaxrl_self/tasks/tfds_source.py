"""Tasks read from a tensorflow-datasets dataset already prepared in a local directory.

Reading goes through tfds' random-access data sources (array_record files, no TensorFlow) and
never downloads: a dataset that is not prepared under `data_dir` is an error that says where it
was looked for and how to prepare it. Records come back in tfds' own (shuffled, deterministic)
order; an example's uid is its index in that order. A feature of the dataset (`category_field`)
may name each problem's category; reading the categories takes one pass over the records when the
task is built. Without that feature the task is one category.
"""
from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.errors import DataError
from jaxrl_self.tasks.jsonl import (
    DEFAULT_CATEGORY,
    PROMPT_PLACEHOLDER,
    AnswerFormat,
    MathDataTask,
    apply_template,
    check_task_options,
    parse_answer,
)

DEFAULT_SPLITS = {"train": "train", "test": "test"}


def _how_to_prepare(dataset: str, data_dir: str) -> str:
    return (
        f"prepare it once, where a download is allowed, with file_format='array_record' "
        f"(tfds without TensorFlow cannot read tfrecord), e.g. "
        f"tfds.builder({dataset!r}, data_dir={data_dir!r}, file_format='array_record')"
        f".download_and_prepare(), or by running your GeneratorBasedBuilder with that data_dir"
    )


def _text(value: Any) -> str:
    """A tfds Text/string feature as str (tfds hands back bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


class TfdsExamples(Sequence[Example]):
    """Random-access `Example`s over one tfds data source; records are converted when indexed.

    Supports `len()`, integer indexing (Python or NumPy ints, negative too) and iteration; not slicing.
    """

    def __init__(
        self,
        source: Sequence[Mapping[str, Any]],
        where: str,
        prompt_field: str,
        answer_field: str,
        answer_format: AnswerFormat,
        template: str,
        categories: np.ndarray,
    ):
        """categories: the category index of every record, `[len(source)]` int32."""
        self._source = source
        self._categories = categories
        self._where = where
        self._prompt_field = prompt_field
        self._answer_field = answer_field
        self._answer_format = answer_format
        self._template = template

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Example:
        index = operator.index(index)  # Python or NumPy integers (e.g. from PromptIterator); no slices
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"example index out of range for {self._where} (size {len(self)})")
        record = self._source[index]
        where = f"{self._where} record {index}"
        for field in (self._prompt_field, self._answer_field):
            if field not in record:
                raise DataError(f"{where}: field {field!r} is missing (features: {sorted(record)})")
        try:
            reference, solution = parse_answer(_text(record[self._answer_field]), self._answer_format)
        except ValueError as error:
            raise DataError(f"{where}: field {self._answer_field!r}: {error}") from error
        return Example(
            prompt=apply_template(self._template, _text(record[self._prompt_field])),
            reference=reference,
            solution=solution,
            uid=index,
            category=int(self._categories[index]),
        )


class TfdsTask(MathDataTask):
    """A task over a tfds dataset prepared (array_record format) in a local `data_dir`.

    Args:
      name: the task's name.
      dataset: tfds name, optionally with config and version ("gsm8k", "my_math/easy:1.0.0").
      data_dir: directory the dataset was prepared into.
      splits: our split name ("train", "test") -> the dataset's split name (e.g. "validation").
      prompt_field, answer_field: feature names of the question and the answer.
      answer_format: how to read the answer feature, see `jsonl.parse_answer`.
      template: the prompt shown to the model; ``{prompt}`` is replaced by the question.
      category_field: the feature naming a problem's category; a dataset without it (or "") is one
        category.
    Raises DataError at construction when the dataset or a split is not there.
    """

    def __init__(
        self,
        name: str,
        dataset: str,
        data_dir: str | os.PathLike,
        splits: Mapping[str, str] = DEFAULT_SPLITS,
        prompt_field: str = "question",
        answer_field: str = "answer",
        answer_format: AnswerFormat = "gsm8k",
        template: str = PROMPT_PLACEHOLDER,
        category_field: str = "category",
    ):
        check_task_options(answer_format, template)
        self.name = name
        data_dir = os.fspath(data_dir)
        builder = _prepared_builder(dataset, data_dir)
        with_categories = bool(category_field) and category_field in builder.info.features
        sources, labels = {}, {}
        for split, dataset_split in splits.items():
            try:
                source = builder.as_data_source(split=dataset_split)
            except (ValueError, KeyError) as error:
                raise DataError(
                    f"tfds dataset {dataset!r} in {data_dir!r} has no split {dataset_split!r} "
                    f"(wanted for {split!r}): {error}"
                ) from error
            except NotImplementedError as error:
                raise DataError(
                    f"tfds dataset {dataset!r} in {data_dir!r} is not in a random-access format; "
                    + _how_to_prepare(dataset, data_dir)
                ) from error
            sources[split] = (source, dataset_split)
            labels[split] = ([_text(record[category_field]) for record in source] if with_categories
                             else [DEFAULT_CATEGORY] * len(source))
        self._index_categories(labels)
        self._examples = {
            split: TfdsExamples(source, f"{dataset}[{dataset_split}]", prompt_field, answer_field, answer_format, template,
                                self._categories[split])
            for split, (source, dataset_split) in sources.items()
        }



def _prepared_builder(dataset: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The builder of `dataset` as prepared under `data_dir`; DataError if it is not there."""
    if not os.path.isdir(data_dir):
        raise DataError(
            f"tfds data_dir {data_dir!r} does not exist (looking for dataset {dataset!r}); "
            + _how_to_prepare(dataset, data_dir)
        )
    try:
        builder = tfds.builder(dataset, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise DataError(
            f"tfds dataset {dataset!r} not found in {data_dir!r}; " + _how_to_prepare(dataset, data_dir)
        ) from error
    if not builder.is_prepared():
        raise DataError(
            f"tfds dataset {dataset!r} is not prepared in {builder.data_dir!r}; "
            + _how_to_prepare(dataset, data_dir)
        )
    return builder
