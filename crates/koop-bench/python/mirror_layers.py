"""Times `koop.mirror` of the same layers (koop-rs only); prints JSON."""

import json
import os
import time

import koop

layer_ids = [int(text) for text in os.environ["BENCH_LAYER_IDS"].split(",")]
start = time.perf_counter()
results = koop.mirror(layer_ids, domain=os.environ["BENCH_DOMAIN"], jobs=8)
total = time.perf_counter() - start
failed = [repr(result) for result in results if not result.ok]
assert not failed, failed
print(json.dumps({"total": total}))
