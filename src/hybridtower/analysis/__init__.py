"""Efficiency benchmark and the analyses of PIG that readers of the paper asked for.

- :mod:`.flops` - ``count_flops(fn)``: torch's FLOP counter with attention made visible on the CPU
- :mod:`.xpool_fast` - ``FoldedXPool``: X-Pool scoring at its cheapest exact per-pair cost
- :mod:`.efficiency` - ``run_efficiency(EfficiencyConfig(...))`` (``hybridtower bench efficiency``)
- :mod:`.oracle` - ``oracle_analysis``: PIG's fusion queried by the real caption (upper bound)
- :mod:`.pseudo_query` - ``pseudo_query_analysis``: how close pseudo-queries are to captions
- :mod:`.its_sweep` - ``its_sweep_analysis``: retrieval and offline cost against the ITS k
- :mod:`.its_visual` - ``its_patches_analysis``: the selected patches drawn over the frames

Nothing here is imported by the models, data or service layers; importing this package is light
(torch and matplotlib load inside the functions that need them).
"""
