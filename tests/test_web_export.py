"""The browser model's export and check, without a browser: on plain weights and on the same
function with outlier channels (what trained transformers have and per-tensor 8 bits find hard)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from nsfw_space.model.loading import load_model_and_processor
from nsfw_space.tools.synthetic import with_outlier_channels
from nsfw_space.web import export

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("weights", ["plain", "outliers in the LayerNorms and the values"])
def test_the_export_is_checked_and_laid_out_for_transformers_js(model_dir, tmp_path, weights):
    # the second computes the same function with outlier channels entering every block and in the
    # attention's values, which no LayerNorm precedes: the browser model smooths in both places, as
    # the server's int8 does (with the LayerNorms alone it was refused: 0.0330 off here, 0.0366 on
    # a ViT-B/16)
    source = (
        model_dir
        if weights == "plain"
        else with_outlier_channels(model_dir, tmp_path / "outliers", values=True)
    )
    model, processor = load_model_and_processor(str(source))
    out = tmp_path / "browser"
    check = export.export_browser_model(model, processor, out)
    assert check["worst"] <= export.TOLERANCE and check["same_label"]
    assert {"astronaut.jpg", "generated-0"} <= set(check["by_image"])
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "normal", "1": "nsfw"}
    assert json.loads((out / "preprocessor_config.json").read_text())["size"] == {"height": 224, "width": 224}
    graph = onnx.load(str(out / export.MODEL_FILE)).graph
    assert [i.name for i in graph.input] == ["pixel_values"] and [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch axis
    assert {node.op_type for node in graph.node} & {"MatMulInteger", "DynamicQuantizeLinear"}
    assert not list(out.glob("fp32.onnx*"))  # only the 8-bit model is kept
    pixels = np.random.default_rng(0).normal(size=(3, 3, 224, 224)).astype(np.float32)
    assert export._onnx_probabilities(out / export.MODEL_FILE, pixels).shape == (3, 2)


def test_a_model_that_drifts_is_refused_with_the_difference(model_dir, tmp_path):
    model, processor = load_model_and_processor(str(model_dir))
    with pytest.raises(
        export.BrowserModelRefused, match=r"differ from PyTorch by 0\.\d+ \(more than 1e-06\)"
    ):
        export.export_browser_model(model, processor, tmp_path / "browser", tolerance=1e-6)
    assert export.read_check(tmp_path / "browser") is None
