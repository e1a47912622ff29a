"""Times one `get_layer_from_id` per layer, in a loop: how a user of the original koop package
gets a list of layers. Runs unchanged on the original package and on koop-rs; prints JSON.

Environment: BENCH_LAYER_IDS (comma-separated), BENCH_DOMAIN, KOORDINATES_API_KEY,
KOOPCACHE_DIR.
"""

import json
import os
import time

from koop import get_layer_from_id

layer_ids = [int(text) for text in os.environ["BENCH_LAYER_IDS"].split(",")]
api_key = os.environ["KOORDINATES_API_KEY"]
domain = os.environ["BENCH_DOMAIN"]

seconds = []
start = time.perf_counter()
for layer_id in layer_ids:
    before = time.perf_counter()
    path = get_layer_from_id(layer_id, api_key, domain)
    seconds.append(time.perf_counter() - before)
    assert path.exists(), path
total = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "total": total}))
