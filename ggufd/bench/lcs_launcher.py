"""`python -m llama_cpp.server`, kept off llama.cpp's AMX weight buffers, for the benchmark.

Runs in the benchmark's `.bench-venv` (llama-cpp-python[server] 0.3.36), as a script:
    .bench-venv/bin/python ggufd/bench/lcs_launcher.py --model M ... (llama_cpp.server flags)

A native build of llama.cpp on a CPU that advertises AMX (Sapphire/Granite Rapids, also in
VMs) puts the weights in AMX "extra" buffers, and the first decode can die with a general
protection fault on `ldtilecfg`. llama_cpp.server has no setting for
`llama_model_params.use_extra_bufts`, and ggml reads no environment variable for it, so
this launcher wraps `llama_model_default_params` (which `llama_cpp.Llama.__init__` calls
to build its model parameters) to return them with `use_extra_bufts = False`, then runs
llama_cpp.server's own `main()`. That is exactly what ggufd's runner sets, and
llama-server's `--no-repack`: all three use the plain CPU weight buffers. On CPUs
without AMX the switch only turns off the (AVX2/AVX512) weight repacking.

Only the standard library and llama_cpp are imported: ggufd is not installed there.
"""

from __future__ import annotations

import sys
from typing import Any


def patch_default_params() -> None:
    """Make every llama_model_default_params() come back with use_extra_bufts False."""
    import llama_cpp.llama_cpp as lc

    original = lc.llama_model_default_params

    def without_extra_bufts() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    lc.llama_model_default_params = without_extra_bufts
    # llama_cpp re-exports the low-level names: patch the package attribute too.
    import llama_cpp

    llama_cpp.llama_model_default_params = without_extra_bufts


def main() -> None:
    patch_default_params()
    from llama_cpp.server.__main__ import main as server_main

    sys.argv[0] = "llama_cpp.server"
    server_main()


if __name__ == "__main__":
    main()
