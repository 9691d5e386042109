"""The stages run end to end: :func:`.api.prune` (one ratio), :mod:`.targets` (the ratio that meets a
parameter, MAC or latency budget) and :mod:`.sweep` (many ratios).
"""
