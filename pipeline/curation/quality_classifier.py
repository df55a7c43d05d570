"""The quality classifier: a linear regression head on the shared row embeddings, trained on the
teacher's labels (FineWeb-Edu's recipe: a regression head on frozen embeddings, threshold 3),
then run over every kept row.

The head is ridge regression (scikit-learn's RidgeCV picks the penalty by leave-one-out); its
held-out figures come from 5-fold cross-validated predictions, beside the baseline of predicting
the training folds' mean, so a head that learned nothing shows it. A trained head is a versioned
folder of plain numbers (`head.json`, no pickle), with the labels it learned from and its
confusion matrix; new labels make a new version, the same labels reuse the latest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.curation.batch_files import StampedBatchFiles
from pipeline.curation.embeddings import EmbeddingStore, row_vectors
from trainers import atomic

ALPHAS = tuple(float(a) for a in np.logspace(-2, 3, 11))
MIN_LABELS = 8  # fewer cannot be split into held-out folds worth reporting
FOLDS = 5
RETRAIN_GROWTH = 1.1  # a new head when the labels have grown by a tenth


def features(vectors: np.ndarray, domains: list[str]) -> np.ndarray:
    """A row's embedding and whether it is code: the two judge prompts score on their own scales."""
    is_code = np.array([[1.0 if d == "code" else 0.0] for d in domains], dtype=np.float32)
    return np.hstack([vectors.astype(np.float32), is_code.reshape(-1, 1)])


@dataclass
class HeldOut:
    """Figures of cross-validated predictions: each label predicted by a head that never saw it."""

    labels: int
    mae: float
    baseline_mae: float  # predicting the training folds' mean score
    f1: float  # score >= threshold, judge vs head
    threshold: float
    confusion: list[list[int]]  # judge's rounded score (rows) x head's rounded score (columns)
    spearman: float


@dataclass
class QualityHead:
    weights: list[float]
    intercept: float
    alpha: float
    max_score: int
    embedding: str  # the embedder identity the head was trained on
    version: str = ""
    fingerprint: str = ""
    trained_at: str = ""
    held_out: HeldOut | None = None
    label_counts: dict[str, int] = field(default_factory=dict)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x @ np.asarray(self.weights, dtype=np.float64) + self.intercept, 0, self.max_score)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> QualityHead:
        values = json.loads(text)
        held = values.pop("held_out", None)
        return cls(**values, held_out=HeldOut(**held) if held else None)


def ridge():
    """Ridge regression, its penalty chosen by leave-one-out over ALPHAS."""
    from sklearn.linear_model import RidgeCV

    return RidgeCV(alphas=ALPHAS)


def held_out_predictions(x: np.ndarray, y: np.ndarray, max_score: int, seed: int, model=None) -> np.ndarray:
    """Each label predicted by a `model` (default: our ridge head) fitted on the other folds."""
    from sklearn.model_selection import KFold, cross_val_predict

    folds = KFold(n_splits=min(FOLDS, len(y)), shuffle=True, random_state=seed)
    return np.clip(cross_val_predict(model if model is not None else ridge(), x, y, cv=folds), 0, max_score)


def held_out_figures(x: np.ndarray, y: np.ndarray, threshold: float, max_score: int, seed: int,
                     model=None) -> HeldOut:  # fmt: skip
    from scipy.stats import spearmanr
    from sklearn.dummy import DummyRegressor
    from sklearn.metrics import confusion_matrix, f1_score, mean_absolute_error

    predicted = held_out_predictions(x, y, max_score, seed, model)
    baseline = held_out_predictions(x, y, max_score, seed, DummyRegressor(strategy="mean"))
    scale = list(range(max_score + 1))
    confusion = confusion_matrix(np.rint(y).astype(int), np.rint(predicted).astype(int), labels=scale)
    rho = spearmanr(y, predicted).statistic if len(set(y)) > 1 and len(set(predicted)) > 1 else 0.0
    return HeldOut(
        labels=len(y),
        mae=float(mean_absolute_error(y, predicted)),
        baseline_mae=float(mean_absolute_error(y, baseline)),
        f1=float(f1_score(y >= threshold, predicted >= threshold, zero_division=0.0)),
        threshold=threshold,
        confusion=confusion.tolist(),
        spearman=float(rho),
    )


def train(x: np.ndarray, y: np.ndarray, embedding: str, threshold: float, max_score: int = 5,
          seed: int = 0) -> QualityHead:  # fmt: skip
    """A head fitted on all labels, with the figures of heads that held each label out."""
    if len(y) < MIN_LABELS:
        raise ValueError(f"the quality classifier needs at least {MIN_LABELS} labels and has {len(y)}: judge more "
                         "rows per batch (curation.quality.sample) or materialize more batches")  # fmt: skip
    held = held_out_figures(x, y, threshold, max_score, seed)
    fitted = ridge().fit(x, y)
    return QualityHead(weights=fitted.coef_.astype(float).tolist(), intercept=float(fitted.intercept_),
                       alpha=float(fitted.alpha_), max_score=max_score, embedding=embedding, held_out=held)  # fmt: skip


def fingerprint(labels: pl.DataFrame, embedding: str, threshold: float) -> str:
    """What a head is made of: the labels (id, score), the embedder and the settings."""
    rows = sorted(zip(labels["id"].to_list(), labels["score"].to_list(), strict=True))
    return hashlib.sha256(json.dumps([rows, embedding, threshold, ALPHAS]).encode()).hexdigest()[:16]


