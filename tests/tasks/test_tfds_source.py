"""TfdsTask over a tiny tfds dataset built here (array_record, no TensorFlow, no network)."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxrl_self.tasks.errors import DataError
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.tasks.tfds_source import TfdsTask

NUM_TRAIN, NUM_TEST = 12, 4

# Not registered with tfds, so TfdsTask must find the dataset from its files, as for a real one.
with tfds.core.registered.skip_registration():

    class JaxrlTinyArithmetic(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {"question": tfds.features.Text(), "answer": tfds.features.Text(), "number": np.int64}
            )
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(NUM_TRAIN), "test": self._generate_examples(NUM_TEST)}

        def _generate_examples(self, count):
            for i in range(count):
                yield i, {"question": f"What is {i} + {i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}", "number": i}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    JaxrlTinyArithmetic(data_dir=str(directory), file_format="array_record").download_and_prepare()
    return directory


def test_reads_prepared_dataset_with_decoded_strings(data_dir):
    task = TfdsTask("arith", "jaxrl_tiny_arithmetic", data_dir, template="Q: {prompt}")
    train, test = task.examples("train"), task.examples("test")
    assert (len(train), len(test)) == (NUM_TRAIN, NUM_TEST)
    assert {e.prompt for e in train} == {f"Q: What is {i} + {i}?" for i in range(NUM_TRAIN)}
    for uid, example in enumerate(train):
        assert isinstance(example.prompt, str) and isinstance(example.solution, str)
        number = int(example.prompt.split()[3])
        assert example.reference == str(2 * number)
        assert example.uid == uid
    assert train[-1] == train[NUM_TRAIN - 1]
    assert task.score(f"so \\boxed{{{train[0].reference}}}", train[0].reference)["correct"] == 1.0
    with pytest.raises(IndexError):
        train[NUM_TRAIN]


def test_split_mapping_and_deterministic_order(data_dir):
    first = TfdsTask("a", "jaxrl_tiny_arithmetic", data_dir, splits={"train": "train", "test": "test"})
    second = TfdsTask("a", "jaxrl_tiny_arithmetic", data_dir, splits={"train": "test"})
    assert list(second.examples("train")) == list(first.examples("test"))
    assert list(TfdsTask("a", "jaxrl_tiny_arithmetic", data_dir).examples("train")) == list(first.examples("train"))


def test_prompt_iterator_over_task_resumes_mid_epoch(data_dir):
    examples = TfdsTask("arith", "jaxrl_tiny_arithmetic", data_dir).examples("train")

    def prompts(iterator, count):
        return [[examples[i].prompt for i in iterator.next()] for _ in range(count)]  # NumPy int64 indices

    iterator = PromptIterator(len(examples), batch_size=5, seed=0)
    first_epoch = prompts(iterator, 2)
    state = iterator.get_state()
    remaining = prompts(iterator, 4)
    assert len({prompt for batch in first_epoch for prompt in batch}) == 10
    resumed = PromptIterator(len(examples), batch_size=5, seed=0)
    resumed.set_state(state)
    assert prompts(resumed, 4) == remaining
    assert prompts(PromptIterator(len(examples), batch_size=5, seed=0), 2) == first_epoch


def test_missing_dataset_split_or_dir_raise_data_error(data_dir, tmp_path):
    with pytest.raises(DataError, match=f"not found in '{data_dir}'.*download_and_prepare"):
        TfdsTask("x", "jaxrl_no_such_dataset", data_dir)
    with pytest.raises(DataError, match="does not exist"):
        TfdsTask("x", "jaxrl_tiny_arithmetic", tmp_path / "missing")
    with pytest.raises(DataError, match="no split 'validation'"):
        TfdsTask("x", "jaxrl_tiny_arithmetic", data_dir, splits={"test": "validation"})
    with pytest.raises(DataError, match="no split 'test'"):
        TfdsTask("x", "jaxrl_tiny_arithmetic", data_dir, splits={"train": "train"}).examples("test")
