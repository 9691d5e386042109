"""Stage 4, plan: which units of each group to keep (:mod:`.selection`) and the plan record that
says which slices of which tensors survive (:mod:`.plan`).
"""
