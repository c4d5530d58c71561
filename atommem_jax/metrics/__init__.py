"""Scores: boxed exact match (the reward) and SQuAD-style EM / F1 / sub-EM."""
