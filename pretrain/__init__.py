"""Training subsystem of hea-screen: corpus, tokenizer fitting, MLM pre-training,
cross-validated fine-tuning, classical baselines and the paper's reports.

Needs the ``train`` extra (torch, transformers, scikit-learn, matplotlib).
"""
