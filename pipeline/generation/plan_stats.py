"""How many distinct prompts a profile's plans give over some days, without a teacher.

    python -m pipeline.generation.plan_stats --profile phi-1.5 --days 7

plans `--days` daily batches per domain exactly as the `prompts` asset does (the same spaces,
seeds and plan ledger, in a temporary folder) and prints one JSON line per domain: requests,
distinct prompts, the size of the space (`possible_prompts`), the distinct seeds used and how
long planning took. The topic tree is the shipped one (growing it needs the teacher).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from pipeline.generation import prompts, topic_tree
from pipeline.generation.spaces import shipped_personas, space_for, text_seeds
from pipeline.settings import ConfigError, resolve


def plan_stats(profile: str, days: int, start: date = date(2026, 1, 1), overrides: dict | None = None) -> list[dict]:
    settings = resolve(profile, overrides, complete=False)  # plans ask no teacher
    g = settings.generation
    categories = topic_tree.seed_categories(text_seeds(g))
    tree = topic_tree.shipped_tree(seed_categories=categories, personas=shipped_personas())
    sampling = {"temperature": g.temperature, "top_p": g.top_p, "max_tokens": g.max_tokens}
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        for domain in ("code", "text"):
            started = time.perf_counter()
            space = space_for(domain, g, tree)
            ledger = prompts.PlanLedger(Path(folder), domain)
            rows = []
            for day in range(days):
                batch = f"{start + timedelta(days=day)}|{domain}"
                seed = prompts.batch_seed(g.seed, batch)
                plan = prompts.plan_batch(space, g.samples_per_domain, seed, sampling, settings.teacher.model, ledger,
                                          batch, g.allow_repeats)  # fmt: skip
                rows += plan.rows
            lines.append({
                "domain": domain,
                "plan": space.name,
                "days": days,
                "requests": len(rows),
                "distinct_prompts": len({r["prompt"] for r in rows}),
                "possible_prompts": space.size,
                "distinct_seeds": len({r["seed_id"] for r in rows} - {None}),
                "seconds": round(time.perf_counter() - started, 2),
            })  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args(argv)
    try:
        for line in plan_stats(args.profile, args.days):
            print(json.dumps(line))
    except (ConfigError, prompts.PlanExhausted) as error:
        print(f"plan_stats: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
