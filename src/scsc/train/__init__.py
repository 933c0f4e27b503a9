"""Training (METHOD §7): one epoch loop for every stage, the pretraining stages an encoder declares, the
clustering stage, and the embeddings of all cells.

- :mod:`.state`: :class:`TrainState` (everything the loops share) and :func:`run_epochs`, the one loop;
- :mod:`.pretrain`: the encoder's pretraining stages (:meth:`Encoder.pretrain_stages`);
- :mod:`.cluster`: the clustering stage and its optional warm-up;
- :mod:`.embed`: the embedding Z of all cells, whole or batch by batch.

No label is visible here. The clustering stage runs its configured number of epochs and the final epoch is
what is reported.

With a :class:`~scsc.data.batches.BatchPlan` (minibatch mode), every epoch of the graph stages is one
optimizer step on one batch of cells and the subgraph it induces (correlations, attention and the transport
target then live inside the batch; its marginals are the batch's share of the initial clusters). An epoch of
a cells stage (the expression AE), which needs no graph, covers all cells up to
``minibatch.ae_cells_per_epoch`` (a random sample above). Training time then no longer grows with N; the
embeddings of all cells are computed batch by batch (:func:`embed_cells`).
"""

from .cluster import CLUSTER, TERMS, WARMUP, ClusterPhase, active_terms, train_clustering
from .embed import embed_cells, pretrained_embedding
from .pretrain import pretrain
from .state import Reporter, SilentReporter, TrainState, run_epochs, seed_everything

__all__ = [
    "CLUSTER",
    "TERMS",
    "WARMUP",
    "ClusterPhase",
    "Reporter",
    "SilentReporter",
    "TrainState",
    "active_terms",
    "embed_cells",
    "pretrain",
    "pretrained_embedding",
    "run_epochs",
    "seed_everything",
    "train_clustering",
]
