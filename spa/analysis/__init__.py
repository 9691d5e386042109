"""Stage 2, couple and group: which channel spaces ``(tensor, axis)`` must be pruned together.

Per-op rules (:mod:`.rules`) say which axes a node ties; :mod:`.coupling` builds the graph of channel
spaces from them, :mod:`.groups` cuts it into prunable groups (or blocks one with a reason), and
:mod:`.consumers` finds the layers that read a group. Imports only :mod:`spa.model`.
"""