class HeadStore:
    """`<folder>/v0001/`, `v0002/`, ...: head.json, labels.parquet, confusion.png; never rewritten."""

    def __init__(self, folder: Path):
        self.folder = folder

    def versions(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("v[0-9]*") if (p / "head.json").is_file())

    def latest(self) -> QualityHead | None:
        versions = self.versions()
        return self.load(versions[-1]) if versions else None

    @staticmethod
    def load(version: Path) -> QualityHead:
        return QualityHead.from_json((version / "head.json").read_text())

    def save(self, head: QualityHead, labels: pl.DataFrame, confusion_png) -> Path:
        """A new version folder, whole or absent (written aside, then renamed)."""
        number = len(self.versions()) + 1
        head.version, head.trained_at = f"v{number:04d}", datetime.now(UTC).isoformat(timespec="seconds")

        def fill(folder: Path) -> None:
            (folder / "head.json").write_text(head.to_json())
            labels.write_parquet(folder / "labels.parquet")
            confusion_png(folder / "confusion.png")

        return atomic.write_folder(self.folder / head.version, fill, f"quality classifier {head.version}")


def up_to_date_head(labeled: pl.DataFrame, heads: HeadStore, rows: EmbeddingStore, labeled_vectors_folder: Path,
                     threshold: float, seed: int, log) -> QualityHead:  # fmt: skip
    """The head for these labels (at least MIN_LABELS): the latest version while the labels have
    grown by less than RETRAIN_GROWTH with the same embedder and threshold, else a new version
    trained on all of them."""
    y = labeled["score"].to_numpy()
    made_of = fingerprint(labeled, rows.embedder.identity, threshold)
    head = heads.latest()
    same_setup = head is not None and (head.embedding, head.held_out.threshold) == (rows.embedder.identity, threshold)
    if same_setup and (head.fingerprint == made_of or len(y) < RETRAIN_GROWTH * head.held_out.labels):
        if head.fingerprint != made_of:
            log.info("quality classifier %s kept: %d labels now, %d when it was trained (a new head at %.0f%% more)",
                     head.version, len(y), head.held_out.labels, 100 * (RETRAIN_GROWTH - 1))  # fmt: skip
        return head
    x = features(labeled_vectors(rows, labeled, labeled_vectors_folder), labeled["domain"].to_list())
    head = train(x, y, rows.embedder.identity, threshold, seed=seed)
    head.fingerprint = made_of
    head.label_counts = dict(labeled.group_by("domain").len().iter_rows())
    title = f"held out: MAE {head.held_out.mae:.2f} (mean {head.held_out.baseline_mae:.2f}), {len(y)} labels"
    heads.save(head, labeled.select("id", "domain", "batch", "score", "prompt"), confusion_plot(head.held_out, title))
    log.info("quality classifier %s trained on %d labels", head.version, len(y))
    return head


def labeled_vectors(store: EmbeddingStore, labeled: pl.DataFrame, folder: Path) -> np.ndarray:
    """Each labeled row's vector, in `labeled`'s order. A batch's labeled vectors are kept beside
    the labels (`<folder>/<date>/<domain>.parquet`) the first time they are read, so training
    reads the labels' vectors, never a batch's whole embeddings file again."""
    cache = StampedBatchFiles(folder, {"model": store.embedder.identity, "passage_words": store.passage_words})
    parts = []
    for (batch,), rows in labeled.group_by("batch", maintain_order=True):
        have = cache.load(batch)
        if have is None or not set(rows["id"]) <= set(have["id"]):
            ids, matrix = row_vectors(store.vectors_of(rows))
            have = pl.DataFrame({"id": ids, "vector": pl.Series(matrix, dtype=pl.Array(pl.Float32, matrix.shape[1]))})
            cache.save(batch, have)
        parts.append(have)
    if not parts:
        return np.zeros((0, store.embedder.dimensions), np.float32)
    vectors = labeled.select("id").join(pl.concat(parts).unique("id"), on="id", how="left", maintain_order="left")
    return vectors["vector"].to_numpy()


def confusion_plot(held: HeldOut, title: str):
    """A writer of the held-out confusion matrix as a PNG (judge rows x head columns)."""

    def write(path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        matrix = np.asarray(held.confusion)
        fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=110)
        ax.imshow(matrix, cmap="Blues")
        for (i, j), n in np.ndenumerate(matrix):
            ax.text(j, i, str(n), ha="center", va="center", color="black" if n <= matrix.max() / 2 else "white")
        ax.set_xlabel("classifier (held out, rounded)")
        ax.set_ylabel("teacher's label")
        ax.set_xticks(range(len(matrix)))
        ax.set_yticks(range(len(matrix)))
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)

    return write


def apply_scores(frame: pl.DataFrame, scores: dict[str, float], min_quality: float) -> pl.DataFrame:
    """Every kept row's `quality_score`; with `min_quality` > 0 the rows below it are rejected
    (`quality:educational_value`). Rows rejected earlier keep a null score."""
    from pipeline.rows import KEPT, reject

    missing = [i for i in frame.filter(KEPT)["id"] if i not in scores]
    if missing:
        raise ValueError(f"{len(missing)} kept rows have no embedding to score (first: {missing[0]}): "
                         "materialize `embeddings` first")  # fmt: skip
    scored = frame.with_columns(
        quality_score=pl.when(KEPT).then(pl.col("id").replace_strict(scores, default=None, return_dtype=pl.Float64))
    )
    if min_quality <= 0:
        return scored
    low = pl.when(pl.col("quality_score") < min_quality).then(pl.lit("quality:educational_value"))
    return reject(scored, low)
