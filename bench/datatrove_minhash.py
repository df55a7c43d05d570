"""datatrove's MinHash stages on a JSONL corpus, for bench/dedup.py (run with datatrove's own
Python: `pip install "datatrove[processing]"` in a separate environment).

    python bench/datatrove_minhash.py CORPUS.jsonl WORKDIR

Runs signatures -> buckets -> clusters (one worker, 5-grams, 14 x 8) and prints a JSON
line: seconds, peak RSS, and the cluster label of every document in input order.
"""

from __future__ import annotations

import json
import re
import resource
import sys
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.pipeline.readers import JsonlReader
from datatrove.utils.word_tokenizers import WordTokenizer


class Words(WordTokenizer):
    """Lower-cased runs of letters and digits, the same words as schoolhouse's (datatrove's English default
    needs NLTK data from the network, which these machines do not reach)."""

    def word_tokenize(self, text: str) -> list[str]:
        return re.findall(r"[^\W_]+", text.lower())

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def main() -> None:
    corpus, work = Path(sys.argv[1]), Path(sys.argv[2])
    config = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8, seed=1)
    started = time.perf_counter()
    stages = {
        "signatures": ([JsonlReader(str(corpus.parent), glob_pattern=corpus.name),
                        MinhashDedupSignature(output_folder=str(work / "signatures"), config=config,
                                              language=Words())], 1),
        # one task per bucket, as datatrove's example runs it; one worker keeps it on one core
        "buckets": ([MinhashDedupBuckets(input_folder=str(work / "signatures"), output_folder=str(work / "buckets"),
                                         config=config)], config.num_buckets),
        "clusters": ([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "clusters"),
                                          config=config, save_cluster_id=True)], 1),
    }  # fmt: skip
    for name, (pipeline, tasks) in stages.items():
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / "logs" / name)).run()
    seconds = time.perf_counter() - started

    n_docs = sum(1 for _ in corpus.open())
    labels = list(range(n_docs))
    clusters_file = work / "clusters" / "000000.clusters"
    if clusters_file.exists():
        raw = clusters_file.read_bytes()
        pairs = [int.from_bytes(raw[i : i + 4], "little") for i in range(0, len(raw), 4)]
        first_doc: dict[int, int] = {}
        for doc, cluster in zip(pairs[::2], pairs[1::2], strict=True):
            labels[doc] = first_doc.setdefault(cluster, doc)
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    print(json.dumps({"seconds": seconds, "max_rss_kib": peak, "labels": labels}))


if __name__ == "__main__":
    main()
