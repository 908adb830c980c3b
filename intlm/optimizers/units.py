"""Fixed-point units of the state of sepcma and cem (read by config.worst_case_bounds, so no imports).

The mean holds each weight in 1/2**MEAN_SHIFT units (the int8 weight is the mean rounded), so steps
far below one int8 unit accumulate. A member's offset from the mean is z * scale / 16 in the same
units, z its full-rank noise (std 16 = 1.0) and scale a per-weight step size (sepcma) or spread
(cem) in [SCALE_MIN, SCALE_MAX] mean units.
"""

MEAN_SHIFT = 8
MEAN_MAX = 127 << MEAN_SHIFT  # the mean stays in the int8 weight range
SCALE_MIN, SCALE_MAX = 1, 1 << 13  # 1/256 to 32 int8 units
RANK_WEIGHT_ONE = 1 << 16  # sepcma's recombination weights sum to this
PATH_MAX = 16 << 8  # sepcma's evolution path, 256 = 1.0, saturates at 16
LOG_SCALE_MAX = 12 << 16  # sepcma's log2 step size in 1/65536 octaves: 2**12 mean units at most
