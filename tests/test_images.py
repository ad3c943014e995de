"""Image modes and orientation: every mode PIL reads is classified as the picture a person sees."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from nsfw_space.media.images import load_image, to_rgb
from nsfw_space.tools.synthetic import varied_image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def picture():
    return varied_image(7, (200, 150))


def test_rgba_png_is_classified_like_its_picture_on_white(classifier, picture):
    rgba = picture.convert("RGBA")
    alpha = Image.new("L", picture.size, 255)
    alpha.paste(0, (0, 0, 100, 150))  # left half transparent
    rgba.putalpha(alpha)
    expected = picture.copy()
    expected.paste((255, 255, 255), (0, 0, 100, 150))
    got = classifier.predict(_png(rgba)).nsfw_score
    assert got == pytest.approx(classifier.predict(expected).nsfw_score, abs=1e-4)


def test_la_and_l_images_are_classified(classifier, picture):
    gray = picture.convert("L")
    la = picture.convert("LA")
    score_l = classifier.predict(_png(gray)).nsfw_score
    assert classifier.predict(_png(la)).nsfw_score == pytest.approx(score_l, abs=1e-4)
    assert classifier.predict(gray.convert("RGB")).nsfw_score == pytest.approx(score_l, abs=1e-6)


def test_palette_image_with_transparency_is_classified(classifier, picture):
    palette = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    loaded = load_image(_png(palette))
    assert loaded.mode == "RGB" and loaded.size == picture.size
    assert 0.0 <= classifier.predict(_png(palette)).nsfw_score <= 1.0
    opaque = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert classifier.predict(_png(opaque)).nsfw_score == pytest.approx(
        classifier.predict(opaque.convert("RGB")).nsfw_score, abs=1e-5
    )


def test_cmyk_jpeg_is_classified_like_its_rgb(classifier, picture):
    buffer = io.BytesIO()
    picture.convert("CMYK").save(buffer, format="JPEG", quality=95)
    got = classifier.predict(buffer.getvalue()).nsfw_score
    assert got == pytest.approx(classifier.predict(picture).nsfw_score, abs=0.03)


def test_16bit_grayscale_png_is_scaled_not_clipped(classifier, picture):
    gray8 = np.asarray(picture.convert("L")).astype(np.uint16)
    image16 = Image.fromarray(gray8 * 257)
    assert image16.mode.startswith("I")
    data = _png(image16)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    loaded = np.asarray(load_image(data))
    assert np.abs(loaded[..., 0].astype(int) - gray8).max() <= 1
    got = classifier.predict(data).nsfw_score
    assert got == pytest.approx(classifier.predict(picture.convert("L")).nsfw_score, abs=1e-3)


def test_float_and_uint16_arrays_are_scaled(classifier, picture):
    rgb = np.asarray(picture)
    expected = classifier.predict(picture).nsfw_score
    assert classifier.predict(rgb.astype(np.float32) / 255.0).nsfw_score == pytest.approx(expected, abs=1e-3)
    assert classifier.predict(rgb.astype(np.uint16) * 257).nsfw_score == pytest.approx(expected, abs=1e-3)


def test_exif_rotated_jpeg_is_classified_upright(classifier, picture):
    upright = picture.transpose(Image.Transpose.ROTATE_270)  # what the viewer sees (150x200)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=95, exif=exif)
    loaded = load_image(buffer.getvalue())
    assert loaded.size == upright.size == (150, 200)
    got = classifier.predict(buffer.getvalue()).nsfw_score
    assert got == pytest.approx(classifier.predict(upright).nsfw_score, abs=0.03)
    assert got != pytest.approx(classifier.predict(picture).nsfw_score, abs=1e-3)


def test_one_bit_and_one_pixel_images(classifier, picture):
    assert load_image(_png(picture.convert("1"))).mode == "RGB"
    tiny = Image.new("RGB", (1, 1), (10, 200, 30))
    assert 0.0 <= classifier.predict(_png(tiny)).nsfw_score <= 1.0


def test_to_rgb_leaves_rgb_alone(picture):
    assert to_rgb(picture) is picture


def test_freed_memory_goes_back_after_a_large_decode_but_not_after_a_draft_of_a_large_jpeg(
    classifier, monkeypatch
):
    # A trim hands back every free page of the heap, the model's kept buffers too, so the next
    # forward faults them in again: after a 4032x3024 JPEG that draft mode decoded at 1008x756
    # there is nothing large to give back (two such files in six cost the int8 ViT-B/16 about
    # 100,000 page faults a batch of 16). A PNG of the same size is decoded whole: trimmed.
    from nsfw_space.media import budgets

    trims = []
    monkeypatch.setattr(budgets, "release_memory", lambda: trims.append(1))
    photo = varied_image(3, (252, 189)).resize((4032, 3024))
    jpeg, png = io.BytesIO(), io.BytesIO()
    photo.save(jpeg, format="JPEG", quality=85)
    photo.save(png, format="PNG", compress_level=1)

    assert classifier.decode(jpeg.getvalue()).pixels.shape[0] == 1
    assert trims == []
    classifier.decode(png.getvalue())
    assert trims == [1]
    load_image(jpeg.getvalue())  # no draft asked: decoded whole, so trimmed after
    assert trims == [1, 1]
