"""Every mode a user can pick, named once: settings, CLI choices and the page's choices use these.

They are ``str`` Enums, so ``Precision.BF16 == "bf16"`` and values read from the environment or
the command line compare as they are.
"""

from __future__ import annotations

from enum import Enum


class _Choice(str, Enum):
    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> list[str]:
        return [member.value for member in cls]


class Precision(_Choice):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
    INT8 = "int8"


class Optimization(_Choice):
    AUTO = "auto"
    NONE = "none"
    JIT = "jit"
    COMPILE = "compile"


class FrameRule(_Choice):
    MAX = "max"
    MEAN = "mean"
    K_OF_N = "k-of-n"


class OutputFormat(_Choice):
    CSV = "csv"
    JSONL = "jsonl"
