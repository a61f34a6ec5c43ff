"""The Dagster code server imports the definitions and never runs an engine's heavy work itself (runs do, in their
own processes): what it loads is held for as long as the stack is up, so the heavy libraries stay out of it
(the footprint goal, bench/footprint.py)."""

import json
import subprocess
import sys

HEAVY = ("pandas", "openpyxl", "torch", "transformers", "sklearn", "scipy", "onnxruntime", "tokenizers")


def test_loading_the_definitions_imports_no_heavy_library():
    code = ("import json, sys; from astra_assets.definitions import build_definitions; build_definitions(); "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
