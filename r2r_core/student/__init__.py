"""The students distilled from the teacher's rationales.

Modules (import them directly; this package imports nothing, so ``data`` stays free of torch):

losses      explicit distillation losses with documented input contracts: pointwise (BCE / MSE onto
            the teacher probability), RankNet with soft targets, ListNet/KL over a query's candidates
            with a padding mask, per-token evidence tagging, causal-LM generation loss (prompt masked)
data        stored rationales -> per-query training examples (teacher scores, pair preferences,
            evidence spans), split by query; the test split is refused
fast        FastScorer: MiniLM-L6 cross-encoder with a ranking head and an evidence head, a
            sentence-transformers-CrossEncoder-like API, save/load as LoRA + heads (~2.7 MB)
train_fast  the fast scorer's training loop: train_fast_scorer(examples, FastTrainConfig, out_dir, resume)
"""
