"""Stage 7, report: the prune report record (:mod:`.prune_report`), its Markdown form
(:mod:`.markdown`) and latency benchmarks (:mod:`.bench`).
"""
