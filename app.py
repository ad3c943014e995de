"""The Hugging Face Space: settings -> demo -> launch. All logic lives in the nsfw_space package."""

import logging

from nsfw_space.logs import quiet_libraries

quiet_libraries()
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

from nsfw_space import NSFWSpaceError, Settings  # noqa: E402 - after the quiet defaults are set
from nsfw_space.model.loading import check_model_argument  # noqa: E402
from nsfw_space.stopping import stop_on_sigterm  # noqa: E402

# a host stops a Space with SIGTERM: Gradio then closes as after Ctrl-C and a build aside is
# stopped with its work folder removed, instead of the process ending on the spot
stop_on_sigterm()
try:
    settings = Settings.from_env()
    # a wrong NSFW_SPACE_MODEL is said at once, before Gradio and torch load
    check_model_argument(settings.model, settings.revision)
    from nsfw_space.space.demo import demo_from_settings, launch_options

    demo = demo_from_settings(settings)
except NSFWSpaceError as error:  # one clear line instead of a traceback wall
    raise SystemExit(f"nsfw-space: {error}") from None
except KeyboardInterrupt:  # stopped (Ctrl-C, SIGTERM) while loading
    raise SystemExit("nsfw-space: stopped while loading") from None

if __name__ == "__main__":
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are read by Gradio itself.
    demo.launch(**launch_options(settings, demo))
