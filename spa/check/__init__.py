"""Stage 6, check: masked equivalence and output checks of a rewrite (:mod:`.verify`) and the
user's gates on drift, accuracy and speed (:mod:`.gates`).
"""
