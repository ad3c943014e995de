"""What only a GPU can show: fp16 on CUDA agrees with the card's fp32 snippet, batches of every size
agree, and the Space answers from the GPU. Skipped where torch sees no CUDA GPU (CI has none);
``scripts/gpu_check.sh`` runs them on a GPU machine."""

from __future__ import annotations

import pytest
import torch

from nsfw_space import NSFWClassifier, Settings

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def gpu_classifier(model_dir):
    return NSFWClassifier.from_pretrained(str(model_dir))  # auto: CUDA, fp16, no int8


def test_auto_chooses_cuda_in_fp16_with_nothing_built_aside(gpu_classifier):
    assert gpu_classifier.device.type == "cuda" and gpu_classifier.precision == "fp16"
    assert gpu_classifier.wait_until_ready(0)


def test_fp16_on_cuda_stays_within_001_of_the_card(gpu_classifier, photos, card_scores):
    for path in photos:
        assert gpu_classifier.predict(path).nsfw_score == pytest.approx(card_scores[str(path)], abs=0.01)
    for batch_size in (1, 3, 64):
        for prediction in gpu_classifier.predict_batch(photos * 13, batch_size=batch_size):
            assert prediction.nsfw_score == pytest.approx(card_scores[prediction.source], abs=0.01)


def test_the_space_answers_from_the_gpu(gpu_classifier, photos, card_scores, gradio_tmp):
    from gradio_client import Client, handle_file

    from nsfw_space.space.demo import create_demo, launch_options

    settings = Settings(threshold=0.5)
    demo = create_demo(gpu_classifier, settings)
    options = {k: v for k, v in launch_options(settings).items() if k not in ("theme", "css")}
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True, **options)
    try:
        answer = Client(url, verbose=False).predict(handle_file(str(photos[0])), 0.5, api_name="/moderate")
        assert answer["nsfw_score"] == pytest.approx(card_scores[str(photos[0])], abs=0.01)
    finally:
        demo.close()
