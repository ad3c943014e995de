"""CI: write the bytecode of what a Ray worker imports before the tests start Ray.

The tests write the bytecode of what they import as they go (CI unsets PYTHONDONTWRITEBYTECODE),
but a Ray worker that compiles these sources reads its inputs slowly enough that one model actor
can score them all, and the two-node test wants both nodes to score rows. Run beside the linters.
"""

import importlib

# Ray's worker and Ray Data's executor, the tables' readers, and the read tasks' own code
for name in ("ray", "ray.data", "pyarrow.fs", "pyarrow.parquet", "pandas", "nsfw_space.bulk.sources"):
    importlib.import_module(name)
