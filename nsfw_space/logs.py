"""Quiet third-party output for the doors (CLI, app.py): our own lines stay readable.

Environment defaults are read by transformers and huggingface_hub when they load, so nothing heavy
is imported here; a user's own settings of the same variables win.
"""

from __future__ import annotations

import logging
import os

QUIET_ENVIRONMENT = {
    "TRANSFORMERS_VERBOSITY": "error",  # no advisory warnings while loading (e.g. loss_type)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # no weight-loading progress bar
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}
CHATTY_LOGGERS = ("onnx_ir", "onnxscript", "httpx", "httpcore", "urllib3", "gradio_client")
# torchao (imported by transformers when installed) warns that its CUDA kernels do not load on a
# CPU machine, and torch's pytree warns about torchao's enums: neither is the user's concern.
NOISY_AT_IMPORT = (
    "torchao",
    "torch.utils._pytree",
    "torch.onnx",
)  # torch.onnx: "torchvision is not installed"


def quiet_libraries() -> None:
    """Set the quiet defaults, keep chatty HTTP loggers at WARNING and import-time noise away."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in NOISY_AT_IMPORT:
        logging.getLogger(name).setLevel(logging.ERROR)
