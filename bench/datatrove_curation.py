"""datatrove's prose filters on a JSONL corpus, for bench/curation.py (run with datatrove's own
Python: `pip install datatrove` in a separate environment).

    python bench/datatrove_curation.py CORPUS.jsonl

GopherQualityFilter, GopherRepetitionFilter and FineWebQualityFilter with their defaults, one
after another on each document as datatrove's pipeline applies them (the first that drops a
document ends it), in this one process. Prints a JSON line: seconds and, per document in input
order, null (kept) or the filter's reason.
"""

from __future__ import annotations

import json
import re
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.utils.word_tokenizers import WordTokenizer


class Words(WordTokenizer):
    """\\w+ words (datatrove's English default needs NLTK data from the network, which these
    machines do not reach)."""

    def word_tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]


def main() -> None:
    texts = [json.loads(line)["text"] for line in open(sys.argv[1], encoding="utf-8")]
    filters = [GopherRepetitionFilter(language=Words()), GopherQualityFilter(language=Words()),
               FineWebQualityFilter(language=Words())]  # fmt: skip
    started = time.perf_counter()
    reasons = []
    for i, text in enumerate(texts):
        doc, reason = Document(text=text, id=str(i)), None
        for f in filters:
            verdict = f.filter(doc)
            if verdict is not True:
                reason = f"{f.name}:{verdict[1] if isinstance(verdict, tuple) else 'dropped'}"
                break
        reasons.append(reason)
    print(json.dumps({"seconds": time.perf_counter() - started, "reasons": reasons}))


if __name__ == "__main__":
    main()
