"""The Hugging Face Space: settings -> classifier -> page. All logic lives in the nsfw_space package."""

import logging

from nsfw_space import NSFWClassifier, NSFWSpaceError, Settings
from nsfw_space.ui import build_demo, launch_options

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

try:
    settings = Settings.from_env()
    classifier = NSFWClassifier.from_settings(settings)
except NSFWSpaceError as error:  # one clear line instead of a traceback wall
    raise SystemExit(f"nsfw-space: {error}") from None

demo = build_demo(classifier, settings)

if __name__ == "__main__":
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by Gradio itself.
    demo.launch(**launch_options(settings))
