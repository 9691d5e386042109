"""Stage 3, score: the statistics criteria need (:mod:`.stats` and :mod:`.worlds` from model runs,
:mod:`.synthetic` inputs, :mod:`.calib` data files) and the Optimal-Brain-Surgeon math (:mod:`.obs`,
:mod:`.input_moments`). The criteria themselves live in :mod:`spa.criteria`.
"""
